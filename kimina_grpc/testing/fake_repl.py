"""A stand-in for the Lean REPL (leanprover-community/repl) for tests and benchmarks.

It speaks the REPL's exact wire format, quirks included (REPL/Main.lean, `getLines` and `loop`):
- a request is read line by line until a blank line; each line is right-trimmed and the lines are
  joined *without* a newline (so a raw newline inside a JSON string disappears);
- a request starting with `#` or `--` gets no reply; one that is not JSON, or matches no request
  form, makes the process exit with the text on stderr (exit code 1) -- and so does a stray blank
  line where a request should start (it is read as a request of its own, which is not JSON);
- replies are pretty-printed multi-line JSON objects followed by a blank line; every command gets
  the next `env` number, from 0 per process (errors or not); `{"message": "Unknown environment."}`
  for an unknown `env`, recording nothing; EOF on stdin ends the process;
- a command without `env` starts with a header read the way Lean's header parser reads it
  (`module`, `prelude`, imports; it stops at the first other token, on the same line too); the rest
  of that command is elaborated as commands in the new environment, as Lean does; `import` in a
  command with `env`, or after the header, is an error.

It checks no Lean. A command is valid unless it says otherwise with directives, comment lines in
the Lean code of the form `-- fake: VERB ARGS`:

    sleep S            wait S seconds (wall time) before replying
    cpu S              burn S seconds of CPU before replying
    hang               never reply (stdin stays open)
    crash [CODE]       exit at once with CODE (default 1), "fake REPL crash" on stderr
    crash-once PATH    crash like `crash` if PATH does not exist, creating it (so a retry passes)
    alloc MB           allocate and touch MB MiB and keep it (until the process ends); if the
                       address-space cap forbids it, print "INTERNAL PANIC: out of memory" on
                       stderr and exit 1, as Lean's runtime does
    spike MB           allocate and touch MB MiB, free it, then reply (a transient peak)
    garbage            reply with text that is not JSON
    stderr BYTES       write BYTES bytes to stderr before replying
    repl-error TEXT    reply {"message": TEXT} (a REPL-level failure)
    error [LINE] TEXT  add an error message at LINE (default: the directive's own line)
    warning [LINE] TEXT / info [LINE] TEXT   likewise
    sorry [LINE]       add a sorry at LINE and the warning "declaration uses `sorry`"
    time S             nothing; recorded by benchmarks as the proof's Lean cost (see `sleep`)
    forge-reply [ENV]  a process the proof starts writes a forged reply {"env": ENV} to the stdout
                       it inherited (default ENV: the id this command will get), before the REPL's
                       own reply, as `IO.Process.spawn` from `#eval` could
    infotree-depth N   when the request asks for an info tree, answer one nested N levels deep
    infotree-mb MB     when the request asks for an info tree, answer one of about MB MiB

Besides directives it models three things Lean does that the server must handle: declaring a name
twice in one environment is an error ("'x' has already been declared"), which is how leaking state
between proofs shows; the word `sorry` in code (not in a comment) is a sorry, with Lean's warning;
and an import of a module whose first component is `Missing` fails.

Cost of imports (so pools and warm-up behave as with Mathlib), from the environment:
    KIMINA_FAKE_IMPORT_SECONDS   seconds a non-empty header takes to import (default 0)
    KIMINA_FAKE_IMPORT_MB        MiB of resident memory a non-empty header adds (default 0)

Replay (`--replay DIR`): answers requests recorded in DIR/*.in with the matching replies of
DIR/*.expected.out, byte for byte. A session follows the recordings whose requests so far equal
its own (compared as parsed JSON); a request no recording has gets {"message": "replay: ..."}.
`--table FILE`: a JSON-lines file of {"request": {...}, "reply": {...}} rows, answered by equality
of the request, in any order, for users' own recordings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from kimina_grpc.repl.header import split_header

_DECL = re.compile(
    r"^\s*(?:@\[[^\]]*\]\s*)?(?:(?:private|protected|noncomputable|nonrec)\s+)*"
    r"(?:theorem|lemma|def|abbrev|instance|structure|inductive|class)\s+([^\s:({\[]+)",
    re.M,
)
_DIRECTIVE = re.compile(r"^\s*--\s*fake:\s*(\S+)\s*(.*?)\s*$")
_IMPORT = re.compile(r"^\s*(?:public\s+)?(?:meta\s+)?import\s+(.+?)\s*$")
_INVALID_IMPORT = "invalid 'import' command, it must be used in the beginning of the file"
_SORRY = re.compile(r"(?<![\w.'])sorry(?![\w'])")


def read_request(stdin: BinaryIO) -> str | None:
    """One request as the REPL reads it (`getLines`): lines up to and including the first blank
    one, each right-trimmed, joined with no newline. A blank line where a request should start is
    a request of its own (`"\\n"`, which is not JSON). None at EOF with nothing read."""
    parts: list[str] = []
    while True:
        line = stdin.readline()
        if not line:
            return "".join(parts) if parts else None
        text = line.decode("utf-8", errors="replace")
        if not text.strip():
            return "".join(parts) + text
        parts.append(text.rstrip())


def write_reply(stdout: BinaryIO, obj: dict[str, Any]) -> None:
    tree = obj.pop("infotree", None)
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    if tree is not None:
        # Written apart: a deep tree is built as text (json.dumps would recurse past Python's bound).
        text = text[:-2] + ',\n "infotree": ' + (tree if isinstance(tree, str) else json.dumps(tree)) + "\n}"
    stdout.write(text.encode() + b"\n\n")
    stdout.flush()


def chunks(text: str) -> Iterator[str]:
    """Split a transcript into its blank-line separated blocks (without the separators)."""
    block: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block) + "\n"
            block = []
    if block:
        yield "\n".join(block) + "\n"


def normalise_request(block: str) -> Any:
    """A request as the REPL understands it: right-trimmed lines joined, then parsed."""
    return json.loads("".join(line.rstrip() for line in block.split("\n")))


class Simulator:
    """Lean-like answers to commands, driven by directives."""

    def __init__(self) -> None:
        self.envs: list[frozenset[str]] = []  # declared names per env
        self.import_seconds = float(os.environ.get("KIMINA_FAKE_IMPORT_SECONDS", "0"))
        self.import_mb = int(float(os.environ.get("KIMINA_FAKE_IMPORT_MB", "0")))
        self.ballast: list[bytearray] = []

    def _allocate(self, mb: int) -> None:
        try:
            self.ballast.append(bytearray(b"\x01") * (mb << 20))
        except MemoryError:
            sys.stderr.write("INTERNAL PANIC: out of memory\n")
            sys.stderr.flush()
            os._exit(1)

    def answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        cmd = req["cmd"]
        env = req.get("env")
        if env is not None and not (isinstance(env, int) and 0 <= env < len(self.envs)):
            return {"message": "Unknown environment."}
        names = self.envs[env] if env is not None else frozenset()
        messages: list[dict[str, Any]] = []
        sorries: list[dict[str, Any]] = []
        infotree: Any = None
        offset = 0
        if env is None:
            split = split_header(cmd)
            self._import(split.header, split.header_lines, messages)
            cmd, offset = split.body, split.line_offset
        for lineno, line in enumerate(cmd.split("\n"), 1 + offset):
            if _IMPORT.match(line):
                messages.append(_msg("error", lineno, 0, _INVALID_IMPORT))
                continue
            code = line.split("--", 1)[0]
            for m in _SORRY.finditer(code):
                sorries.append(_sorry(lineno, m.start()))
                messages.append(_msg("warning", lineno, m.start(), "declaration uses `sorry`"))
            d = _DIRECTIVE.match(line)
            if d is None:
                continue
            verb, arg = d.group(1), d.group(2)
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
                sys.stderr.write("fake REPL crash\n")
                sys.stderr.flush()
                os._exit(int(arg or 1))
            elif verb == "crash-once":
                try:
                    with open(arg, "x"):
                        pass
                except FileExistsError:
                    continue
                sys.stderr.write("fake REPL crash\n")
                sys.stderr.flush()
                os._exit(1)
            elif verb == "alloc":
                self._allocate(int(float(arg)))
            elif verb == "spike":
                self._allocate(int(float(arg)))
                self.ballast.pop()  # large blocks are unmapped at once: resident memory falls back
            elif verb == "garbage":
                sys.stdout.buffer.write(b"this is not JSON {\n\n")
                sys.stdout.buffer.flush()
                return None
            elif verb == "forge-reply":
                forged = json.dumps({"env": int(arg) if arg else len(self.envs)}, indent=1)
                sys.stdout.flush()
                # A child process with the inherited stdout, as `IO.Process.spawn` would start.
                subprocess.run(
                    [sys.executable, "-c", f"import sys; sys.stdout.write({forged + chr(10) * 2!r})"], check=False
                )
            elif verb == "stderr":
                sys.stderr.write("x" * int(arg) + "\n")
                sys.stderr.flush()
            elif verb == "repl-error":
                return {"message": arg or "Unknown environment."}
            elif verb in ("error", "warning", "info"):
                at, _, text = arg.partition(" ")
                if at.isdigit():
                    messages.append(_msg(verb, int(at), 0, text or f"fake {verb}"))
                else:
                    messages.append(_msg(verb, lineno, 0, arg or f"fake {verb}"))
            elif verb == "sorry":
                at = int(arg) if arg.isdigit() else lineno
                sorries.append(_sorry(at, 2))
                messages.append(_msg("warning", at, 0, "declaration uses `sorry`"))
            elif verb in ("infotree-depth", "infotree-mb") and req.get("infotree") is not None:
                infotree = _deep_tree(int(arg), lineno) if verb == "infotree-depth" else _big_tree(float(arg), lineno)
        declared = set(names)
        for m in _DECL.finditer(cmd):
            name = m.group(1)
            line = cmd.count("\n", 0, m.start(1)) + 1 + offset
            col = m.start(1) - (cmd.rfind("\n", 0, m.start(1)) + 1)
            if name in declared:
                messages.append(_msg("error", line, col, f"'{name}' has already been declared"))
            declared.add(name)
        self.envs.append(frozenset(declared))
        reply: dict[str, Any] = {}
        if sorries:
            reply["sorries"] = sorries
        if messages:
            reply["messages"] = messages
        if infotree is not None:
            reply["infotree"] = infotree
        reply["env"] = len(self.envs) - 1
        return reply

    def _import(self, header: str, lines: tuple[int, ...], messages: list[dict[str, Any]]) -> None:
        """Import a header (as Lean's header parser read it): a module whose first component is
        `Missing` does not exist; the first import costs KIMINA_FAKE_IMPORT_* time and memory."""
        imported = False
        for lineno, command in zip(lines, header.split("\n") if header else [], strict=True):
            words = command.split()
            if "import" not in words:
                continue
            module = words[-1]
            if module.split(".")[0] == "Missing":
                messages.append(
                    _msg(
                        "error",
                        lineno,
                        0,
                        "unknown module prefix 'Missing'\n\nNo directory 'Missing' or file 'Missing.olean' "
                        "in the search path entries",
                    )
                )
            if not imported:
                imported = True
                if self.import_mb:
                    self._allocate(self.import_mb)
                time.sleep(self.import_seconds)


def _sorry(line: int, column: int) -> dict[str, Any]:
    return {
        "proofState": 0,
        "pos": {"line": line, "column": column},
        "goal": "⊢ False",
        "endPos": {"line": line, "column": column + 5},
    }


def _deep_tree(depth: int, line: int) -> str:
    """An info tree nested `depth` levels (each level a node with one child), as JSON text."""
    leaf = json.dumps({"node": {"stx": {"range": {"start": {"line": line, "column": 0}}}}, "children": []})
    n = max(0, depth - 1)
    return "[" + '{"node": {"kind": "TacticInfo"}, "children": [' * n + leaf + "]}" * n + "]"


def _big_tree(mb: float, line: int) -> list[Any]:
    """A flat info tree of about `mb` MiB of JSON."""
    leaf = {
        "node": {"stx": {"range": {"start": {"line": line, "column": 2}, "finish": {"line": line, "column": 9}}}},
        "goalsBefore": ["⊢ a + b = b + a"],
        "children": [],
    }
    size = len(json.dumps(leaf, indent=1)) + 2
    return [leaf] * max(1, int(mb * (1 << 20) / size))


def _msg(severity: str, line: int, column: int, data: str) -> dict[str, Any]:
    return {
        "severity": severity,
        "pos": {"line": line, "column": column},
        "endPos": {"line": line, "column": column + 1},
        "data": data,
    }


class Replayer:
    """Answers from recorded transcripts (sessions) or a table (single requests)."""

    def __init__(self, directory: Path | None, table: Path | None) -> None:
        self.sessions: list[tuple[list[Any], list[str]]] = []
        for path in sorted(directory.glob("*.in")) if directory else []:
            out = path.with_name(path.name[: -len(".in")] + ".expected.out")
            if not out.exists():
                continue
            try:
                requests = [normalise_request(b) for b in chunks(path.read_text())]
            except ValueError:
                continue
            self.sessions.append((requests, list(chunks(out.read_text()))))
        self.table: list[tuple[Any, str]] = []
        if table:
            for line in table.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.table.append((row["request"], json.dumps(row["reply"], indent=1, ensure_ascii=False) + "\n"))
        self.history: list[Any] = []

    def answer(self, req: Any) -> str | None:
        self.history.append(req)
        k = len(self.history) - 1
        for requests, replies in self.sessions:
            if requests[: k + 1] == self.history and k < len(replies):
                return replies[k]
        for request, reply in self.table:
            if request == req:
                return reply
        return None


def serve(replayer: Replayer | None) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sim = Simulator()
    while True:
        text = read_request(stdin)
        if text is None:
            return 0
        if text.startswith(("#", "--")):
            continue
        try:
            req = json.loads(text)
        except ValueError as exc:
            sys.stderr.write(f"Could not parse JSON:\n{exc}\n")
            return 1
        if replayer is not None:
            if isinstance(req, dict) and isinstance(req.get("env"), int) and req["env"] >= 1 << 31:
                # No recording knows so many environments: the REPL's own answer, recording nothing.
                write_reply(stdout, {"message": "Unknown environment."})
                continue
            recorded = replayer.answer(req)
            if recorded is None:
                write_reply(stdout, {"message": "replay: no recorded reply for this request"})
            else:
                stdout.write(recorded.encode() + b"\n")
                stdout.flush()
            continue
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            sys.stderr.write(f"Could not parse as a valid JSON command:\n{text}\n")
            return 1
        reply = sim.answer(req)
        if reply is not None:
            write_reply(stdout, reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kimina_grpc.testing.fake_repl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--replay", type=Path, help="a folder of NAME.in / NAME.expected.out transcripts")
    parser.add_argument("--table", type=Path, help="a JSON-lines file of {request, reply} rows")
    args = parser.parse_args(argv)
    replayer = Replayer(args.replay, args.table) if args.replay or args.table else None
    try:
        return serve(replayer)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
