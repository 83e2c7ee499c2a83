"""The helper process of `_remote.Remote`: a KiminaClient made with the caller's arguments, answering
the calls that arrive as pickles on its stdin (see _remote.py, which starts it)."""

from __future__ import annotations

import os
import pickle
import sys
from typing import IO

from kimina_grpc.client._remote import send
from kimina_grpc.client._sync import KiminaClient


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    _, args, kw = pickle.load(requests)
    try:
        client = KiminaClient(*args, **kw)
    except Exception as exc:
        send(replies, ("error", exc))
        return
    send(replies, ("ok", None))
    with client:
        while True:
            try:
                kind, name, args, kw = pickle.load(requests)
            except EOFError:
                return
            try:
                if kind == "stream":
                    for item in client.verify_stream(*args, **kw):
                        send(replies, ("item", item))
                    send(replies, ("end", None))
                else:
                    send(replies, ("ok", getattr(client, name)(*args, **kw)))
            except BrokenPipeError:
                return
            except Exception as exc:
                send(replies, ("error", exc))


def main() -> None:
    """The helper process: requests on stdin, replies on what was stdout (stdout itself goes to stderr)."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, not into the replies
    _serve(sys.stdin.buffer, replies)
