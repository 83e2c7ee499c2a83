"""The cache key holds everything that changes a reply's bytes (issue 23, items 3 and 4).

The header cut (`kimina_grpc.repl.header`) normalises a file: what it drops never reaches Lean, and
what it keeps to put positions back into the user's file is in the key. A hit must give the bytes
the caller's own check would give: each test below checks a file, then a variant that differs only
by something the normalisation drops, and compares what the variant got with an uncached check.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from kimina_grpc import rules
from kimina_grpc.cache import proof_key
from kimina_grpc.repl import split_header
from kimina_grpc.service.server import create_app
from kimina_grpc.supervisor.jobs import CheckOptions
from kimina_grpc.testing import redis_server
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers import eventually
from .helpers.cache import checks
from .helpers.server import running, settings

BODY = "theorem t : True := by\n  -- fake: error late\n  trivial\n"


def seen(result: pb.ProofResult) -> tuple[Any, ...]:
    """What a caller reads of a result, positions included (not the id, time or diagnostics)."""
    return (
        result.verdict,
        result.error,
        result.reason,
        [(m.severity, m.start.line, m.start.column, m.end.line, m.end.column, m.text) for m in result.messages],
        [(s.start.line, s.start.column, s.goal) for s in result.sorries],
    )


async def verify(stub: pb_grpc.VerifierServiceAsyncStub, pid: str, code: str, cache: bool = True) -> pb.ProofResult:
    options = pb.ProofOptions(diagnostics=True, cache=cache)
    reply = await stub.Verify(pb.VerifyRequest(proofs=[pb.Proof(id=pid, code=code)], options=options))
    return reply.results[0]


async def test_a_header_error_is_reported_at_the_callers_own_column(fake_log: Path) -> None:
    """The issue's reproduction: `import Missing.X` is INVALID at 1:0; the same import six columns
    to the right must say 1:6, as its own check does, not the first file's 1:0 from the cache."""
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        first = await verify(stub, "a", "import Missing.X\n" + BODY)
        assert first.verdict == pb.VERDICT_INVALID
        assert [(m.start.line, m.start.column) for m in first.messages] == [(1, 0)]
        moved = "      import    Missing.X\n" + BODY
        second = await verify(stub, "b", moved)
        own = await verify(stub, "c", moved, cache=False)
        assert [(m.start.line, m.start.column) for m in own.messages] == [(1, 6)]
        assert seen(second) == seen(own)


# Each pair: a file, then one differing from it only by what the header cut drops or moves. The
# first line of each says what: the pair's id in the test report.
DROPPED = {
    # Columns of header commands (kept in the key as `header_columns`).
    "header-column": ("import Missing.X\n" + BODY, "  import Missing.X\n" + BODY),
    "second-import-column": (
        "import A\nimport Missing.X\n" + BODY,
        "import A\n   import Missing.X\n" + BODY,
    ),
    # Lines of header commands (`header_lines`): blank lines and comments between imports.
    "header-line": ("import A\nimport Missing.X\n" + BODY, "import A\n\n-- note\nimport Missing.X\n" + BODY),
    "imports-on-one-line": ("import A\nimport Missing.X\n" + BODY, "import A import Missing.X\n\n" + BODY),
    # Whitespace and comments inside one import command: Lean reads the command, not its spacing.
    "space-inside-import": ("import Missing.X\n" + BODY, "import     Missing.X\n" + BODY),
    "comment-inside-import": ("import Missing.X\n" + BODY, "import /- why -/ Missing.X\n" + BODY),
    "comment-after-import": ("import Missing.X\n" + BODY, "import Missing.X -- why\n" + BODY),
    # A repeated import: sent once, reported on its first line.
    "duplicate-import": ("import A\nimport Missing.X\n" + BODY, "import A\nimport Missing.X\nimport A\n" + BODY),
    # Where the body starts (`line_offset`): blank lines between header and body.
    "blank-lines-before-body": ("import A\n" + BODY, "import A\n\n\n\n" + BODY),
    # The header's characters blanked on the body's first line: the body keeps its columns.
    "body-on-the-header-line": (
        "import A\ntheorem t : True := by -- fake: error late\n  trivial\n",
        "import A theorem t : True := by -- fake: error late\n  trivial\n",
    ),
    # CRLF is read as LF (Lean numbers lines by LF): the same reply either way.
    "crlf": ("import A\n" + BODY, ("import A\n" + BODY).replace("\n", "\r\n")),
    "crlf-in-header": ("import A\nimport Missing.X\n" + BODY, "import A\r\nimport Missing.X\r\n" + BODY),
}


@pytest.mark.parametrize(("first", "second"), DROPPED.values(), ids=DROPPED.keys())
async def test_a_hit_gives_the_bytes_of_the_callers_own_check(first: str, second: str) -> None:
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        await verify(stub, "first", first)
        served = await verify(stub, "second", second)
        own = await verify(stub, "own", second, cache=False)
        assert seen(served) == seen(own)


async def test_variants_that_change_nothing_still_share_the_entry(fake_log: Path) -> None:
    """The key is not wider than it must be: CRLF and spacing inside a command give the same split,
    so the same entry (one check for both)."""
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        await verify(stub, "a", "import A\n" + BODY)
        hit = await verify(stub, "b", ("import  A\n" + BODY).replace("\n", "\r\n"))
        assert hit.diagnostics.from_cache and len(checks(fake_log)) == 1


def test_every_field_of_the_split_is_in_the_key() -> None:
    """A field added to `Split` later is in the key without anyone remembering to add it."""
    split = split_header("import A\n  import B\n\ntheorem t : True := trivial\n")
    options = CheckOptions(timeout=1.0)
    base = proof_key("env", split, options)
    for f in dataclasses.fields(split):
        value = getattr(split, f.name)
        if isinstance(value, str):
            other: Any = value + " "
        elif isinstance(value, int):
            other = value + 1
        else:
            other = (*value[:-1], value[-1] + 1)
        assert proof_key("env", dataclasses.replace(split, **{f.name: other}), options) != base, f.name


# ----------------------------------------------------------------- the rules' version (item 4)


async def test_a_replica_with_other_rules_reads_none_of_the_shared_entries(
    fake_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verdicts written to Redis by a replica of older rules are not served by a newer one (they
    are checked again); a replica of the same rules is served them."""
    code = "import A\n" + BODY
    with redis_server() as (_, port):
        url = f"redis://127.0.0.1:{port}/0"
        shared = redis.Redis(port=port)  # a quick local call: no harm to the loop
        try:
            async with replica(url) as stub:
                old = await verify(stub, "old", code)
                assert old.verdict == pb.VERDICT_INVALID and len(checks(fake_log)) == 1
                await eventually(lambda: shared.dbsize() == 1, what="the entry landed in Redis")
            monkeypatch.setattr(rules, "RULES_VERSION", rules.RULES_VERSION + 1)
            async with replica(url) as stub:
                new = await verify(stub, "new", code)
                assert not new.diagnostics.from_cache and len(checks(fake_log)) == 2
                await eventually(lambda: shared.dbsize() == 2, what="the new rules' entry landed in Redis")
            async with replica(url) as stub:
                same = await verify(stub, "same", code)
                assert same.diagnostics.from_cache and len(checks(fake_log)) == 2
                assert seen(same) == seen(new)
        finally:
            shared.close()


@contextlib.asynccontextmanager
async def replica(url: str) -> AsyncIterator[pb_grpc.VerifierServiceAsyncStub]:
    """A server sharing the Redis at `url` (`running` would count the test's Redis as a leftover)."""
    # A generous Redis timeout: on a loaded machine the default 0.1 s drops writes (by design), and this
    # test is about which entries are read, not about a slow Redis.
    app = create_app(settings(cache_url=url, cache_allow_unboxed=True, cache_timeout=5))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield pb_grpc.VerifierServiceStub(channel)
    finally:
        await app.stop()


def test_the_rules_version_is_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    split, options = split_header("theorem t : True := trivial"), CheckOptions(timeout=1.0)
    before = proof_key("env", split, options)
    monkeypatch.setattr(rules, "RULES_VERSION", rules.RULES_VERSION + 1)
    assert proof_key("env", split, options) != before


# The files whose code decides verdicts, and their fingerprint when RULES_VERSION was last set. A
# change to them fails this test until the fingerprint is recorded again: the moment to decide
# whether RULES_VERSION must be bumped (kimina_grpc/rules.py says when).
RULE_SOURCES = (
    "kimina_grpc/repl/reply_verdict.py",
    "kimina_grpc/supervisor/trust.py",
    "kimina_grpc/supervisor/audit.py",
    "kimina_grpc/supervisor/judge.py",
    "kimina_grpc/supervisor/answers.py",
    "kimina_grpc/repl/header.py",
)
RECORDED = (3, "7e2cf2454137f21e")
# ast.unparse's text can differ between Python versions: the fingerprint is that of the image's.
RECORDED_ON = (3, 11)


def _code_fingerprint(paths: tuple[str, ...]) -> str:
    """The files' code, comments, docstrings and formatting aside (`ast.unparse` of each)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in paths:
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body[0] = ast.Pass()  # a docstring
        digest.update(f"{path}\0{ast.unparse(tree)}\0".encode())
    return digest.hexdigest()[:16]


def test_the_verdict_rules_did_not_change_without_a_decision_on_their_version() -> None:
    if sys.version_info[:2] != RECORDED_ON:
        pytest.skip(f"the fingerprint was recorded with Python {RECORDED_ON}")
    now = (rules.RULES_VERSION, _code_fingerprint(RULE_SOURCES))
    assert now == RECORDED, (
        f"the code of {', '.join(RULE_SOURCES)} changed since RULES_VERSION {RECORDED[0]} was recorded. "
        "If the same proof can now get another verdict, reason or messages, bump RULES_VERSION in "
        f"kimina_grpc/rules.py. Then set RECORDED = {(rules.RULES_VERSION, now[1])!r} in tests/test_cache_key.py."
    )
