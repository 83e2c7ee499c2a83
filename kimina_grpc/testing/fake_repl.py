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

# Where each part lives (kimina_grpc/testing/): fake_wire (reading requests, writing replies),
# fake_replay (--replay, --table), fake_commands (command and pickle requests) with its two passes
# fake_directives and fake_declarations, fake_tactics (tactic mode), fake_env (the environment
# model), fake_queries (#print axioms, #check), fake_versions (what each Lean version does),
# fake_process (directives that act on the process), fake_attacks, fake_syntax, fake_messages,
# fake_state, lean_header (Lean's header rule). Each imports nothing of the server.

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kimina_grpc.testing.fake_commands import Simulator
from kimina_grpc.testing.fake_replay import Replayer
from kimina_grpc.testing.fake_wire import chunks, normalise_request, read_request, request_form, write_reply

__all__ = ["Replayer", "Simulator", "chunks", "main", "normalise_request", "read_request", "serve", "write_reply"]


def serve(replayer: Replayer | None) -> int:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sim = Simulator()
    log = os.environ.get("KIMINA_FAKE_LOG")
    # Replay answers the REPL's own test transcripts, recorded with the REPL's newer `getLines`.
    trim = replayer is not None or sim.process.version.trims_requests
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
        form = request_form(req)
        if form == "pickleTo":
            reply: dict[str, Any] | None = sim.pickle_to(req["pickleTo"], req["env"])
        elif form == "unpickleEnvFrom":
            reply = sim.unpickle_env_from(req["unpickleEnvFrom"])
        elif form == "tactic":
            reply = sim.process.tactics.answer(req["tactic"], req["proofState"])
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
