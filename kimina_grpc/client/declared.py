"""The theorems a Lean file declares, as its text names them: for `kimina-grpc check`'s advice (a file
that declares none proves nothing by name) and for the name `check --trust audit` asks the server
to audit. Never a verdict: Lean and the server's audit decide whether the theorem exists and what it
depends on (a name this reading gets wrong is the audit's "missing-theorem", not VALID).
"""

from __future__ import annotations

import re

_BLOCK_COMMENT = re.compile(r"/-(?:(?!/-|-/).)*-/", re.S)  # innermost first: Lean's comments nest
_LINE_COMMENT = re.compile(r"--[^\n]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = r"[^\s:({\[⦃]+"
_TOKEN = re.compile(
    rf"^[ \t]*(?:(?P<open>namespace|section)\b[ \t]*(?P<scope>{_NAME})?"
    rf"|(?P<end>end)\b[ \t]*(?P<ended>{_NAME})?"
    r"|(?:@\[[^\]]*\][ \t]*)?(?:(?:private|protected|noncomputable|nonrec)[ \t]+)*"
    rf"(?:theorem|lemma)[ \t]+(?P<theorem>{_NAME}))",
    re.M,
)


def _code(text: str) -> str:
    """The text without comments and string literals (a `theorem` inside them declares nothing)."""
    while True:
        stripped = _BLOCK_COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return _STRING.sub('""', _LINE_COMMENT.sub("", text))


def theorem_names(text: str) -> list[str]:
    """Fully qualified names of the `theorem`s and `lemma`s declared, in order (namespaces applied)."""
    scopes: list[str | None] = []  # a namespace's name, or None for a section
    names = []
    for m in _TOKEN.finditer(_code(text)):
        if m.group("open"):
            scopes.append(m.group("scope") if m.group("open") == "namespace" else None)
        elif m.group("end"):
            if scopes:
                scopes.pop()
        else:
            name = m.group("theorem")
            if name.startswith("_root_."):
                names.append(name.removeprefix("_root_."))
            else:
                names.append(".".join([s for s in scopes if s] + [name]))
    return names
