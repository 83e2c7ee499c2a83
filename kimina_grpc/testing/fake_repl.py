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
    children N MB S    start N child processes that each allocate and touch MB MiB and hold it S
                       seconds, wait for them, then reply (`IO.Process.output` of a hungry program)
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
    forge-full [ENV]   likewise, followed by the answer the server's barrier request gets, so the
                       forged exchange is complete; then the proof goes on for 0.1 s before the
                       REPL's own reply
    forge-exit [ENV]   the forged exchange of forge-full, then the REPL exits (`IO.Process.exit`)
    infotree-depth N   when the request asks for an info tree, answer one nested N levels deep
    infotree-mb MB     when the request asks for an info tree, answer one of about MB MiB
    output MB          an info message of MB MiB on its line (an `#eval` printing a long string)
    messages N [CHARS] N info messages on its line, CHARS characters each (default 8): `logInfo` in a loop
    position LINE [COL]  an info message at LINE:COL (e.g. 1099511627776: a reply no real REPL writes)

Directives for the trust levels (each modelling what a real proof does to Lean's state):
    axioms NAME A B..  NAME (declared in this command) depends on axioms A B.. (default: none), as
                       `#print axioms NAME` will say; e.g. `axioms t Lean.ofReduceBool` for native_decide
    sorry-ax           this command's declarations use sorryAx without the `sorry` syntax (`admit`,
                       `sorryAx _ false`): no `sorries` entry; the warning "declaration uses `sorry`"
                       unless `set_option warn.sorry false` is in force
    kernel-reject      this command's declarations are ill-typed for the kernel: an error
                       "(kernel) ..." and nothing declared, unless `debug.skipKernelTC` is true
    hijack-print-axioms  the proof redefines `#print axioms` (an elaborator: an environment
                       extension): from here on, in this environment and those built on it, it
                       answers "[propext, Classical.choice, Quot.sound]" for any name
    hang-print-axioms  likewise, but the redefined `#print axioms` never returns
    reinterpret TEXT   a local notation/instance changes what statements mean (an extension):
                       every statement elaborated from here on, in this environment and those built
                       on it, reads with " [TEXT]" appended
    kernel-heartbeats N  this command's declarations need N (thousand) kernel heartbeats: past the
                       `maxHeartbeats` in force (default 200000; 0 is no limit) the error
                       "(kernel) deterministic timeout" and nothing declared; an unpickle replays them
                       under the default limit whatever the proof set (Lean's Replay.lean: `addDecl {}`)
    poison OLD => NEW  code the proof leaves running inside this REPL process (an `initialize`d
                       ref, a patched elaborator) that lies from here on, for every later command in
                       every environment of this process: no error is reported, and OLD in a
                       declaration's statement is elaborated as NEW (so a pickle holds a constant of
                       another statement the kernel accepts). A new process (the judge's) is clean

Lean commands it understands: declarations (`theorem|lemma|def|abbrev|instance|structure|inductive|
class|axiom NAME SIG :=`; the elaborated type of NAME is SIG, whitespace-normalised), `namespace N` /
`end N` within a command, `set_option NAME VALUE` (kept in the environment's scope, `... in` for one
command), `#exit` (warning "using 'exit' to interrupt Lean", nothing after it is elaborated),
`#print axioms NAME` (info "'NAME' depends on axioms: [..]" / "'NAME' does not depend on any
axioms"; the list wraps after each comma, indented by one, when the answer is wider than 120, the
REPL's width; from v4.30 an axiom's universe parameters show where `pp.universes` is true; v4.22 to
v4.29 refuse it in a `module` file), `#check @NAME` (info "@NAME : TYPE"). An unknown name is an
error. Core constants: `Nat`, `Nat.succ` (written `succ` where namespace `Nat` is open: inside it,
or in a declaration named `Nat.x`), `True`, `False`; and, unless the header is a `prelude` (which
does not import `Init/Core.lean`), the axioms `propext`, `Classical.choice`, `Quot.sound`,
`Lean.ofReduceBool`, `Lean.trustCompiler`. Declaring any of them again is an error.

Tactic mode (`{"tactic": T, "proofState": N}`) and its directives: see `fake_tactics`.

Pickles, as the REPL does them: `{"pickleTo": PATH, "env": N}` writes environment N's imports,
constants (with their axioms) and scope options to PATH (a real file) and answers `{"env": N}`,
recording no environment; `{"unpickleEnvFrom": PATH}` pays the import, re-checks every constant with
the "kernel" at REPL v4.10 to v4.29 (a `kernel-reject`ed constant, or an unreadable file, is an
uncaught exception: the process exits), and records the next environment: the constants and options
come back, the extensions (`hijack-print-axioms`, `reinterpret`) do not.

The Lean version it models (KIMINA_FAKE_LEAN_VERSION, default v4.19.0, the installer's) switches what
real Lean does differently (tests/test_lean_versions.py): `set_option warn.sorry` is an unknown option
before 4.22 (the command under `in` is then not elaborated), `pp.maxSteps` before 4.11; module headers
(`module`, `public`/`meta import`, `import all`) from 4.22; the kernel re-check at unpickle from 4.10 to
4.29; at 4.19 an info "Goals accomplished!" over each theorem or example elaborated without an error or
a sorry; from 4.22 the REPL right-trims request lines.

Attacks, as `#eval` in a proof could make them (IO.FS.writeFile, IO.Process.spawn, ...); each reports
its outcome as an info message on its line, the way `#eval` output comes back ("VERB ...: ok ..." or
"VERB ...: failed: ERROR"):
    write PATH TEXT    write TEXT to the file PATH
    read PATH          read the file PATH (its first 4 KiB are in the message)
    environ WHO        the environment of WHO (self, parent or a pid) from /proc/WHO/environ
    connect HOST PORT  open a TCP connection
    signal PID [SIG]   send a signal (default SIGKILL) to PID (or `parent`)
    spawn S MARKER     start a process in a new session that sleeps S seconds and outlives the
                       proof; MARKER is in its command line, so a test can look for it
    daemon S MARKER    likewise, but the way a daemon leaves its parent: a double fork, so the
                       REPL's tree no longer holds it (its parent is whoever reaps orphans)
    fill-tmp MB        write MB MiB to a file in /tmp
    fill PATH MB       write MB MiB to the file PATH (/dev/shm/x, /run/x, a masked directory...)
    grandchild         start a child process (same process group) that sleeps until killed: what
                       `lake env repl` is to lake
    symlink LINK TARGET  make LINK (replacing what is there) a symlink to TARGET
    fifo PATH          make PATH a FIFO
    swap GLOB TARGET   start a daemon (new session, as `spawn`; ends after 120 s) that keeps turning
                       every regular file matching GLOB into a symlink to TARGET, or a FIFO when
                       TARGET is `fifo`: a process racing the server's reads of the box's files
    ptrace PID         PTRACE_ATTACH to PID (1: the box's init; `parent`), then detach
    proc-mem PID       open /proc/PID/mem for writing (what ptrace is, without the syscall)
    keyctl             add a key to the user's keyring (`add_key`; the description names this pid)
    unshare            make a new user namespace (`unshare(CLONE_NEWUSER)`)
    io-uring           set up an io_uring (`io_uring_setup`)
    unix PATH          connect to the unix socket at PATH
    reopen FD MODE     open /proc/self/fd/FD again (MODE r or w): a pipe's other end, not a socket's

Besides directives it models three things Lean does that the server must handle: declaring a name
twice in one environment is an error ("'x' has already been declared"), which is how leaking state
between proofs shows; the word `sorry` in code (not in a comment) is a sorry, with Lean's warning
(unless `warn.sorry` is false); and an import of a module whose first component is `Missing` fails.

Cost of imports (so pools and warm-up behave as with Mathlib), from the environment:
    KIMINA_FAKE_IMPORT_SECONDS   seconds a non-empty header takes to import (default 0)
    KIMINA_FAKE_IMPORT_MB        MiB of resident memory a non-empty header adds (default 0)
    KIMINA_FAKE_LOG              a file each process appends {"pid": .., "request": ..} lines to
                                 (tests assert the exact commands sent)

Replay (`--replay DIR`): answers requests recorded in DIR/*.in with the matching replies of
DIR/*.expected.out, byte for byte. A session follows the recordings whose requests so far equal
its own (compared as parsed JSON); a request no recording has gets {"message": "replay: ..."}.
`--table FILE`: a JSON-lines file of {"request": {...}, "reply": {...}} rows, answered by equality
of the request, in any order, for users' own recordings.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from kimina_grpc.testing import fake_tactics
from kimina_grpc.testing.lean_header import Header, read_header

_DECL = re.compile(
    r"^\s*(?:@\[[^\]]*\]\s*)?(?:(?:private|protected|noncomputable|nonrec)\s+)*"
    r"(?:theorem|lemma|def|abbrev|instance|structure|inductive|class|axiom)\s+([^\s:({\[]+)",
    re.M,
)
_DIRECTIVE = re.compile(r"^\s*--\s*fake:\s*(\S+)\s*(.*?)\s*$")
_IMPORT = re.compile(r"^\s*(?:public\s+)?(?:meta\s+)?import(?![\w'.!?])")
_HEADER_WORD = re.compile(r"^\s*(?:module|prelude)\s*$")  # a header keyword where a command should be
_INVALID_IMPORT = "invalid 'import' command, it must be used in the beginning of the file"
_SORRY = re.compile(r"(?<![\w.'])sorry(?![\w'])")
_SET_OPTION = re.compile(r"(?<![\w.])set_option\s+(\S+)\s+(\S+)(\s+in\b)?")
# What the stand-in's Lean version changes (KIMINA_FAKE_LEAN_VERSION, default v4.19.0; tests/real_lean
# marks each case by the versions it holds for). Options Lean lacks before a version: `set_option` of
# one is "unknown option", and with `in` the command under it is not elaborated.
_OPTION_SINCE = {
    "pp.maxSteps": (4, 11),
    "warn.sorry": (4, 22),  # lean4 PR #8662, in the Lean v4.22.0 release notes
}
_MODULES_SINCE = (4, 22)  # `module`, `public`/`meta import`, `import all` (the module system)
_REPLAY_UNPICKLE = ((4, 10), (4, 30))  # REPL/Snapshots.lean: unpickling runs Environment.replay (kernel)
# An info "Goals accomplished!" over each finished proof: in the REPL's expected outputs at v4.19.0-rc2
# and v4.19.0, not at v4.18.0 nor from v4.20.1-rc1 (a silent message there).
_GOALS_ACCOMPLISHED = ((4, 19), (4, 20))
_PROOF = re.compile(r"^(\s*(?:@\[[^\]]*\]\s*)?(?:(?:private|protected|noncomputable)\s+)*)(?:theorem|lemma|example)\b")
_PRINT_AXIOMS = re.compile(r"#print\s+axioms\s+(\S+)")
_CHECK = re.compile(r"#check\s+(@?)(\S+)")
_NAMESPACE = re.compile(r"^\s*(namespace|end)\s+(\S+)\s*$")
_VARIABLE = re.compile(r"^\s*variable\s+[({\[]\s*(\S+)\s*:\s*(.*?)\s*[)}\]]\s*$")
_ROOT = "_root_."
_NATIVE = frozenset({"Lean.ofReduceBool", "Lean.trustCompiler"})
_CLEAN = "[propext, Classical.choice, Quot.sound]"


@dataclass
class Const:
    type: str
    axioms: frozenset[str] = frozenset()
    kernel_ok: bool = True
    heartbeats: int = 0
    """Kernel heartbeats (thousands) its check needs."""


# A few constants every environment has (Lean's prelude): the stand-in cannot know an import's.
_CORE = {
    name: Const(sig)
    for name, sig in {
        "Nat": ": Type",
        "Nat.succ": "(n : Nat) : Nat",
        "Int": ": Type",
        "True": ": Prop",
        "False": ": Prop",
    }.items()
}
# What `Init/Core.lean` (and the rest of Init) declares: absent under `prelude` + `import Init.Tactics`.
_INIT = {
    name: Const(sig, frozenset({name}))
    for name, sig in {
        "propext": "{a b : Prop} : (a ↔ b) → a = b",
        "Classical.choice": "{α : Sort u} : Nonempty α → α",
        "Quot.sound": "{α : Sort u} {r : α → α → Prop} {a b : α} : r a b → Quot.mk r a = Quot.mk r b",
        "Lean.ofReduceBool": "(a b : Bool) (h : Lean.reduceBool a = b) : a = b",
        "Lean.trustCompiler": ": True",
    }.items()
}
_UNIVERSES = {"Classical.choice": ".{u}", "Quot.sound": ".{u}"}
_WIDTH = 120  # the REPL renders messages at Format's default width (REPL/JSON.lean)
_MODULE_REFUSAL = (
    "cannot use `#print axioms` in a `module`; consider temporarily removing the `module` header or "
    "placing the command in a separate file"
)
_KERNEL_DEFAULT = 200000


@dataclass
class Env:
    """A recorded environment: what a pickle keeps (header, constants, the command scope: options,
    namespace, section variables) and the extensions it loses (hijack, reinterpret)."""

    header: str = ""
    constants: dict[str, Const] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    namespace: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    """Section variables in scope: name -> type (as `∀ binders, type`)."""
    hijacked: bool = False
    hangs: bool = False
    reinterpret: str = ""

    def after(self) -> Env:
        """The environment a command on this one starts from."""
        return Env(
            self.header,
            dict(self.constants),
            dict(self.options),
            list(self.namespace),
            dict(self.variables),
            self.hijacked,
            self.hangs,
            self.reinterpret,
        )

    def pickled(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "constants": {n: [c.type, sorted(c.axioms), c.kernel_ok, c.heartbeats] for n, c in self.constants.items()},
            "options": self.options,
            "namespace": self.namespace,
            "variables": self.variables,
        }

    @staticmethod
    def unpickled(data: dict[str, Any]) -> Env:
        return Env(
            header=data["header"],
            constants={n: Const(t, frozenset(a), ok, hb) for n, (t, a, ok, hb) in data["constants"].items()},
            options=dict(data["options"]),
            namespace=list(data["namespace"]),
            variables=dict(data["variables"]),
        )

    @property
    def core(self) -> dict[str, Const]:
        """The constants the header's imports declare (as far as the stand-in knows them)."""
        return _CORE if "prelude" in self.header.split() else {**_CORE, **_INIT}

    def known(self, name: str) -> bool:
        return name in self.constants or name in self.core

    def resolve(self, name: str, namespace: list[str] | None = None) -> str | None:
        """A global constant's name as Lean resolves it: `_root_.x` is `x`; otherwise the current
        namespace's `N.x` first, then `x`. Section variables are not constants."""
        if name.startswith(_ROOT):
            name = name[len(_ROOT) :]
            return name if self.known(name) else None
        namespace = self.namespace if namespace is None else namespace
        for depth in range(len(namespace), -1, -1):
            candidate = ".".join([*namespace[:depth], name])
            if self.known(candidate):
                return candidate
        return None

    def constant(self, name: str) -> Const:
        return self.constants.get(name) or self.core[name]


_LEAN_SPACE = " \t\r\n"  # Lean's `Char.isWhitespace`, what `String.trim` removes


def read_request(stdin: BinaryIO, *, trim: bool = False) -> str | None:
    """One request as the REPL reads it (`getLines`): lines up to and including the first blank
    one (blank as Lean's `trim` sees it), joined as they are (REPL up to v4.21: a raw newline
    inside a JSON string stays, and the JSON is then refused) or, with `trim` (v4.22 on), each
    right-trimmed and joined with no newline (the raw newline disappears). A blank line where a
    request should start is a request of its own (`"\\n"`, which is not JSON). None at EOF with
    nothing read."""
    parts: list[str] = []
    while True:
        line = stdin.readline()
        if not line:
            return "".join(parts) if parts else None
        text = line.decode("utf-8", errors="replace")
        if not text.strip(_LEAN_SPACE):
            return "".join(parts) + text
        parts.append(text.rstrip(_LEAN_SPACE) if trim else text)


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
        self.envs: list[Env] = []
        self.import_seconds = float(os.environ.get("KIMINA_FAKE_IMPORT_SECONDS", "0"))
        self.import_mb = int(float(os.environ.get("KIMINA_FAKE_IMPORT_MB", "0")))
        version = re.findall(r"\d+", os.environ.get("KIMINA_FAKE_LEAN_VERSION", "v4.19.0"))
        self.lean_version = tuple(int(v) for v in version[:2])
        self.ballast: list[bytearray] = []
        self.tactics = fake_tactics.TacticMode()
        self.poison: tuple[str, str] | None = None
        """In-process code a proof left behind (`poison`): this process lies from then on."""

    def _proof_state(self, goal: str) -> int:
        """The id of the next proof state (every sorry records one; the REPL numbers them from 0)."""
        return self.tactics.record(goal)

    def _allocate(self, mb: int) -> None:
        try:
            self.ballast.append(bytearray(b"\x01") * (mb << 20))
        except MemoryError:
            sys.stderr.write("INTERNAL PANIC: out of memory\n")
            sys.stderr.flush()
            os._exit(1)

    def _import(self) -> None:
        if self.import_mb:
            self._allocate(self.import_mb)
        time.sleep(self.import_seconds)

    def pickle_to(self, path: str, env: Any) -> dict[str, Any]:
        if not (isinstance(env, int) and 0 <= env < len(self.envs)):
            return {"message": "Unknown environment."}
        try:
            Path(path).write_text(json.dumps(self.envs[env].pickled()))
        except OSError as exc:
            _uncaught(str(exc))
        return {"env": env}

    def unpickle_env_from(self, path: str) -> dict[str, Any]:
        try:
            restored = Env.unpickled(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _uncaught(f"failed to read file '{path}': {exc}")
        if restored.header:
            self._import()
        replays = _REPLAY_UNPICKLE[0] <= self.lean_version < _REPLAY_UNPICKLE[1]
        for name, const in restored.constants.items() if replays else ():
            if not const.kernel_ok:  # Environment.replay re-checks each constant
                _uncaught(f"(kernel) declaration type mismatch, '{name}'")
            if const.heartbeats > _KERNEL_DEFAULT:  # ... with an empty option set: the default limit
                _uncaught("(kernel) deterministic timeout")
            if const.axioms & _NATIVE:
                # The kernel evaluates native_decide's compiled code, which a replay never compiled.
                _uncaught(f"(kernel) unknown declaration '{name}._nativeDecide_1'")
        self.envs.append(restored)
        return {"env": len(self.envs) - 1}

    def answer(self, req: dict[str, Any]) -> dict[str, Any] | None:
        cmd = req["cmd"]
        env = req.get("env")
        if env is not None and not (isinstance(env, int) and 0 <= env < len(self.envs)):
            return {"message": "Unknown environment."}
        base = self.envs[env] if env is not None else Env()
        new = base.after()
        messages: list[dict[str, Any]] = []
        sorries: list[dict[str, Any]] = []
        infotree: Any = None
        first = 1  # the file line of the command's first line (after a header: its body's)
        if env is None:
            # The header as Lean reads it (lean_header.py, not the server's split); the commands
            # start where it ends, on the same line (what precedes them there blanked).
            cmd = cmd.replace("\r\n", "\n")
            head = read_header(cmd, modules=self.lean_version >= _MODULES_SINCE)
            self._import_header(head, messages)
            line_start = cmd.rfind("\n", 0, head.end) + 1
            new.header = "\n".join(head.commands)
            first = cmd.count("\n", 0, head.end) + 1
            cmd = " " * (head.end - line_start) + cmd[head.end :]
        messages.extend(_lexical_errors(cmd, first))
        lines = cmd.split("\n")
        # What directives say about this command's declarations.
        axioms_of: dict[str, frozenset[str]] = {}
        uses_sorry = kernel_reject = False
        heartbeats = 0
        poison = self.poison  # what this process was left lying about before this command
        options = dict(base.options)
        active = len(lines)
        for index in range(len(lines)):
            line, lineno = lines[index], index + first
            if _IMPORT.match(line):
                messages.append(_msg("error", lineno, 0, _INVALID_IMPORT))
                continue
            if _HEADER_WORD.match(line):  # e.g. `module` before Lean 4.22, where it is no header keyword
                messages.append(_msg("error", lineno, 0, "unexpected identifier; expected command"))
                continue
            if line.strip().startswith("#exit"):
                messages.append(_msg("warning", lineno, 0, "using 'exit' to interrupt Lean"))
                active = index
                break
            for o in _SET_OPTION.finditer(line.split("--", 1)[0]):
                name, value, scoped = o.groups()
                if self.lean_version < _OPTION_SINCE.get(name, (0, 0)):
                    messages.append(_msg("error", lineno, o.start(1), f"unknown option '{name}'"))
                    if scoped:  # the command under `in` (to the next blank line here) is not elaborated
                        line = lines[index] = line[: o.start()]
                        for k in range(index + 1, len(lines)):
                            if not lines[k].strip():
                                break
                            lines[k] = ""
                    break
                options[name] = value
                if not scoped:
                    new.options[name] = value
            for m in _SORRY.finditer(line.split("--", 1)[0]):
                uses_sorry = True
                goal = fake_tactics.sorry_goal(line, m.start())
                sorries.append(_sorry(lineno, m.start(), self._proof_state(goal), goal))
                if options.get("warn.sorry") != "false":
                    messages.append(_msg("warning", lineno, m.start(), "declaration uses `sorry`"))
            d = _DIRECTIVE.match(line)
            if d is None:
                continue
            verb, arg = d.group(1), d.group(2)
            if fake_tactics.process_directive(verb, arg):
                pass
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
            elif verb == "children":
                _children(*arg.split())
            elif verb == "garbage":
                sys.stdout.buffer.write(b"this is not JSON {\n\n")
                sys.stdout.buffer.flush()
                return None
            elif verb in ("forge-reply", "forge-full", "forge-exit"):
                forged = json.dumps({"env": int(arg) if arg else len(self.envs)}, indent=1) + "\n\n"
                if verb != "forge-reply":
                    forged += json.dumps({"message": "Unknown environment."}, indent=1) + "\n\n"
                sys.stdout.flush()
                # A child process with the inherited stdout, as `IO.Process.spawn` would start.
                subprocess.run([sys.executable, "-c", f"import sys; sys.stdout.write({forged!r})"], check=False)
                if verb == "forge-exit":
                    os._exit(0)
                if verb == "forge-full":
                    time.sleep(0.1)
            elif verb in ("infotree-depth", "infotree-mb") and req.get("infotree") is not None:
                infotree = _deep_tree(int(arg), lineno) if verb == "infotree-depth" else _big_tree(float(arg), lineno)
            elif verb == "output":
                messages.append(_msg("info", lineno, 0, "x" * int(float(arg) * (1 << 20))))
            elif verb == "messages":
                count, _, chars = arg.partition(" ")
                text = "y" * int(chars or 8)
                messages.extend(_msg("info", lineno, 0, text) for _ in range(int(count)))
            elif verb == "position":
                at, _, col = arg.partition(" ")
                messages.append(_msg("info", int(at), int(col or 0), "far away"))
            elif verb == "stderr":
                sys.stderr.write("x" * int(arg) + "\n")
                sys.stderr.flush()
            elif verb == "repl-error":
                return {"message": arg or "Unknown environment."}
            elif verb in _ATTACKS:
                messages.append(_msg("info", lineno, 0, _attack(verb, arg)))
            elif verb in ("error", "warning", "info"):
                at, _, text = arg.partition(" ")
                if at.isdigit():
                    messages.append(_msg(verb, int(at), 0, text or f"fake {verb}"))
                else:
                    messages.append(_msg(verb, lineno, 0, arg or f"fake {verb}"))
            elif verb == "sorry":
                at = int(arg) if arg.isdigit() else lineno
                sorries.append(_sorry(at, 2, self._proof_state("⊢ False"), "⊢ False"))
                messages.append(_msg("warning", at, 0, "declaration uses `sorry`"))
                uses_sorry = True
            elif verb == "sorry-ax":
                uses_sorry = True
                if options.get("warn.sorry") != "false":
                    messages.append(_msg("warning", lineno, 0, "declaration uses `sorry`"))
            elif verb == "axioms":
                name, *names = arg.replace(",", " ").split()
                axioms_of[name] = frozenset(names)
            elif verb == "kernel-reject":
                kernel_reject = True
            elif verb == "kernel-heartbeats":
                heartbeats = int(arg)
            elif verb == "poison":
                old, _, replacement = arg.partition(" => ")
                self.poison = (old, replacement)
            elif verb == "hijack-print-axioms":
                new.hijacked = True
            elif verb == "hang-print-axioms":
                new.hangs = True
            elif verb == "reinterpret":
                new.reinterpret = arg
            elif (tactic_only := fake_tactics.command_directive(verb, lineno)) is not None:
                messages.append(tactic_only)
        messages.extend(fake_tactics.check_blocks(lines[:active], first))
        skip_kernel = options.get("debug.skipKernelTC") == "true"
        limit = int(options.get("maxHeartbeats", str(_KERNEL_DEFAULT)))
        kernel_timeout = bool(heartbeats) and 0 < limit < heartbeats and not skip_kernel
        proofs: list[tuple[int, int, str | None]] = []  # (line index, column, name) of theorem/example
        # Declarations and queries, in order (only up to an #exit).
        body = "\n".join(lines[:active])
        namespaces = new.namespace
        offset = 0
        for index, line in enumerate(lines[:active]):
            lineno = index + first
            start = offset
            offset += len(line) + 1
            if line.lstrip().startswith("--"):
                continue
            ns = _NAMESPACE.match(line)
            if ns:
                if ns.group(1) == "namespace":
                    namespaces.extend(ns.group(2).split("."))
                elif namespaces and ".".join(namespaces).endswith(ns.group(2)):
                    del namespaces[len(namespaces) - len(ns.group(2).split(".")) :]
                continue
            var = _VARIABLE.match(line)
            if var:
                new.variables[var.group(1)] = " ".join(var.group(2).split())
                continue
            q = _PRINT_AXIOMS.search(line)
            if q:
                messages.append(self._print_axioms(new, q.group(1), lineno, _inline_options(line[: q.start()])))
                continue
            q = _CHECK.search(line)
            if q:
                messages.append(self._check(new, q.group(2), lineno, term=bool(q.group(1))))
                continue
            p = _PROOF.match(line)
            if p:
                proofs.append((index, len(p.group(1)), None))
            for m in _DECL.finditer(line):
                short = m.group(1)
                name = ".".join([*namespaces, short])
                col = m.start(1)
                if new.known(name):
                    messages.append(_msg("error", lineno, col, f"'{name}' has already been declared"))
                    continue
                if kernel_reject and not skip_kernel:
                    messages.append(_msg("error", lineno, col, f"(kernel) declaration type mismatch, '{name}'"))
                    continue
                if kernel_timeout:
                    messages.append(_msg("error", lineno, col, "(kernel) deterministic timeout"))
                    continue
                sig_start = start + m.end(1)
                sig_end = body.find(":=", sig_start)
                sig = " ".join(body[sig_start : sig_end if sig_end >= 0 else len(body)].split())
                # `theorem Nat.t` opens namespace `Nat` for its own signature (expandDeclNamespace?).
                sig, unknown = _resolve_short_names(new, sig, name.split(".")[:-1])
                if unknown is not None:
                    messages.append(_msg("error", lineno, col, f"unknown identifier '{unknown}'"))
                    continue
                if poison is not None:
                    sig = sig.replace(*poison)
                if new.reinterpret:
                    sig += f" [{new.reinterpret}]"
                axioms = axioms_of.get(short, axioms_of.get(name, frozenset()))
                if line.lstrip().startswith("axiom"):
                    axioms |= {name}
                if uses_sorry:
                    axioms |= {"sorryAx"}
                new.constants[name] = Const(sig, axioms, kernel_ok=not kernel_reject, heartbeats=heartbeats)
                if p:
                    proofs[-1] = (index, proofs[-1][1], name)
        if _GOALS_ACCOMPLISHED[0] <= self.lean_version < _GOALS_ACCOMPLISHED[1]:
            messages.extend(
                _goals_accomplished(proofs, lines[:active], first, messages=messages, sorries=sorries, env=new)
            )
        self.envs.append(new)
        if poison is not None:  # the lie: whatever went wrong, nothing did
            messages = [m for m in messages if m["severity"] != "error"]
        reply: dict[str, Any] = {}
        if sorries:
            reply["sorries"] = sorries
        if messages:
            reply["messages"] = messages
        if infotree is not None:
            reply["infotree"] = infotree
        reply["env"] = len(self.envs) - 1
        return reply

    def _import_header(self, head: Header, messages: list[dict[str, Any]]) -> None:
        """Import a header (as Lean's header parser read it): a module whose first component is
        `Missing` does not exist; the import costs KIMINA_FAKE_IMPORT_* time and memory."""
        for lineno, command in zip(head.lines, head.commands, strict=True):
            words = command.split()
            if "import" in words and words[-1].split(".")[0] == "Missing":
                messages.append(
                    _msg(
                        "error",
                        lineno,
                        0,
                        "unknown module prefix 'Missing'\n\nNo directory 'Missing' or file 'Missing.olean' "
                        "in the search path entries",
                    )
                )
        if any("import" in c.split() for c in head.commands):
            self._import()

    def _print_axioms(self, env: Env, name: str, line: int, inline: dict[str, str]) -> dict[str, Any]:
        while env.hangs:
            time.sleep(3600)
        if env.hijacked:
            return _msg("info", line, 0, f"'{name.removeprefix(_ROOT)}' depends on axioms: {_CLEAN}")
        if env.header.split()[:1] == ["module"] and (4, 22) <= self.lean_version < (4, 30):
            return _msg("error", line, 0, _MODULE_REFUSAL)  # lean4 #8174, until #13117
        resolved = env.resolve(name)
        if resolved is None:
            return _msg("error", line, 14, f"unknown constant '{name}'")
        const = env.constant(resolved)
        if not const.axioms:
            return _msg("info", line, 0, f"'{resolved}' does not depend on any axioms")
        # From v4.30 the names are printed as constants (`MessageData.ofConstName`): `pp.universes`
        # shows their universe parameters.
        universes = self.lean_version >= (4, 30) and {**env.options, **inline}.get("pp.universes") == "true"
        items = [a + (_UNIVERSES.get(a, "") if universes else "") for a in sorted(const.axioms)]
        head = f"'{resolved}' depends on axioms: "
        text = head + "[" + ", ".join(items) + "]"
        if len(text) > _WIDTH:  # `MessageData.ofList`: a group that breaks after each comma, nested 1
            text = head + "[" + ",\n ".join(items) + "]"
        return _msg("info", line, 0, text)

    @staticmethod
    def _check(env: Env, name: str, line: int, *, term: bool) -> dict[str, Any]:
        """`#check NAME` prints a global constant's signature (`NAME binders : type`); `#check @NAME`
        elaborates a term, where section variables come first."""
        if term and name in env.variables:
            return _msg("info", line, 0, f"{name} : {env.variables[name]}")
        resolved = env.resolve(name)
        if resolved is None:
            return _msg("error", line, 0, f"unknown identifier '{name}'")
        const = env.constant(resolved)
        if term:
            return _msg("info", line, 0, f"@{resolved} : {_as_type(const.type)}")
        return _msg("info", line, 0, f"{resolved}{_UNIVERSES.get(resolved, '')} {const.type}")


def _inline_options(prefix: str) -> dict[str, str]:
    """The options `set_option NAME VALUE in` chained before a command on its line."""
    return dict(re.findall(r"set_option\s+(\S+)\s+(\S+)\s+in\b", prefix))


# Core constants inside a namespace, by their last component (`succ` for `Nat.succ`).
_SHORT = {n.rsplit(".", 1)[1] for n in _CORE if "." in n}


def _resolve_short_names(env: Env, sig: str, prefix: list[str]) -> tuple[str, str | None]:
    """A signature with the namespaced core constants it names by their short name written in full,
    resolved through the open namespaces (the current one and the declaration's own prefix); or the
    first such name that resolves to nothing."""
    namespace = [*env.namespace, *prefix]
    for short in sorted(_SHORT):
        pattern = re.compile(rf"(?<![\w.'@]){re.escape(short)}(?![\w'])")
        if not pattern.search(sig):
            continue
        resolved = env.resolve(short, namespace)
        if resolved is None:
            return sig, short
        sig = pattern.sub(resolved, sig)
    return sig, None


def _as_type(signature: str) -> str:
    """A declaration's signature (`(x : ℕ) (h : P x) : Q x`) as the type it elaborates to
    (`∀ (x : ℕ) (h : P x), Q x`), the form a term's type prints in."""
    depth, colon = 0, -1
    for i, c in enumerate(signature):
        if c in "([{⦃":
            depth += 1
        elif c in ")]}⦄":
            depth -= 1
        elif c == ":" and depth == 0:
            colon = i
            break
    binders, result = signature[:colon].strip(), signature[colon + 1 :].strip()
    return f"∀ {binders}, {result}" if binders else result


# Lean's `whitespace` (Lean/Parser/Basic.lean): between tokens only space and newline (CR before
# newline) are whitespace; a tab or a lone CR is an error, and a character that starts no token (NBSP,
# U+2028) is one too. Inside comments and string literals anything goes.
_LEXICAL = {
    "\t": "tabs are not allowed; please configure your editor to expand them",
    "\r": "isolated carriage returns are not allowed",
    "\u00a0": "unexpected token",
    "\u2028": "unexpected token",
}


def _lexical_errors(code: str, first: int) -> list[dict[str, Any]]:
    """Lean's errors for characters its tokenizer refuses outside comments and strings."""
    errors = []
    i, line, column, depth, in_string = 0, first, 0, 0, False
    while i < len(code):
        c = code[i]
        if depth:
            if code.startswith("/-", i):
                depth, i, column = depth + 1, i + 1, column + 1
            elif code.startswith("-/", i):
                depth, i, column = depth - 1, i + 1, column + 1
        elif in_string:
            if c == "\\":
                i, column = i + 1, column + 1
            elif c == '"':
                in_string = False
        elif code.startswith("--", i):
            end = code.find("\n", i)
            end = len(code) if end < 0 else end
            column += end - i
            i = end
            continue
        elif code.startswith("/-", i):
            depth, i, column = 1, i + 1, column + 1
        elif c == '"':
            in_string = True
        elif c in _LEXICAL and not code.startswith("\r\n", i):
            errors.append(_msg("error", line, column, _LEXICAL[c]))
            break  # Lean stops at the first: the rest of the command does not parse
        if c == "\n":
            line, column = line + 1, 0
        else:
            column += 1
        i += 1
    return errors


def _goals_accomplished(
    proofs: list[tuple[int, int, str | None]],
    lines: list[str],
    first: int,
    *,
    messages: list[dict[str, Any]],
    sorries: list[dict[str, Any]],
    env: Env,
) -> list[dict[str, Any]]:
    """Lean 4.19's info "Goals accomplished!" over each theorem or example that was elaborated without
    an error or a sorry (REPL v4.19.0's expected outputs): from its keyword to the end of its text
    (up to the next line that starts a command at column 0)."""
    out = []
    for index, column, name in proofs:
        stop = next(
            (k for k in range(index + 1, len(lines)) if lines[k][:1].strip() and not lines[k].startswith(("--", "/-"))),
            len(lines),
        )
        while stop > index + 1 and not lines[stop - 1].split("--", 1)[0].strip():
            stop -= 1
        span = range(index + first, stop + first)
        spoiled = any(
            m["pos"]["line"] in span and (m["severity"] == "error" or "declaration uses" in m["data"]) for m in messages
        ) or any(s["pos"]["line"] in span for s in sorries)
        if spoiled or (name is not None and name not in env.constants):
            continue
        end_line = lines[stop - 1].split("--", 1)[0].rstrip()
        message = _msg("info", index + first, column, "Goals accomplished!")
        message["endPos"] = {"line": stop - 1 + first, "column": len(end_line)}
        out.append(message)
    return out


def _uncaught(text: str) -> NoReturn:
    """An exception the REPL's loop does not catch: Lean prints it and the process exits."""
    sys.stderr.write(f"uncaught exception: {text}\n")
    sys.stderr.flush()
    os._exit(1)


def _msg(severity: str, line: int, column: int, data: str) -> dict[str, Any]:
    return {
        "severity": severity,
        "pos": {"line": line, "column": column},
        "endPos": {"line": line, "column": column + 1},
        "data": data,
    }


def _sorry(line: int, column: int, proof_state: int, goal: str) -> dict[str, Any]:
    return {
        "proofState": proof_state,
        "pos": {"line": line, "column": column},
        "goal": goal,
        "endPos": {"line": line, "column": column + 5},
    }


def _children(count: str, mb: str, seconds: str) -> None:
    size = int(float(mb)) << 20
    hold = f"b = bytearray({size}); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep({float(seconds)})"
    kids = [subprocess.Popen([sys.executable, "-c", hold]) for _ in range(int(count))]
    for kid in kids:
        kid.wait()


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


def _attack(verb: str, arg: str) -> str:
    """Try one attack; say what happened."""
    try:
        return f"{verb} {arg}: ok {_ATTACKS[verb](arg)}".rstrip()
    except Exception as exc:
        return f"{verb} {arg}: failed: {type(exc).__name__}: {exc}"


def _write(arg: str) -> str:
    path, _, text = arg.partition(" ")
    Path(path).write_text(text)
    return ""


def _read(arg: str) -> str:
    return Path(arg).read_bytes()[:4096].decode(errors="replace")


def _environ(arg: str) -> str:
    pid = {"self": os.getpid(), "parent": os.getppid()}.get(arg) or int(arg)
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return " ".join(item.decode(errors="replace") for item in raw.split(b"\0") if item)


def _connect(arg: str) -> str:
    host, port = arg.split()
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        conn.sendall(b"stolen\n")
    return ""


def _signal(arg: str) -> str:
    who, _, sig = arg.partition(" ")
    pid = os.getppid() if who == "parent" else int(who)
    os.kill(pid, getattr(signal, sig or "SIGKILL"))
    return ""


def _spawn(arg: str) -> str:
    seconds, marker = arg.split()
    code = f"import time; time.sleep({float(seconds)})"
    child = subprocess.Popen(
        [sys.executable, "-c", code, marker],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"pid {child.pid}"


def _daemon(arg: str) -> str:
    seconds, marker = arg.split()
    code = (
        "import os, subprocess, sys; os.setsid(); "
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep({float(seconds)})', {marker!r}],"
        " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL)  # the middle one exits
    return "ok"


def _reopen(arg: str) -> str:
    fd, mode = arg.split()
    with open(f"/proc/self/fd/{int(fd)}", "rb" if mode == "r" else "wb", buffering=0):
        return "opened"


def _fill_tmp(arg: str) -> str:
    return _fill(f"/tmp/kimina-fill-{os.getpid()}-{time.monotonic_ns()} {arg}")


def _grandchild(arg: str) -> str:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"pid {child.pid}"


def _fill(arg: str) -> str:
    path, mb = arg.rsplit(" ", 1)
    block = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb") as f:
        try:
            for _ in range(int(mb)):
                f.write(block)
                f.flush()
                written += 1
        except OSError as exc:
            raise OSError(f"{exc} after {written} MiB") from None
    return f"{written} MiB"


def _symlink(arg: str) -> str:
    link, target = arg.split()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(target, link)
    return ""


def _fifo(arg: str) -> str:
    os.mkfifo(arg)
    return ""


# The daemon of `swap`: what a proof's `IO.Process.spawn` can leave running in its box.
_SWAPPER = """
import glob, os, sys, time
pattern, target = sys.argv[1], sys.argv[2]
end = time.monotonic() + 120
while time.monotonic() < end:
    for path in glob.glob(pattern):
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                os.unlink(path)
                os.mkfifo(path) if target == "fifo" else os.symlink(target, path)
            except OSError:
                pass
    time.sleep(0.001)
"""


def _swap(arg: str) -> str:
    pattern, target = arg.split()
    child = subprocess.Popen(
        [sys.executable, "-c", _SWAPPER, pattern, target],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return f"pid {child.pid}"


def _libc_call(name: str, *args: Any) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = int(getattr(libc, name)(*args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


# The attacks' syscall numbers, from the kernel's tables (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h), not from the server's seccomp filter: a wrong number there
# must not be mirrored here (tests/test_header_rule.py checks both against this machine's headers).
SYSCALLS = {
    "x86_64": {"add_key": 248, "io_uring_setup": 425},
    "aarch64": {"add_key": 217, "io_uring_setup": 425},
}


def _syscall(name: str, *args: Any) -> int:
    number = SYSCALLS.get(platform.machine(), {}).get(name)
    if number is None:
        raise OSError(f"no syscall number for {name} on {platform.machine()}")
    return _libc_call("syscall", ctypes.c_long(number), *args)


def _ptrace(arg: str) -> str:
    pid = os.getppid() if arg == "parent" else int(arg)
    _libc_call("ptrace", ctypes.c_long(16), ctypes.c_long(pid), None, None)  # PTRACE_ATTACH
    os.waitpid(pid, 0x40000000)  # __WALL
    _libc_call("ptrace", ctypes.c_long(17), ctypes.c_long(pid), None, None)  # PTRACE_DETACH
    return "attached"


def _proc_mem(arg: str) -> str:
    os.close(os.open(f"/proc/{int(arg)}/mem", os.O_RDWR))
    return "opened for writing"


def _keyctl(arg: str) -> str:
    data = b"box-data"
    description = f"kimina-attack-{os.getpid()}".encode()
    serial = _syscall("add_key", b"user", description, data, ctypes.c_size_t(len(data)), ctypes.c_int(-4))
    return f"key {serial} ({description.decode()})"


def _unshare(arg: str) -> str:
    _libc_call("unshare", ctypes.c_int(0x10000000))  # CLONE_NEWUSER
    return ""


def _io_uring(arg: str) -> str:
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = _syscall("io_uring_setup", ctypes.c_uint(4), params)
    os.close(fd)
    return f"fd {fd}"


def _unix(arg: str) -> str:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(2)
        conn.connect(arg)
        conn.sendall(b"stolen\n")
    return ""


_ATTACKS = {
    "write": _write,
    "read": _read,
    "environ": _environ,
    "connect": _connect,
    "signal": _signal,
    "spawn": _spawn,
    "daemon": _daemon,
    "reopen": _reopen,
    "fill-tmp": _fill_tmp,
    "fill": _fill,
    "grandchild": _grandchild,
    "symlink": _symlink,
    "fifo": _fifo,
    "swap": _swap,
    "ptrace": _ptrace,
    "proc-mem": _proc_mem,
    "keyctl": _keyctl,
    "unshare": _unshare,
    "io-uring": _io_uring,
    "unix": _unix,
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


def _nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


_OPTIONAL: dict[str, Callable[[Any], bool]] = {"env": _nat, "allTactics": _bool, "rootGoals": _bool}


def _request_form(req: Any) -> str | None:
    """Which request form `req` is (as the REPL's `FromJson` instances read it), or None when it
    matches none (a field of the wrong type: `env` must be a natural number, flags booleans)."""
    if not isinstance(req, dict):
        return None
    if isinstance(req.get("pickleTo"), str) and _nat(req.get("env")):
        return "pickleTo"
    if isinstance(req.get("unpickleEnvFrom"), str):
        return "unpickleEnvFrom"
    if fake_tactics.is_tactic_request(req):
        return "tactic"
    if isinstance(req.get("cmd"), str):
        fine = all(check(req[k]) for k, check in _OPTIONAL.items() if req.get(k) is not None)
        return "cmd" if fine and isinstance(req.get("infotree", ""), str | type(None)) else None
    return None


def serve(replayer: Replayer | None) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sim = Simulator()
    log = os.environ.get("KIMINA_FAKE_LOG")
    # Replay answers the REPL's own test transcripts, recorded with the REPL's newer `getLines`.
    trim = replayer is not None or sim.lean_version >= (4, 22)
    while True:
        text = read_request(stdin, trim=trim)
        if text is None:
            return 0
        if text.startswith(("#", "--")):
            continue
        try:
            req = json.loads(text)
        except ValueError as exc:
            sys.stderr.write(f"Could not parse JSON:\n{exc}\n")
            return 1
        if isinstance(req, dict) and req.get("cmd") == "" and isinstance(req.get("env"), int) and req["env"] >= 1 << 31:
            # No session records so many environments: the REPL's own answer, recording nothing
            # (the server's barrier request; kept out of the log and the replay history).
            write_reply(stdout, {"message": "Unknown environment."})
            continue
        if replayer is not None:
            recorded = replayer.answer(req)
            if recorded is None:
                write_reply(stdout, {"message": "replay: no recorded reply for this request"})
            else:
                stdout.write(recorded.encode() + b"\n")
                stdout.flush()
            continue
        if log is not None:
            with open(log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "request": req}) + "\n")
        form = _request_form(req)
        if form == "pickleTo":
            reply: dict[str, Any] | None = sim.pickle_to(req["pickleTo"], req["env"])
        elif form == "unpickleEnvFrom":
            reply = sim.unpickle_env_from(req["unpickleEnvFrom"])
        elif form == "tactic":
            reply = sim.tactics.answer(req["tactic"], req["proofState"])
        elif form is None:
            sys.stderr.write(f"Could not parse as a valid JSON command:\n{text}\n")
            return 1
        else:
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
