"""The server's header split (repl/header.py) against the stand-in's own reading of Lean's header rule
(testing/lean_header.py), over the header-shape table, the REPL's recorded transcripts and Kimina's
recorded files (issue 31 item 9). Where the two disagree, one is wrong: the Lean answer, written from
Lean's grammar (`Lean.Parser.Module.header` at each version), says which. The same for the syscall
numbers the stand-in's attacks use and the server's seccomp filter denies."""

from __future__ import annotations

import ast
import platform
import re
from pathlib import Path

import pytest

from kimina_grpc.repl import seccomp, split_header
from kimina_grpc.testing import fake_attacks, fake_repl
from kimina_grpc.testing.fake_repl import chunks, normalise_request
from kimina_grpc.testing.lean_header import read_header, scan

from .helpers.headers import HEADER_SHAPES
from .helpers.paths import KIMINA_MATCH, TRANSCRIPTS

Position = tuple[int, int] | None
Reading = tuple[tuple[str, ...], Position]
"""The header's commands (duplicates dropped), and where the first command starts (None: nowhere)."""

GRAMMARS = {"v4.19": False, "v4.22": True}  # before module files, and since


def _first_command(text: str, start: int) -> Position:
    """(line, column) of the first token (or lexical error) from `start`, None if only trivia follows."""
    i, ok = scan(text, start)
    if ok and i >= len(text):
        return None
    return text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i) - 1


def product(code: str) -> Reading:
    split = split_header(code)
    first = _first_command(split.body, 0)
    shifted = None if first is None else (first[0] + split.line_offset, first[1])
    return (tuple(split.header.split("\n")) if split.header else ()), shifted


def standin(code: str, grammar: str) -> Reading:
    code = code.replace("\r\n", "\n")
    head = read_header(code, modules=GRAMMARS[grammar])
    return tuple(dict.fromkeys(head.commands)), _first_command(code, head.end)


def _codes() -> list[tuple[str, str]]:
    codes = [(str(p.id), str(p.values[0])) for p in HEADER_SHAPES]
    for path in sorted(TRANSCRIPTS.glob("*.in")):
        for index, block in enumerate(chunks(path.read_text())):
            try:
                request = normalise_request(block)
            except ValueError:
                continue
            if isinstance(request, dict) and isinstance(request.get("cmd"), str) and "env" not in request:
                codes.append((f"{path.name}#{index}", request["cmd"]))
    codes += [(path.name, path.read_text()) for path in sorted((KIMINA_MATCH / "input").glob("*.lean"))]
    return codes


# What Lean reads, where the two readers part, from Lean's grammar. Before 4.22 `module`, `public`,
# `meta` and `all` are identifiers (the header ends at `module`: it is no command either); from 4.22
# `all` is the header's keyword, so `import all` must be followed by a name (else Lean's error) and
# `runtime` is a plain name.
LEAN: dict[tuple[str, str], Reading] = {
    ("module-file", "v4.19"): ((), (1, 0)),
    ("module-file", "v4.22"): (("module", "public import Mathlib", "meta import Aesop"), (5, 0)),
    ("all-before-a-keyword", "v4.19"): (("import Mathlib", "import all"), (3, 0)),
    ("all-before-a-keyword", "v4.22"): (("import Mathlib",), (2, 0)),
    ("runtime", "v4.19"): (("import runtime Foo",), (2, 0)),
    ("runtime", "v4.22"): (("import runtime",), (1, 15)),
    ("public-import", "v4.19"): ((), (1, 0)),
    ("public-import", "v4.22"): (("public import A",), (2, 0)),
}
EXTRA = {
    "runtime": "import runtime Foo\ntheorem t : True := trivial",
    "public-import": "public import A\ntheorem t : True := trivial",
}
# The server's split reads one grammar for every Lean version (4.22's, with `runtime` as before), so it
# is wrong at the other version here. Each fails closed: the REPL gets the header the server read, Lean
# refuses it (no such header command, or no module `runtime`), and the proof is not accepted.
PRODUCT_KNOWN_WRONG = {
    ("module-file", "v4.19"),
    ("public-import", "v4.19"),
    ("all-before-a-keyword", "v4.22"),
    ("runtime", "v4.22"),
}


@pytest.mark.parametrize("grammar", list(GRAMMARS))
def test_the_server_and_the_stand_in_read_every_recorded_header_alike(grammar: str) -> None:
    codes = _codes() + list(EXTRA.items())
    assert len(codes) > 100  # the transcripts and Kimina's files are there
    wrong = []
    for name, code in codes:
        ours, theirs = product(code), standin(code, grammar)
        if ours == theirs:
            continue
        lean = LEAN.get((name, grammar))
        if lean is None:
            wrong.append(f"{name}: they disagree (server {ours}, stand-in {theirs}); add Lean's reading to LEAN")
        elif theirs != lean:
            wrong.append(f"{name}: the stand-in's lean_header is wrong: {theirs}, Lean reads {lean}")
        elif (name, grammar) not in PRODUCT_KNOWN_WRONG:
            wrong.append(f"{name}: the server's split_header is wrong: {ours}, Lean reads {lean}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("name", "grammar"), sorted(LEAN))
def test_each_reader_against_leans_reading(name: str, grammar: str) -> None:
    code = EXTRA.get(name) or next(str(p.values[0]) for p in HEADER_SHAPES if p.id == name)
    assert standin(code, grammar) == LEAN[name, grammar], "the stand-in's lean_header is wrong"
    if (name, grammar) in PRODUCT_KNOWN_WRONG:
        assert product(code) != LEAN[name, grammar]  # still wrong in the way this file documents
    else:
        assert product(code) == LEAN[name, grammar], "the server's split_header is wrong"


def test_the_stand_in_imports_none_of_the_servers_code() -> None:
    """The stand-in's header rule and syscall numbers are its own: fake_repl and every module it
    imports, transitively, import nothing of kimina_grpc but the testing package."""
    testing = Path(fake_repl.__file__).parent
    seen: set[str] = set()
    todo = ["fake_repl"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((testing / f"{name}.py").read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in modules if m.startswith("kimina_grpc")}
        assert {m for m in ours if not m.startswith("kimina_grpc.testing")} == set(), name
        todo += [m.rsplit(".", 1)[1] for m in ours if m.startswith("kimina_grpc.testing.")]
        todo += [
            a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module == "kimina_grpc.testing"
            for a in n.names
        ]
    assert {"fake_tactics", "fake_attacks", "lean_header"} <= seen  # the walk follows the imports


def _kernel_numbers() -> dict[str, int]:
    """This machine's syscall numbers, from the kernel headers (the ground truth), when installed."""
    for header in ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"):
        path = Path(header)
        if path.exists() and platform.machine() == "x86_64":
            return {m[0]: int(m[1]) for m in re.findall(r"#define __NR_(\w+)\s+(\d+)", path.read_text())}
    path = Path("/usr/include/asm-generic/unistd.h")
    if path.exists() and platform.machine() == "aarch64":
        return {m[0]: int(m[1]) for m in re.findall(r"#define __NR_(\w+)\s+(\d+)", path.read_text())}
    return {}


def test_the_stand_ins_syscall_numbers_and_the_filters_agree_with_the_kernel() -> None:
    arch = seccomp.native()
    ours = fake_attacks.SYSCALLS.get(platform.machine())
    if arch is None or ours is None:
        pytest.skip(f"no syscall table for {platform.machine()}")
    kernel = _kernel_numbers()
    wrong = []
    for name, number in ours.items():
        truth = kernel.get(name)
        if arch.denied.get(name) != number:
            culprit = "stand-in" if truth is not None and truth != number else "server's seccomp filter"
            wrong.append(f"{name}: stand-in {number}, filter {arch.denied.get(name)}, kernel {truth}: the {culprit}")
        elif truth is not None and truth != number:
            wrong.append(f"{name}: both say {number}, the kernel {truth}")
    assert not wrong, "\n".join(wrong)
