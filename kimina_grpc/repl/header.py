"""Split a Lean file into its import header and its body.

The header is what a REPL imports once and keeps warm; the body is what runs on top of it for each
proof. Proofs whose headers normalise to the same text share REPLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Header commands of Lean 4: `prelude`, `module` (newer Lean), and imports with their newer
# modifiers (`public import`, `meta import`, `public meta import`, `import all`).
_HEADER_COMMAND = re.compile(r"(?:prelude|module|(?:public\s+)?(?:meta\s+)?import)(?=\s|$|--|/-)")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Split:
    """A file cut in two at the end of its last header command's line."""

    header: str
    """The normalised header, one command per line (`import Mathlib\\nimport Aesop`), `""` for none."""
    body: str
    """The rest of the file, line endings normalised to `\\n`."""
    line_offset: int
    """Lines before the body: a body line `n` is line `n + line_offset` of the file."""
    header_lines: tuple[int, ...]
    """For each line of `header`, the 1-based line of the file it came from."""


def _skip_block_comment(code: str, i: int) -> int:
    """Index just past the nested `/- ... -/` comment that starts at `i` (or len(code) if unclosed)."""
    depth = 0
    n = len(code)
    while i < n:
        if code.startswith("/-", i):
            depth += 1
            i += 2
        elif code.startswith("-/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _skip_trivia(code: str, i: int, *, stop_at_newline: bool) -> int:
    """Skip white space and comments from `i`; with `stop_at_newline`, stop on a newline that is not
    inside a block comment."""
    n = len(code)
    while i < n:
        c = code[i]
        if c == "\n" and stop_at_newline:
            return i
        if c.isspace():
            i += 1
        elif code.startswith("--", i):
            end = code.find("\n", i)
            i = n if end < 0 else end
        elif code.startswith("/-", i):
            i = _skip_block_comment(code, i)
        else:
            return i
    return n


def split_header(code: str) -> Split:
    """Cut `code` after its last header command.

    Blank lines and comments before and between header commands, and blank lines after the last
    one, belong to the header; the body starts at the first line with text after it (a comment
    there is the body's), so body positions shift by whole lines. Module names are kept exactly:
    `Mathlib.Data.Real.Basic` is never widened to `Mathlib`.
    """
    code = code.replace("\r\n", "\n")
    commands: list[str] = []
    lines: list[int] = []
    end = 0  # index where the body starts
    i = 0
    n = len(code)
    while True:
        i = _skip_trivia(code, i, stop_at_newline=False)
        match = _HEADER_COMMAND.match(code, i)
        if i >= n or match is None:
            break
        # A header command runs to the end of its line or the first comment on it.
        j = i
        while j < n and code[j] != "\n" and not code.startswith(("--", "/-"), j):
            j += 1
        command = _SPACES.sub(" ", code[i:j]).strip()
        k = _skip_trivia(code, j, stop_at_newline=True)
        if k < n and code[k] != "\n":
            break  # code after a header command on its line: leave the whole line to Lean
        if command not in commands:
            commands.append(command)
            lines.append(code.count("\n", 0, i) + 1)
        i = min(k + 1, n)
        # Blank lines after a header command belong to the header: the body starts on a line with
        # text (as Kimina cut it, so positions agree with its recordings).
        end = i
        while end < n:
            nl = code.find("\n", end)
            if nl < 0 or code[end:nl].strip():
                if nl < 0 and not code[end:].strip():
                    end = n
                break
            end = nl + 1
    return Split(
        header="\n".join(commands),
        body=code[end:],
        line_offset=code.count("\n", 0, end),
        header_lines=tuple(lines),
    )
