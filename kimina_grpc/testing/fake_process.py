"""The stand-in's process directives: what a proof does to the REPL process itself rather than to
Lean's answer -- take time or CPU, hang, crash, hold or spike memory, start hungry children, write
to stderr or to the stdout the REPL answers on (garbage, forged replies) -- and the uncaught
exception that ends the process."""

from __future__ import annotations

import enum
import json
import os
import subprocess
import sys
import time
from typing import NoReturn


def process_directive(verb: str, arg: str) -> bool:
    """The directives that act on the REPL's process itself (sleep, cpu, hang, crash), the same in
    command and tactic mode. False for any other verb."""
    if verb == "sleep":
        time.sleep(float(arg))
    elif verb == "cpu":
        end = time.process_time() + float(arg)
        while time.process_time() < end:
            pass
    elif verb == "hang":
        while True:
            time.sleep(3600)
    elif verb == "crash":
        _crash(arg)
    else:
        return False
    return True


class Outcome(enum.Enum):
    NOT_MINE = "not a process directive"
    DONE = "done; the command goes on"
    REPLIED = "the process wrote its own reply: the command ends without the REPL's"


def command_directive(verb: str, arg: str, *, memory: Memory, next_env: int) -> Outcome:
    """The process directives only a command has (`next_env`: the id this command will get)."""
    if process_directive(verb, arg):
        pass
    elif verb == "crash-once":
        try:
            with open(arg, "x"):
                pass
        except FileExistsError:
            return Outcome.DONE
        _crash("")
    elif verb == "alloc":
        memory.hold(int(float(arg)))
    elif verb == "spike":
        memory.hold(int(float(arg)))
        memory.blocks.pop()  # large blocks are unmapped at once: resident memory falls back
    elif verb == "children":
        _children(*arg.split())
    elif verb == "garbage":
        sys.stdout.buffer.write(b"this is not JSON {\n\n")
        sys.stdout.buffer.flush()
        return Outcome.REPLIED
    elif verb in ("forge-reply", "forge-full", "forge-exit"):
        _forge(verb, int(arg) if arg else next_env)
    elif verb == "stderr":
        sys.stderr.write("x" * int(arg) + "\n")
        sys.stderr.flush()
    else:
        return Outcome.NOT_MINE
    return Outcome.DONE


class Memory:
    """The memory a REPL process holds for good (what proofs and imports allocated)."""

    def __init__(self) -> None:
        self.blocks: list[bytearray] = []

    def hold(self, mb: int) -> None:
        """Allocate and touch `mb` MiB and keep it; past the address-space cap, die as Lean's runtime does."""
        try:
            self.blocks.append(bytearray(b"\x01") * (mb << 20))
        except MemoryError:
            sys.stderr.write("INTERNAL PANIC: out of memory\n")
            sys.stderr.flush()
            os._exit(1)


def uncaught(text: str) -> NoReturn:
    """An exception the REPL's loop does not catch: Lean prints it and the process exits."""
    sys.stderr.write(f"uncaught exception: {text}\n")
    sys.stderr.flush()
    os._exit(1)


def _crash(code: str) -> NoReturn:
    sys.stderr.write("fake REPL crash\n")
    sys.stderr.flush()
    os._exit(int(code or 1))


def _forge(verb: str, env: int) -> None:
    """A process the proof starts writes a forged reply to the stdout it inherited."""
    forged = json.dumps({"env": env}, indent=1) + "\n\n"
    if verb != "forge-reply":
        forged += json.dumps({"message": "Unknown environment."}, indent=1) + "\n\n"
    sys.stdout.flush()
    # A child process with the inherited stdout, as `IO.Process.spawn` would start.
    subprocess.run([sys.executable, "-c", f"import sys; sys.stdout.write({forged!r})"], check=False)
    if verb == "forge-exit":
        os._exit(0)
    if verb == "forge-full":
        time.sleep(0.1)


def _children(count: str, mb: str, seconds: str) -> None:
    size = int(float(mb)) << 20
    hold = f"b = bytearray({size}); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep({float(seconds)})"
    kids = [subprocess.Popen([sys.executable, "-c", hold]) for _ in range(int(count))]
    for kid in kids:
        kid.wait()
