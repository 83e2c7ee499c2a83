"""One stand-in REPL driven directly (no pool)."""

from __future__ import annotations

import shlex

from kimina_grpc.repl import Repl, ReplSpec
from kimina_grpc.repl.protocol import command
from kimina_grpc.testing import fake_repl_command

SPEC = ReplSpec(argv=tuple(shlex.split(fake_repl_command())))


async def started(spec: ReplSpec = SPEC) -> Repl:
    repl = await Repl.start(spec, "t")
    reply, _ = await repl.run(command(""))
    assert reply.env == 0
    return repl
