"""Proofs as users hold them (strings, Proofs, dicts, a dataset's rows) in, results as rows out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from kimina_grpc import extras
from kimina_grpc.client._types import Proof, Result

# Column names of the datasets the seed benchmarked (and Kimina's field names), most specific first.
ID_COLUMNS = ("problem_id", "custom_id", "id", "name", "uuid")
CODE_COLUMNS = ("full_proof", "formal_proof", "code", "proof", "lean4_code", "formal_statement")

ProofInput = str | Proof | Mapping[str, Any]
Proofs = ProofInput | Iterable[ProofInput]


def pick_column(
    columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, *, flag: str | None = None
) -> str:
    """The column named `wanted`, else the first of `candidates` present. `flag` is the option that
    names it (`--id-column`), for the message."""
    name = flag or f"{what} column"
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{name} {wanted!r} is not a column; columns: {', '.join(columns)}")
        return wanted
    for candidate in candidates:
        if candidate in columns:
            return candidate
    hint = f"pass {flag}" if flag else "name it"
    raise ValueError(f"cannot tell which column holds the {what}; {hint} (columns: {', '.join(columns)})")


def _from_mapping(row: Mapping[str, Any], i: int, id_column: str | None, code_column: str | None) -> Proof:
    """A dict with our field names (id, code) or Kimina's (custom_id, proof), or a dataset row."""
    columns = list(row)
    code = pick_column(columns, code_column, CODE_COLUMNS, "code")
    if id_column is None and not any(c in row for c in ID_COLUMNS):
        return Proof(str(i), str(row[code]))
    return Proof(str(row[pick_column(columns, id_column, ID_COLUMNS, "id")]), str(row[code]))


def iter_proofs(proofs: Proofs, id_column: str | None = None, code_column: str | None = None) -> Iterator[Proof]:
    """Proofs one by one, lazily: strings (their position is the id: "0", "1", ...), Proofs, dicts
    with `id`/`code` or Kimina's `custom_id`/`proof`, or the rows of a `datasets.Dataset` (columns
    detected, or named by id_column/code_column)."""
    items: Iterable[ProofInput] = [proofs] if isinstance(proofs, str | Proof | Mapping) else proofs
    for i, p in enumerate(items):
        if isinstance(p, Proof):
            yield p
        elif isinstance(p, Mapping):
            yield _from_mapping(p, i, id_column, code_column)
        else:
            yield Proof(str(i), p)


def as_proofs(proofs: Proofs, id_column: str | None = None, code_column: str | None = None) -> list[Proof]:
    return list(iter_proofs(proofs, id_column, code_column))


def results_to_rows(results: Iterable[Result]) -> list[dict[str, Any]]:
    """One flat dict per result (verdict by name; messages and sorries as lists of dicts), ready for
    `pandas.DataFrame(rows)` or `datasets.Dataset.from_list(rows)`."""
    rows = []
    for r in results:
        first_error = next((m for m in r.messages if m.severity == "error"), None)
        rows.append(
            {
                "id": r.id,
                "verdict": r.verdict.name,
                "ok": r.ok,
                "time": r.time,
                "error": r.error,
                "first_error": first_error.text if first_error else "",
                "messages": [asdict(m) for m in r.messages],
                "sorries": [asdict(s) for s in r.sorries],
            }
        )
    return rows


def results_to_dataset(results: Iterable[Result]) -> Any:
    """The results as a `datasets.Dataset` (needs `datasets`: the bench extra)."""
    extras.require("bench", "results_to_dataset")
    import datasets

    return datasets.Dataset.from_list(results_to_rows(results))
