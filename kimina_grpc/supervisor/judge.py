"""The judge trust level: the proof's environment re-checked in a REPL of its own.

After the audit (supervisor/audit.py), the proof's environment is pickled (`pickleTo`) in the pool's
REPL, and a separate REPL is started for this proof with the pool's ReplSpec (same command, box,
memory cap). That REPL first imports the proof's header, as the server normalised it: its clean
environment, where the reference statement and the allowed axioms' signatures are elaborated (so no
code another caller left running in the shared REPL can answer for them). Then it unpickles the proof
(`unpickleEnvFrom`) and the theorem's queries run there. Nothing but the pickle's bytes comes from
the shared REPL.

A pickle holds the imports, the proof's constants and its command scopes (namespace, `open`s,
`variable`s, options: the queries are immune to them), but no environment extensions: the proof's
macros, elaborators, notations, instances and attributes do not come back, so its syntax cannot
reach the judge's queries. Up to REPL v4.29 unpickling replays every constant through the kernel
(`Environment.replay`, `REPL/Snapshots.lean`): a proof that got past the kernel
(`debug.skipKernelTC`) makes the REPL exit with a "(kernel)" exception, which the judge reports; so
does, as far as the sources tell, an honest `native_decide` (the kernel evaluates its compiled code,
which a replay does not compile). The replay adds each constant with an empty option set
(`Lean/Replay.lean`: `env.addDecl {} d`), so the kernel's heartbeat limit there is Lean's default
(`maxHeartbeats` 200000), whatever the proof set, and nothing from outside (an option before the
unpickle, the REPL's command line) changes it: a proof whose kernel check needs more gets TIMEOUT
with that reason, not a rejection. From v4.30 the REPL re-adds constants without the kernel.

In a box, the pickle is written in the proof's box and carried into the judge's by the server
(repl/boxfs.py: no symlink, FIFO or size the proof's processes chose is followed). The judge REPL is
a process beyond LEAN_SERVER_MAX_REPLS; at most `max_judges` run at once (the pool's bound on
concurrent imports), and the pool REPL that ran the proof stays busy meanwhile. It pays two imports:
the header's and the pickle's.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path

from kimina_grpc.repl import Repl, ReplCrashed, Reply, Severity, boxfs, protocol
from kimina_grpc.supervisor.answers import Rejected
from kimina_grpc.supervisor.audit import NATIVE_AXIOMS, Failed, Review
from kimina_grpc.verdict import Verdict

KERNEL_TIMEOUT = "(kernel) deterministic timeout"
"""`KernelException.deterministicTimeout`'s text (Lean/Message.lean)."""
# The kernel's other resource limits (`deepRecursion`, `excessiveMemory`): the replay stopped, which
# says nothing against the proof the pool's kernel accepted; the judge cannot vouch for it either.
KERNEL_LIMITS = ("(kernel) deep recursion detected", "(kernel) excessive memory consumption detected")


async def judge(review: Review) -> None:
    """Re-check `review`'s proof in a REPL of its own; raises Rejected or Failed."""
    # Without a box, the pickle goes through a private directory of the server's. Each box has a
    # private /tmp: the pickle is written in the proof's box, carried over by the server and put in
    # the judge's box, so no host directory is ever writable by both.
    tmp = Path(tempfile.mkdtemp(prefix="kimina-judge-"))
    boxed = review.repl.boxed
    pickle = f"/tmp/kimina-judge-{uuid.uuid4().hex}.olean" if boxed else str(tmp / "proof.olean")
    try:
        # pickleTo answers with the env it was given and records none.
        pickled = await review.run(
            review.repl, protocol.pickle_to(pickle, review.env), "pickling the proof", records_env=False
        )
        if pickled.env != review.env:
            raise Failed(Verdict.REPL_ERROR, f"the REPL answered pickling env {review.env} with env {pickled.env}")
        async with review.r.judges:
            review.r.started += 1
            repl = await _start(review, f"judge-{review.r.started}")
            try:
                try:
                    await asyncio.wait_for(repl.ping(), review.r.import_timeout)  # it reads: its box is up
                except (ReplCrashed, TimeoutError) as exc:
                    raise Failed(Verdict.REPL_ERROR, f"the judge's REPL did not start: {exc}") from None
                await repl.settle()
                base = await _import_header(review, repl)
                clean = await review.clean(repl, base)
                if boxed:
                    await _carry(review, pickle, repl)
                reply = await _unpickle_and_check(review, repl, pickle)
            finally:
                await repl.kill()
    finally:
        if boxed and review.repl.alive:
            with contextlib.suppress(OSError):
                await boxfs.remove_from_box(review.repl.pid, pickle)
        shutil.rmtree(tmp, ignore_errors=True)
    review.check_theorem(reply, clean, "the judge's clean environment")


async def _start(review: Review, repl_id: str) -> Repl:
    try:
        return await Repl.start(review.r.spec, repl_id)
    except ReplCrashed as exc:
        raise Failed(Verdict.REPL_ERROR, f"cannot start the judge's REPL: {exc}") from None


async def _bounded_import(review: Review, repl: Repl, request: bytes, what: str) -> Reply:
    """An import in the judge's REPL, bounded by the pool's import timeout."""
    try:
        reply, _ = await asyncio.wait_for(repl.run(request, measure=False), review.r.import_timeout)
    except TimeoutError:
        raise Failed(
            Verdict.TIMEOUT, f"the judge's import ran past the import timeout of {review.r.import_timeout:g} s"
        ) from None
    except ReplCrashed as exc:
        _kernel_verdict(review, exc.stderr)
        raise Failed(Verdict.REPL_ERROR, f"the judge's REPL failed {what}: {exc}") from None
    if reply.error is not None or reply.env is None:
        raise Failed(Verdict.REPL_ERROR, f"the judge's REPL answered {what} with: {reply.error}")
    return reply


async def _import_header(review: Review, repl: Repl) -> int:
    """The judge's clean environment: the proof's header (as the server normalised it) alone."""
    reply = await _bounded_import(review, repl, protocol.command(review.header), "importing the header")
    errors = [m.data for m in reply.messages if m.severity is Severity.ERROR]
    if errors:
        raise Failed(Verdict.REPL_ERROR, f"the judge's REPL could not import the header: {errors[0][:300]}")
    assert reply.env is not None
    return reply.env


def _kernel_verdict(review: Review, stderr: str) -> None:
    """Up to REPL v4.29 unpickling replays each constant through the kernel, and an uncaught kernel
    exception ends the process: raise what that says about the proof (nothing if it is not one)."""
    if "(kernel)" not in stderr:
        return
    tail = stderr.strip()[-500:]
    if KERNEL_TIMEOUT in stderr:
        raise Failed(
            Verdict.TIMEOUT,
            "the judge's kernel re-check ran out of heartbeats: the REPL's replay checks each constant"
            " under Lean's default maxHeartbeats (200000), whatever the proof set, and nothing from"
            f" outside raises it (Lean: {tail})",
        )
    limit = next((text for text in KERNEL_LIMITS if text in stderr), None)
    if limit is not None:
        raise Failed(Verdict.REPL_ERROR, f"the judge's kernel re-check hit a resource limit: {limit} (Lean: {tail})")
    native = sorted(set(review.found.get(review.policy.theorem, ())) & NATIVE_AXIOMS)
    if native:
        raise Rejected(
            f"kernel: the judge cannot re-check native_decide ({', '.join(native)}): replaying it"
            f" through the kernel needs its compiled code, which a pickle does not carry; trust"
            f" level audit checks such proofs (Lean: {tail})"
        )
    raise Rejected(f"kernel: the kernel rejected the proof's constants on the judge's re-check: {tail}")


async def _carry(review: Review, pickle: str, repl: Repl) -> None:
    """The pickle, from the proof's box into the judge's: a file the proof's processes may have
    replaced by a symlink, a FIFO or something endless (boxfs refuses each)."""
    try:
        data = await boxfs.read_from_box(review.repl.pid, pickle)
        await boxfs.write_into_box(repl.pid, pickle, data)
    except OSError as exc:
        raise Failed(Verdict.REPL_ERROR, f"cannot carry the pickle into the judge's box: {exc}") from None


async def _unpickle_and_check(review: Review, repl: Repl, pickle: str) -> Reply:
    reply = await _bounded_import(review, repl, protocol.unpickle_env_from(pickle), "while unpickling")
    assert reply.env is not None
    cmd = "\n".join(review.queries.theorem_lines())
    return await review.run(repl, protocol.command(cmd, env=reply.env), "the judge's check")
