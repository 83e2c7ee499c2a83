"""A stand-in for ast_export (`lake exe ast-export [--one] Module`), run in the AST project directory.

It writes `.lake/build/lib/<Module as path>.out.json` in ast_export's shape, `{"header": ..., "commands":
[...]}`, with nodes `{"info", "kind", "args"}`, atoms `{"val"}`, identifiers `{"rawVal", "val"}` and
positions as UTF-8 byte offsets: one command node per non-blank line of `<Module as path>.lean` when the
project has that file (else one `example` command). It does not create the output directory (as the real
tool, whose callers must). Directives in the module's source, as comment lines:

    -- fake: sleep S        wait S seconds first
    -- fake: hang           never finish
    -- fake: fail [TEXT]    exit 1 with TEXT on stderr
    -- fake: error TEXT     print "<file>:1:0: error: TEXT" (a Lean error) and write no output
    -- fake: big N          add N bytes of padding to the JSON
    -- fake: write PATH     try to write PATH (an attack, as `#eval` in the code would), whatever comes

A module whose first component is `Missing` does not exist: exit 1, "unknown module". With `--strict`
(the demo's), neither does any module the project has no source file for: exit 1 with Lean's words.
Set KIMINA_FAKE_AST_LOG to a file to append "start <module> <time>" / "end <module> <time>" lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kimina_grpc.testing.fake_syntax import DIRECTIVE


def _log(event: str, module: str) -> None:
    path = os.environ.get("KIMINA_FAKE_AST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{event} {module} {time.time():.4f}\n")


def _node(line: str, start: int) -> dict[str, Any]:
    end = start + len(line.encode())
    words = line.split()
    args: list[dict[str, Any]] = [{"atom": {"val": words[0], "info": {"original": {"pos": start}}}}] if words else []
    args += [{"ident": {"rawVal": w, "val": w.strip("«»")}} for w in words[1:2]]
    return {
        "node": {
            "kind": f"Lean.Parser.Command.{words[0] if words else 'empty'}",
            "info": {"original": {"pos": start, "endPos": end}},
            "args": args,
        }
    }


def _unknown(module: str) -> str:
    """What Lean's import says of a module it cannot find."""
    first = module.split(".", maxsplit=1)[0]
    if not Path(first).is_dir():
        return f"unknown module prefix '{first}'\n\nNo directory '{first}' or file '{first}.olean' in the search path"
    olean = Path(".lake/build/lib/lean", *module.split(".")).with_suffix(".olean")
    return f"object file ./{olean} of module {module} does not exist"


def main(argv: list[str]) -> int:
    one = "--one" in argv
    modules = [a for a in argv if not a.startswith("--")]
    if len(modules) != 1:
        print("usage: ast-export [--one] Module", file=sys.stderr)
        return 2
    module = modules[0]
    _log("start", module)
    try:
        if module.split(".")[0] == "Missing":
            print(f"unknown module '{module}'", file=sys.stderr)
            return 1
        source_path = Path(*module.split(".")).with_suffix(".lean")
        if "--strict" in argv and not source_path.exists():
            print(_unknown(module), file=sys.stderr)
            return 1
        source = source_path.read_text(encoding="utf-8") if source_path.exists() else "example : True := trivial\n"
        padding = 0
        for line in source.splitlines():
            d = DIRECTIVE.match(line)
            if not d:
                continue
            verb, arg = d.groups()
            if verb == "sleep":
                time.sleep(float(arg))
            elif verb == "hang":
                while True:
                    time.sleep(3600)
            elif verb == "fail":
                print(arg or "ast-export failed", file=sys.stderr)
                return 1
            elif verb == "error":
                print(f"{source_path}:1:0: error: {arg}")
                return 0
            elif verb == "big":
                padding = int(arg)
            elif verb == "write":
                with contextlib.suppress(OSError):
                    Path(arg).write_text("pwned")
        commands, offset = [], 0
        for line in source.splitlines(keepends=True):
            if line.strip() and not line.lstrip().startswith(("--", "import")):
                commands.append(_node(line.rstrip("\n"), offset))
            offset += len(line.encode())
        imports = [
            line.split()[1] for line in source.splitlines() if line.startswith("import ") and len(line.split()) > 1
        ]
        tree = {"header": {"imports": imports, "one": one}, "commands": commands}
        if padding:
            tree["padding"] = "x" * padding
        out = Path(".lake/build/lib", *module.split(".")).with_suffix(".out.json")
        if not out.parent.is_dir():
            print(f"cannot write {out}: no such directory", file=sys.stderr)
            return 1
        out.write_text(json.dumps(tree), encoding="utf-8")
        return 0
    finally:
        _log("end", module)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
