"""The stand-in REPL's own reading of a Lean file's header: which modules it imports, and where the
commands start. Written from Lean's grammar, apart from the server's `repl/header.py`, so that a
header bug in the server is not mirrored by its test double (tests/test_header_rule.py runs both).

Lean's header parser (`Lean.Parser.Module.header`, `Lean/Parser/Module.lean`):

    before 4.22:  header := ["prelude"] import*     import := "import" ["runtime"] ident
    4.22 on:      header := ["module"] ["prelude"] import*
                  import := atomic(["public"] ["meta"] "import") ["all"] ident

It runs with the builtin token table plus the header's own keywords: an identifier spelled like a
token is that token (so `import theorem` or, from 4.22, `import all` followed by a command is an error,
never an import). Between tokens, Lean's `whitespace` (`Lean/Parser/Basic.lean`): space, newline, `--`
to the end of the line, nested `/- -/` (but `/--` and `/-!` are doc-comment tokens); a tab, a carriage
return not before a newline, or an unterminated comment is an error.

Stricter than Lean where Lean would only add an error: an import that is not complete (a modifier
without a name, a keyword for a name, a trailing dot, a lexical error inside it) is not part of the
header here; it is left to the commands, where `import` is always an error. So a malformed header
never imports anything Lean would not, and always costs an error.
"""

from __future__ import annotations

from dataclasses import dataclass

# Tokens of Lean's builtin parsers that look like identifiers (commands, declaration modifiers, term
# syntax). Only these can end a module name; tactic names (`simp`, `exact`) are `syntax` declared in
# Init, not builtin, so they are names here.
_BUILTIN = frozenset(
    {
        # commands and declaration keywords (Lean/Parser/Command.lean)
        "abbrev", "axiom", "class", "def", "example", "inductive", "instance", "opaque", "structure",
        "theorem", "namespace", "section", "end", "open", "export", "universe", "variable",
        "set_option", "attribute", "mutual", "private", "protected", "noncomputable", "partial",
        "unsafe", "nonrec", "local", "scoped", "macro", "macro_rules", "syntax", "elab", "elab_rules",
        "notation", "infix", "infixl", "infixr", "prefix", "postfix", "initialize",
        "builtin_initialize", "deriving", "where", "extends", "omit", "include", "termination_by",
        "decreasing_by",
        # term syntax (Lean/Parser/Term.lean, Do.lean)
        "fun", "have", "show", "let", "if", "then", "else", "do", "match", "with", "at", "by", "from",
        "calc", "sorry", "Type", "Sort", "Prop", "in",
    }
)  # fmt: skip
_HEADER_OLD = frozenset({"prelude", "import", "runtime"})
_HEADER_MODULES = frozenset({"module", "prelude", "import", "public", "meta", "all"})


@dataclass(frozen=True, slots=True)
class Header:
    commands: tuple[str, ...]
    """Each header command, normalised (`public import Mathlib`), in order."""
    lines: tuple[int, ...]
    """The 1-based line each command starts on."""
    end: int
    """Index just after the header's last token (0 without a header): the commands start here."""


def read_header(code: str, *, modules: bool) -> Header:
    """The header of `code` (LF line ends) as Lean's parser reads it; `modules`: Lean 4.22 or later."""
    keywords = _BUILTIN | (_HEADER_MODULES if modules else _HEADER_OLD)
    commands: list[str] = []
    lines: list[int] = []
    end = 0

    def word(i: int | None) -> tuple[str, int]:
        """The identifier (or identifier-like token) at `i` and the index after it."""
        if i is None:
            return "", -1
        j = _ident_end(code, i)
        return code[i:j], j

    i = skip(code, 0)
    for single in ("module", "prelude") if modules else ("prelude",):
        text, j = word(i)
        if text == single:
            commands.append(single)
            lines.append(code.count("\n", 0, i) + 1)
            end, i = j, skip(code, j)
    while i is not None:
        start, parts = i, list[str]()
        text, j = word(i)
        for modifier in ("public", "meta") if modules else ():
            if text == modifier:
                parts.append(modifier)
                text, j = word(skip(code, j))
        if text != "import":
            break  # `atomic`: modifiers without `import` are no header command
        parts.append("import")
        text, j = word(skip(code, j))
        if text == ("all" if modules else "runtime"):
            parts.append(text)
            text, j = word(skip(code, j))
        if not text or text in keywords or (j < len(code) and code[j] == "."):
            break  # no name, a keyword, or a trailing dot: Lean's error, left to the commands
        parts.append(text)
        commands.append(" ".join(parts))
        lines.append(code.count("\n", 0, start) + 1)
        end, i = j, skip(code, j)
    return Header(tuple(commands), tuple(lines), end)


def skip(code: str, i: int) -> int | None:
    """Index of the next token from `i` (Lean's `whitespace`), or None at a lexical error."""
    stop, ok = scan(code, i)
    return stop if ok else None


def scan(code: str, i: int) -> tuple[int, bool]:
    """Where Lean's `whitespace` from `i` stops, and whether at a token (not a lexical error)."""
    n = len(code)
    while i < n:
        c = code[i]
        if c in " \n":
            i += 1
        elif code.startswith("--", i):
            newline = code.find("\n", i)
            i = n if newline < 0 else newline
        elif code.startswith("/-", i) and code[i + 2 : i + 3] not in ("-", "!"):
            start, depth, i = i, 1, i + 2
            while depth:
                if i >= n:
                    return start, False  # unterminated comment
                if code.startswith("/-", i):
                    depth, i = depth + 1, i + 2
                elif code.startswith("-/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            return i, c not in "\t\r"
    return i, True


def _letter_like(c: str) -> bool:
    """Lean's `isLetterLike` (Init/Meta.lean): Greek (not λ Π Σ), Coptic, letter-like symbols, math
    alphanumerics."""
    o = ord(c)
    greek = (0x3B1 <= o <= 0x3C9 and o != 0x3BB) or (0x391 <= o <= 0x3A9 and o not in (0x3A0, 0x3A3))
    return greek or 0x3CA <= o <= 0x3FB or 0x1F00 <= o <= 0x1FFE or 0x2100 <= o <= 0x214F or 0x1D49C <= o <= 0x1D59F


def _first(c: str) -> bool:
    return (c.isascii() and (c.isalpha() or c == "_")) or _letter_like(c)


def _rest(c: str) -> bool:
    o = ord(c)
    subscript = 0x2080 <= o <= 0x2089 or 0x2090 <= o <= 0x209C or 0x1D62 <= o <= 0x1D6A
    return _first(c) or (c.isascii() and c.isdigit()) or c in "'!?" or subscript


def _ident_end(code: str, i: int) -> int:
    """Index after the (dotted, possibly «escaped») identifier at `i`; `i` when there is none."""
    n, j = len(code), i
    while j < n:
        if code[j] == "«":
            close = code.find("»", j + 1)
            if close < 0:
                return i
            k = close + 1
        elif _first(code[j]):
            k = j + 1
            while k < n and _rest(code[k]):
                k += 1
        else:
            return i
        if k + 1 < n and code[k] == "." and (code[k + 1] == "«" or _first(code[k + 1])):
            j = k + 1
            continue
        return k
    return i
