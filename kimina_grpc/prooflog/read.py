"""Reading the log back: filtered rows, an export to Parquet or JSON lines, counts, and a
`datasets.Dataset` (`kimina_grpc.prooflog.load`). Synchronous: for the CLI and notebooks.

A row comes out as the proof went in: its code whole, its tags a dict, its messages, sorries and
axioms as lists, its times as UTC datetimes (ISO text in JSON lines).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kimina_grpc.database_url import Target, parse
from kimina_grpc.prooflog.columns import JSON_COLUMNS, PROOF_COLUMNS, TIME_COLUMNS

CHUNK = 5000
OUT_COLUMNS = (*PROOF_COLUMNS[:6], "header", "code", *PROOF_COLUMNS[6:])


@dataclass(frozen=True, slots=True)
class Filter:
    since: datetime | None = None
    until: datetime | None = None
    verdicts: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()


class Reader:
    """One connection to the log, read-only in intent."""

    def __init__(self, target: Target, timeout: float = 10.0) -> None:
        self.target = target
        self.pg = target.backend == "postgresql"
        if self.pg:
            import psycopg

            extra: dict[str, Any] = {"connect_timeout": max(1, round(timeout))}
            if target.password is not None:
                extra["password"] = target.password
            self.conn: Any = psycopg.connect(target.dsn, **extra)
        else:
            if not Path(target.dsn).is_file():
                raise FileNotFoundError(f"{target.dsn}: no such file")
            self.conn = sqlite3.connect(target.dsn, timeout=timeout)
        self.mark = "%s" if self.pg else "?"

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _when(self, value: datetime) -> Any:
        return value if self.pg else value.timestamp()

    def where(self, f: Filter) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if f.since is not None:
            clauses.append(f"p.answered_at >= {self.mark}")
            params.append(self._when(f.since))
        if f.until is not None:
            clauses.append(f"p.answered_at < {self.mark}")
            params.append(self._when(f.until))
        if f.verdicts:
            clauses.append(f"p.verdict IN ({', '.join([self.mark] * len(f.verdicts))})")
            params += list(f.verdicts)
        for key, value in f.tags:
            if self.pg:
                clauses.append("p.tags @> %s::jsonb")
                params.append(json.dumps({key: value}))
            else:
                clauses.append("json_extract(p.tags, ?) = ?")
                params += [f'$."{key}"', value]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def rows(self, f: Filter) -> Iterator[dict[str, Any]]:
        where, params = self.where(f)
        picks = ", ".join("h.header" if c == "header" else "c.code" if c == "code" else f"p.{c}" for c in OUT_COLUMNS)
        sql = (
            f"SELECT {picks} FROM kimina_proofs p JOIN kimina_codes c ON c.hash = p.code_hash"
            f" JOIN kimina_headers h ON h.hash = c.header_hash{where} ORDER BY p.answered_at, p.key"
        )
        cur = self.conn.cursor()
        cur.execute(sql, params)
        while batch := cur.fetchmany(CHUNK):
            for values in batch:
                yield self._row(dict(zip(OUT_COLUMNS, values, strict=True)))

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        if not self.pg:
            for c in JSON_COLUMNS:
                row[c] = json.loads(row[c])
            for c in TIME_COLUMNS:
                row[c] = datetime.fromtimestamp(row[c], UTC)
            row["from_cache"], row["shared_check"] = bool(row["from_cache"]), bool(row["shared_check"])
        return row

    def tag_keys(self, f: Filter) -> list[str]:
        where, params = self.where(f)
        each = "jsonb_object_keys(p.tags) AS k" if self.pg else "json_each(p.tags) AS j"
        key = "k" if self.pg else "j.key"
        cur = self.conn.cursor()
        cur.execute(f"SELECT DISTINCT {key} FROM kimina_proofs p, {each}{where} ORDER BY 1", params)
        return [str(r[0]) for r in cur.fetchall()]

    def stats(self, f: Filter, problem_tag: str = "problem", limit: int = 50) -> dict[str, Any]:
        where, params = self.where(f)
        cur = self.conn.cursor()
        cur.execute(f"SELECT p.verdict, count(*) FROM kimina_proofs p{where} GROUP BY 1 ORDER BY 2 DESC", params)
        by_verdict = {str(v): int(n) for v, n in cur.fetchall()}
        pair = "jsonb_each_text(p.tags) AS j" if self.pg else "json_each(p.tags) AS j"
        cur.execute(
            f"SELECT j.key, j.value, count(*) FROM kimina_proofs p, {pair}{where} GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
            f" LIMIT {int(limit)}",
            params,
        )
        by_tag = [(str(k), str(v), int(n)) for k, v, n in cur.fetchall()]
        problem = f"p.tags ->> {self.mark}" if self.pg else f"json_extract(p.tags, {self.mark})"
        key_param = problem_tag if self.pg else f'$."{problem_tag}"'
        checked = "p.verdict <> 'NOT_CHECKED'"
        sql = (
            f"SELECT {problem}, sum(CASE WHEN p.verdict = 'VALID' THEN 1 ELSE 0 END), count(*)"
            f" FROM kimina_proofs p{where or ' WHERE TRUE'} AND {checked} AND {problem} IS NOT NULL"
            f" GROUP BY 1 ORDER BY 1 LIMIT {int(limit)}"
        )
        cur.execute(sql, [key_param, *params, key_param])
        problems = [(str(p), int(valid), int(n)) for p, valid, n in cur.fetchall()]
        return {"rows": sum(by_verdict.values()), "by_verdict": by_verdict, "by_tag": by_tag, "pass_rate": problems}


def reader(url: str, password: str | None = None) -> Reader:
    return Reader(parse(url, password))


# ----------------------------------------------------------------------------------------- export


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_jsonl(rows: Iterator[dict[str, Any]], out: Path) -> int:
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
            n += 1
    return n


def arrow_schema(tag_keys: Sequence[str]) -> Any:
    import pyarrow as pa

    pos = [("line", pa.int64()), ("column", pa.int64()), ("end_line", pa.int64()), ("end_column", pa.int64())]
    types: dict[str, Any] = {
        "tags": pa.struct([(k, pa.string()) for k in tag_keys]) if tag_keys else pa.null(),
        "messages": pa.list_(pa.struct([("severity", pa.string()), *pos, ("text", pa.string())])),
        "sorries": pa.list_(pa.struct([*pos, ("goal", pa.string())])),
        "axioms": pa.list_(pa.struct([("theorem", pa.string()), ("axioms", pa.list_(pa.string()))])),
        "time_seconds": pa.float64(),
        "review_seconds": pa.float64(),
        "queue_seconds": pa.float64(),
        "from_cache": pa.bool_(),
        "shared_check": pa.bool_(),
        "received_at": pa.timestamp("us", tz="UTC"),
        "answered_at": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([(c, types.get(c, pa.string())) for c in OUT_COLUMNS])


def _arrow_rows(rows: list[dict[str, Any]], tag_keys: Sequence[str]) -> list[dict[str, Any]]:
    for row in rows:
        row["tags"] = {k: row["tags"].get(k) for k in tag_keys} if tag_keys else None
        row["axioms"] = [{"theorem": t, "axioms": a} for t, a in row["axioms"]]
    return rows


def arrow_table(r: Reader, f: Filter) -> Any:
    import pyarrow as pa

    keys = r.tag_keys(f)
    return pa.Table.from_pylist(_arrow_rows(list(r.rows(f)), keys), schema=arrow_schema(keys))


def write_parquet(r: Reader, f: Filter, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = r.tag_keys(f)
    schema = arrow_schema(keys)
    n = 0
    with pq.ParquetWriter(out, schema) as w:
        chunk: list[dict[str, Any]] = []
        for row in r.rows(f):
            chunk.append(row)
            if len(chunk) >= CHUNK:
                w.write_table(pa.Table.from_pylist(_arrow_rows(chunk, keys), schema=schema))
                n += len(chunk)
                chunk = []
        if chunk or n == 0:
            w.write_table(pa.Table.from_pylist(_arrow_rows(chunk, keys), schema=schema))
            n += len(chunk)
    return n


def load(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    verdict: str | Sequence[str] = (),
    tags: dict[str, str] | None = None,
    password: str | None = None,
) -> Any:
    """The log's rows (answered in [since, until), with these verdicts and tags) as a `datasets.Dataset`."""
    import datasets

    verdicts = (verdict,) if isinstance(verdict, str) else tuple(verdict)
    f = Filter(since, until, tuple(v.upper() for v in verdicts), tuple((tags or {}).items()))
    with reader(url, password) as r:
        return datasets.Dataset(arrow_table(r, f))
