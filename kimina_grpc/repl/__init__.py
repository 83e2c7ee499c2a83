"""The REPL driver room: one Lean REPL process, its wire protocol, header split and verdicts."""

from kimina_grpc.repl.driver import Repl, ReplCrashed, ReplSpec, ReplyTooLarge, Usage
from kimina_grpc.repl.header import Split, split_header
from kimina_grpc.repl.protocol import (
    InfotreeMode,
    Message,
    Pos,
    ProtocolError,
    Reply,
    ReplyInvalid,
    ReplyRefused,
    ReplyTooDeep,
    ReplyTooSlow,
    Severity,
    Sorry,
    Tactic,
)
from kimina_grpc.repl.reply_verdict import Verdict, verdict_of

__all__ = [
    "InfotreeMode",
    "Message",
    "Pos",
    "ProtocolError",
    "Repl",
    "ReplCrashed",
    "ReplSpec",
    "Reply",
    "ReplyInvalid",
    "ReplyRefused",
    "ReplyTooDeep",
    "ReplyTooLarge",
    "ReplyTooSlow",
    "Severity",
    "Sorry",
    "Split",
    "Tactic",
    "Usage",
    "Verdict",
    "split_header",
    "verdict_of",
]
