"""Split a Lean file into its import header and its body, exactly where Lean's header parser stops.

The header is what a REPL imports once and keeps warm; the body is what runs on top of it for each
proof. Proofs whose headers normalise to the same text share REPLs.

The cut must be Lean's own: anything we put in the header that Lean would have read as a command
(e.g. `import Mathlib theorem cheat : False := sorry` on one line) would become part of a warm REPL's
base environment, unchecked. So this module reads the file the way Lean's header parser does
(`Lean.Parser.Module.header`, `Lean.Parser.whitespace` in `Lean/Parser/Basic.lean`):

    header  := ["module"] ["prelude"] import*                 (`module` since Lean 4.22)
    import  := ["public"] ["meta"] "import" ["all" | "runtime"] ident

- whitespace between tokens is Lean's `whitespace`: space and newline (`Char.isWhitespace`); a
  line comment `--` to the end of the line; a nested block comment `/- ... -/`. `/--` and `/-!`
  open doc comments, which are tokens, not whitespace: they end the header. A tab is an error
  ("tabs are not allowed"), and so is a carriage return not followed by a newline in current Lean
  ("isolated carriage returns are not allowed"; older Lean skipped it as whitespace): either ends
  the header here, and Lean reports it when it reads the body. NBSP, U+2028 and every other
  character are not whitespace;
- a keyword is a keyword only when the identifier there is no longer than it (`importance` is an
  identifier, not `import`);
- the header ends at the first token that does not continue it, on the same line or not.

Lean numbers lines by `\\n` only, so CRLF is read as LF (Lean's input is normalised the same way)
and a lone CR does not start a line. When only trivia follows the header on its last line, the body
starts at the next line with text (comments included, as Kimina cut it, so positions agree with its
recordings); when anything else follows on that line, the body starts on that line with the
header's characters blanked out, so every body position is the file's position shifted by whole
lines.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Split:
    """A file cut in two where Lean's header parser stops."""

    header: str
    """The normalised header, one command per line (`import Mathlib\\nimport Aesop`), `""` for none."""
    body: str
    """The rest of the file (CRLF read as LF), starting on a whole line."""
    line_offset: int
    """Lines before the body: a body line `n` is line `n + line_offset` of the file."""
    header_lines: tuple[int, ...]
    """For each line of `header`, the 1-based line of the file it came from."""
    header_columns: tuple[int, ...] = ()
    """For each line of `header`, the 0-based column of the file it starts at."""


# Lean's builtin keywords that read as identifiers (the header is parsed with the builtin token table,
# `getTokenTable` of an empty environment in `Lean.Parser.Module.parseHeader`): where a module name
# should be, one of these is a token, not a name, and the header ends (`import theorem` is Lean's
# error, never an import of a module `theorem`). Commands, term syntax and common core tactics
# (not Mathlib's: those are no tokens before its import).
KEYWORDS = frozenset(
    """
    abbrev attribute axiom by calc class decreasing_by def deriving do else end example export
    extends fun have if in include inductive infix infixl infixr instance let local macro
    macro_rules match mutual namespace noncomputable nonrec notation omit opaque open partial
    postfix prefix private protected scoped section set_option show structure syntax termination_by
    then theorem unsafe universe variable where with elab elab_rules at from import prelude module
    Type Sort Prop exact intro intros apply refine rfl simp rw rewrite omega decide unfold cases
    induction constructor exists sorry admit
    """.split()  # noqa: SIM905
)


def _is_letter_like(c: str) -> bool:
    """Lean's `isLetterLike`: Greek and Coptic (but λ, Π, Σ), letter-like symbols, math script."""
    o = ord(c)
    return (
        (0x3B1 <= o <= 0x3C9 and o != 0x3BB)
        or (0x391 <= o <= 0x3A9 and o not in (0x3A0, 0x3A3))
        or 0x3CA <= o <= 0x3FB
        or 0x1F00 <= o <= 0x1FFE
        or 0x2100 <= o <= 0x214F
        or 0x1D49C <= o <= 0x1D59F
    )


def _is_sub_script_alnum(c: str) -> bool:
    o = ord(c)
    return 0x2080 <= o <= 0x2089 or 0x2090 <= o <= 0x209C or 0x1D62 <= o <= 0x1D6A


def _is_id_first(c: str) -> bool:
    # Lean's Char.isAlpha is ASCII only.
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or c == "_" or _is_letter_like(c)


def _is_id_rest(c: str) -> bool:
    return _is_id_first(c) or ("0" <= c <= "9") or c in "'!?" or _is_sub_script_alnum(c)


class _Stop(Exception):
    """Lean's header parser would stop (or fail) here."""


class _Reader:
    def __init__(self, code: str) -> None:
        self.code = code
        self.n = len(code)

    def whitespace(self, i: int) -> int:
        """Index after Lean's whitespace and comments from `i`; _Stop where Lean reports an error."""
        code, n = self.code, self.n
        while i < n:
            c = code[i]
            if c in " \n":
                i += 1
            elif c in "\t\r":
                raise _Stop  # tabs, and CRs not part of a CRLF (already read as LF), are errors
            elif code.startswith("--", i):
                end = code.find("\n", i)
                i = n if end < 0 else end
            elif code.startswith("/-", i) and not code.startswith(("/--", "/-!"), i):
                i = self._block_comment_end(i)
            else:
                return i
        return i

    def _block_comment_end(self, i: int) -> int:
        depth, i = 1, i + 2
        while i < self.n:
            if self.code.startswith("/-", i):
                depth, i = depth + 1, i + 2
            elif self.code.startswith("-/", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    return i
            else:
                i += 1
        raise _Stop  # unterminated comment

    def ident(self, i: int) -> int:
        """Index after the identifier at `i` (dotted parts, «escaped» parts), or `i` if none."""
        code, n = self.code, self.n
        j = i
        while True:
            if j < n and code[j] == "«":
                end = code.find("»", j + 1)
                if end < 0:
                    return i if j == i else j
                k = end + 1
            elif j < n and _is_id_first(code[j]):
                k = j + 1
                while k < n and _is_id_rest(code[k]):
                    k += 1
            else:
                return i if j == i else j - 1  # a trailing dot is not part of the name
            if k < n and code[k] == "." and k + 1 < n and (code[k + 1] == "«" or _is_id_first(code[k + 1])):
                j = k + 1
                continue
            return k

    def name(self, i: int) -> int:
        """Index after the module name at `i`, or `i` if none (a keyword is no name)."""
        end = self.ident(i)
        return i if self.code[i:end] in KEYWORDS else end

    def keyword(self, i: int, word: str) -> int | None:
        """Index after `word` at `i` when the identifier there is exactly that keyword."""
        if self.code.startswith(word, i) and self.ident(i) == i + len(word):
            return i + len(word)
        return None


def split_header(code: str) -> Split:
    """Cut `code` where Lean's header parser stops. Module names are kept exactly:
    `Mathlib.Data.Real.Basic` is never widened to `Mathlib`."""
    code = code.replace("\r\n", "\n")
    r = _Reader(code)
    commands: list[str] = []
    lines: list[int] = []
    columns: list[int] = []
    end = 0  # just after the last header token

    def add(command: str, start: int) -> None:
        if command not in commands:
            commands.append(command)
            lines.append(code.count("\n", 0, start) + 1)
            columns.append(start - code.rfind("\n", 0, start) - 1)

    try:
        i = r.whitespace(0)
        if (j := r.keyword(i, "module")) is not None:
            add("module", i)
            end = j
            i = r.whitespace(j)
        if (j := r.keyword(i, "prelude")) is not None:
            add("prelude", i)
            end = j
            i = r.whitespace(j)
        while True:
            start, words, j = i, [], i
            for modifier in ("public", "meta"):
                if (k := r.keyword(j, modifier)) is not None:
                    words.append(modifier)
                    j = r.whitespace(k)
            k = r.keyword(j, "import")
            if k is None:
                break
            words.append("import")
            j = r.whitespace(k)
            for modifier in ("all", "runtime"):
                if (k := r.keyword(j, modifier)) is not None and r.name(after := r.whitespace(k)) > after:
                    words.append(modifier)
                    j = after
                    break
            k = r.name(j)
            if k == j:
                break  # `import` without a module name: Lean's error, reported with the body
            words.append(code[j:k])
            add(" ".join(words), start)
            end = k
            i = r.whitespace(k)
    except _Stop:
        pass
    return _cut(code, commands, lines, columns, end)


def _rest_of_line_is_trivia(code: str, i: int) -> bool:
    """Whether only spaces and comments that end on this line follow `i` on its line."""
    while i < len(code) and code[i] != "\n":
        if code[i] == " ":
            i += 1
        elif code.startswith("--", i):
            return True
        elif code.startswith("/-", i) and not code.startswith(("/--", "/-!"), i):
            try:
                end = _Reader(code)._block_comment_end(i)
            except _Stop:
                return False
            if "\n" in code[i:end]:
                return False  # the comment runs on: the body starts inside it
            i = end
        else:
            return False
    return True


def _cut(code: str, commands: list[str], lines: list[int], columns: list[int], end: int) -> Split:
    line_start = code.rfind("\n", 0, end) + 1
    line_end = code.find("\n", end)
    line_end = len(code) if line_end < 0 else line_end
    if not _rest_of_line_is_trivia(code, end):
        # Something follows the header on its last line: the body starts on that line, the
        # header's characters blanked so that columns stay the file's.
        body = " " * (end - line_start) + code[end:]
        start = line_start
    else:
        # The body starts on the first line after the header with anything but spaces (as Kimina
        # cut it, so positions agree with its recordings).
        start = min(line_end + 1, len(code)) if end else 0
        while start < len(code):
            nl = code.find("\n", start)
            if code[start : len(code) if nl < 0 else nl].strip(" "):
                break
            start = len(code) if nl < 0 else nl + 1
        body = code[start:]
    return Split(
        header="\n".join(commands),
        body=body,
        line_offset=code.count("\n", 0, start),
        header_lines=tuple(lines),
        header_columns=tuple(columns),
    )
