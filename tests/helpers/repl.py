"""One stand-in REPL driven directly (no pool)."""

from __future__ import annotations

from kimina_grpc.repl import Repl, ReplSpec
from kimina_grpc.repl.protocol import command

from .pool import ARGV

SPEC = ReplSpec(argv=ARGV)


async def started(spec: ReplSpec = SPEC) -> Repl:
    repl = await Repl.start(spec, "t")
    reply, _ = await repl.run(command(""))
    assert reply.env == 0
    return repl
