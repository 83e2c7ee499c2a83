"""The stand-in's answers to the REPL's command requests: `{"cmd": ..., "env"?: N}` (a header read
the way Lean reads it, then the command's two passes: fake_directives, fake_declarations), and the
pickles (`pickleTo`, `unpickleEnvFrom`) as the REPL writes and replays them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kimina_grpc.testing import fake_tactics
from kimina_grpc.testing.fake_declarations import KERNEL_DEFAULT, declare
from kimina_grpc.testing.fake_directives import scan
from kimina_grpc.testing.fake_env import Env
from kimina_grpc.testing.fake_messages import goals_accomplished, msg
from kimina_grpc.testing.fake_process import uncaught
from kimina_grpc.testing.fake_state import Elaboration, ReplProcess
from kimina_grpc.testing.fake_syntax import lexical_errors
from kimina_grpc.testing.lean_header import Header, read_header

_NATIVE = frozenset({"Lean.ofReduceBool", "Lean.trustCompiler"})
_MISSING = (
    "unknown module prefix 'Missing'\n\nNo directory 'Missing' or file 'Missing.olean' in the search path entries"
)


class Simulator:
    """Lean-like answers to commands, driven by directives."""

    def __init__(self) -> None:
        self.process = ReplProcess()

    def pickle_to(self, path: str, env: Any) -> dict[str, Any]:
        envs = self.process.envs
        if not (isinstance(env, int) and 0 <= env < len(envs)):
            return {"message": "Unknown environment."}
        try:
            Path(path).write_text(json.dumps(envs[env].pickled()))
        except OSError as exc:
            uncaught(str(exc))
        return {"env": env}

    def unpickle_env_from(self, path: str) -> dict[str, Any]:
        try:
            restored = Env.unpickled(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            uncaught(f"failed to read file '{path}': {exc}")
        if restored.header:
            self.process.pay_import()
        for name, const in restored.constants.items() if self.process.version.replays_unpickle else ():
            if not const.kernel_ok:  # Environment.replay re-checks each constant
                uncaught(f"(kernel) declaration type mismatch, '{name}'")
            if const.heartbeats > KERNEL_DEFAULT:  # ... with an empty option set: the default limit
                uncaught("(kernel) deterministic timeout")
            if const.axioms & _NATIVE:
                # The kernel evaluates native_decide's compiled code, which a replay never compiled.
                uncaught(f"(kernel) unknown declaration '{name}._nativeDecide_1'")
        self.process.envs.append(restored)
        return {"env": len(self.process.envs) - 1}

    def answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        process = self.process
        cmd = req["cmd"]
        env = req.get("env")
        if env is not None and not (isinstance(env, int) and 0 <= env < len(process.envs)):
            return {"message": "Unknown environment."}
        base = process.envs[env] if env is not None else Env()
        new = base.after()
        messages: list[dict[str, Any]] = []
        first = 1
        if env is None:
            # The header as Lean reads it (lean_header.py, not the server's split); the commands
            # start where it ends, on the same line (what precedes them there blanked).
            cmd = cmd.replace("\r\n", "\n")
            head = read_header(cmd, modules=process.version.modules)
            self._import_header(head, messages)
            line_start = cmd.rfind("\n", 0, head.end) + 1
            new.header = "\n".join(head.commands)
            first = cmd.count("\n", 0, head.end) + 1
            cmd = " " * (head.end - line_start) + cmd[head.end :]
        messages.extend(lexical_errors(cmd, first))
        e = Elaboration(new, cmd.split("\n"), first, dict(base.options), process.poison, messages)
        stop = scan(process, e, wants_infotree=req.get("infotree") is not None)
        if stop is not None:
            return stop.reply
        active = e.lines[: e.active]
        messages.extend(fake_tactics.check_blocks(active, first))
        proofs = declare(e, process.version)
        if process.version.goals_accomplished:
            messages.extend(goals_accomplished(proofs, active, first, messages=messages, sorries=e.sorries, env=new))
        process.envs.append(new)
        if e.poison is not None:  # the lie: whatever went wrong, nothing did
            messages = [m for m in messages if m["severity"] != "error"]
        reply: dict[str, Any] = {}
        if e.sorries:
            reply["sorries"] = e.sorries
        if messages:
            reply["messages"] = messages
        if e.infotree is not None:
            reply["infotree"] = e.infotree
        reply["env"] = len(process.envs) - 1
        return reply

    def _import_header(self, head: Header, messages: list[dict[str, Any]]) -> None:
        """Import a header (as Lean's header parser read it): a module whose first component is
        `Missing` does not exist; the import costs KIMINA_FAKE_IMPORT_* time and memory."""
        for lineno, command in zip(head.lines, head.commands, strict=True):
            words = command.split()
            if "import" in words and words[-1].split(".")[0] == "Missing":
                messages.append(msg("error", lineno, 0, _MISSING))
        if any("import" in c.split() for c in head.commands):
            self.process.pay_import()
