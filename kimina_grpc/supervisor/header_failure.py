"""What the proofs of a header get when it cannot be served: Lean rejected its imports (`Rejected`:
Lean's verdict, with its messages moved onto each proof's own import lines), or every REPL that
imported it died or timed out (`import_failed`). The lifecycle (lifecycle.py) decides when; this
module only says what the answer is."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kimina_grpc.repl import Reply, Split, Verdict, protocol, verdict_of
from kimina_grpc.supervisor.check import crash_verdict
from kimina_grpc.supervisor.jobs import Outcome


@dataclass(frozen=True, slots=True)
class Rejected:
    """Lean did not accept a header: `reply` is its answer to the header command."""

    reply: Reply

    @property
    def verdict(self) -> Verdict:
        verdict = verdict_of(self.reply)
        return Verdict.REPL_ERROR if verdict is Verdict.VALID else verdict  # no env: not a reply to a command

    @property
    def error(self) -> str:
        error = self.reply.error
        return f"the REPL answered: {error}" if error is not None else "Lean did not accept the header"

    def summary(self) -> str:
        """Lean's messages, for readiness to say why a pre-warm header failed."""
        return "; ".join(m.data for m in self.reply.messages)[:500] or self.error

    def outcome(self, split: Split, repl_id: str) -> Outcome:
        """The answer to one proof of the header."""
        return Outcome(self.verdict, _header_reply_in_file(self.reply, split), error=self.error, repl_id=repl_id)


def import_failed(exc: BaseException, import_timeout: float) -> Outcome:
    """The answer to each proof of a header every REPL of which died (or timed out) importing it."""
    if isinstance(exc, TimeoutError):
        return Outcome(Verdict.TIMEOUT, error=f"importing the header took over {import_timeout:g} s")
    return Outcome(crash_verdict(exc), error=f"the REPL failed while importing the header: {exc}")


def _header_reply_in_file(reply: Reply, split: Split) -> Reply:
    """Move the header command's messages onto the user's import lines and columns (the header
    sent is the normalised one: each of its lines is one import of the file)."""

    def pos(p: protocol.Pos) -> protocol.Pos:
        if 1 <= p.line <= len(split.header_lines):
            return protocol.Pos(split.header_lines[p.line - 1], split.header_columns[p.line - 1] + p.column)
        return p

    return replace(
        reply,
        messages=tuple(replace(m, pos=pos(m.pos), end_pos=m.end_pos and pos(m.end_pos)) for m in reply.messages),
        sorries=(),
    )
