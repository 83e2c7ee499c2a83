"""How the stand-in recognises Lean text: the patterns of the commands and directives it
understands (line by line, not a parser), and the errors of Lean's tokenizer for characters it refuses
between tokens."""

from __future__ import annotations

import re
from typing import Any

from kimina_grpc.testing.fake_messages import msg

DECL = re.compile(
    r"^\s*(?:@\[[^\]]*\]\s*)?(?:(?:private|protected|noncomputable|nonrec)\s+)*"
    r"(?:theorem|lemma|def|abbrev|instance|structure|inductive|class|axiom)\s+([^\s:({\[]+)",
    re.M,
)
DIRECTIVE = re.compile(r"^\s*--\s*fake:\s*(\S+)\s*(.*?)\s*$")
IMPORT = re.compile(r"^\s*(?:public\s+)?(?:meta\s+)?import(?![\w'.!?])")
HEADER_WORD = re.compile(r"^\s*(?:module|prelude)\s*$")  # a header keyword where a command should be
INVALID_IMPORT = "invalid 'import' command, it must be used in the beginning of the file"
SORRY = re.compile(r"(?<![\w.'])sorry(?![\w'])")
SET_OPTION = re.compile(r"(?<![\w.])set_option\s+(\S+)\s+(\S+)(\s+in\b)?")
PROOF = re.compile(r"^(\s*(?:@\[[^\]]*\]\s*)?(?:(?:private|protected|noncomputable)\s+)*)(?:theorem|lemma|example)\b")
PRINT_AXIOMS = re.compile(r"#print\s+axioms\s+(\S+)")
CHECK = re.compile(r"#check\s+(@?)(\S+)")
NAMESPACE = re.compile(r"^\s*(namespace|end)\s+(\S+)\s*$")
VARIABLE = re.compile(r"^\s*variable\s+[({\[]\s*(\S+)\s*:\s*(.*?)\s*[)}\]]\s*$")


# Lean's `whitespace` (Lean/Parser/Basic.lean): between tokens only space and newline (CR before
# newline) are whitespace; a tab or a lone CR is an error, and a character that starts no token (NBSP,
# U+2028) is one too. Inside comments and string literals anything goes.
_LEXICAL = {
    "\t": "tabs are not allowed; please configure your editor to expand them",
    "\r": "isolated carriage returns are not allowed",
    "\u00a0": "unexpected token",
    "\u2028": "unexpected token",
}


def lexical_errors(code: str, first: int) -> list[dict[str, Any]]:
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
            errors.append(msg("error", line, column, _LEXICAL[c]))
            break  # Lean stops at the first: the rest of the command does not parse
        if c == "\n":
            line, column = line + 1, 0
        else:
            column += 1
        i += 1
    return errors
