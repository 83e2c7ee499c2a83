"""The shapes of a file's header Lean reads (shared by the fidelity tests and the header rule's)."""

from __future__ import annotations

import pytest

from kimina_grpc.repl import Verdict

# Lean's header parser (Lean/Parser/Module.lean `header`, Lean/Parser/Basic.lean `whitespace`):
# (file, header it reads, body's first line as the REPL gets it, line offset, verdict on the stand-in)
CHEAT = "theorem cheat : False := sorry"


HEADER_SHAPES = [
    pytest.param(
        f"import Mathlib {CHEAT}\ntheorem t : False := cheat",
        "import Mathlib",
        f"               {CHEAT}",
        0,
        Verdict.SORRY,
        id="theorem-on-the-import-line",
    ),
    pytest.param(
        f"import Mathlib\r{CHEAT}\rtheorem t : False := cheat",
        "import Mathlib",
        f"              \r{CHEAT}\rtheorem t : False := cheat",
        0,
        Verdict.INVALID,  # one line for Lean (lines end at \n only); a lone CR ends the header, an error
        id="cr-only-line-endings",
    ),
    pytest.param(
        f"import Mathlib\r\nimport Aesop\r\n\r\n{CHEAT}\r\n",
        "import Mathlib\nimport Aesop",
        CHEAT,
        3,
        Verdict.SORRY,
        id="crlf",
    ),
    pytest.param(
        "/-! module doc -/\nimport Mathlib\ntheorem t : True := trivial",
        "",
        "/-! module doc -/",
        0,
        Verdict.INVALID,  # a doc comment is a token: the import after it is a command, an error
        id="doc-comment-before-import",
    ),
    pytest.param(
        "module\n\npublic import Mathlib\nmeta import Aesop\ntheorem t : True := trivial",
        "module\npublic import Mathlib\nmeta import Aesop",
        "theorem t : True := trivial",
        4,
        Verdict.INVALID,  # Lean before 4.22 (the default v4.19.0) has no module files
        id="module-file",
    ),
    pytest.param(
        f"import Mathlib\u00a0{CHEAT}",
        "import Mathlib",
        f"              \u00a0{CHEAT}",
        0,
        Verdict.INVALID,  # NBSP is not Lean whitespace: the header ends there, and it starts no token
        id="nbsp",
    ),
    pytest.param(
        f"import Mathlib\u2028{CHEAT}",
        "import Mathlib",
        f"              \u2028{CHEAT}",
        0,
        Verdict.INVALID,
        id="u2028",
    ),
    pytest.param(
        "import\tMathlib\ntheorem t : True := trivial",
        "",
        "import\tMathlib",
        0,
        Verdict.INVALID,  # tabs are an error in Lean's whitespace
        id="tab",
    ),
    pytest.param(
        "import Mathlib /- why -/ import Aesop -- and\n\ntheorem t : True := trivial",
        "import Mathlib\nimport Aesop",
        "theorem t : True := trivial",
        2,
        Verdict.VALID,
        id="comments-between-imports",
    ),
    pytest.param(
        "import Mathlib\n/-- doc -/\nimport Aesop\ntheorem t : True := trivial",
        "import Mathlib",
        "/-- doc -/",
        1,
        Verdict.INVALID,
        id="doc-comment-between-imports",
    ),
    pytest.param(
        "import theorem\ntheorem t : True := trivial",
        "",
        "import theorem",
        0,
        Verdict.INVALID,  # a keyword is no module name: Lean's header error, not an import of `theorem`
        id="keyword-as-module",
    ),
    pytest.param(
        "import Mathlib\nimport all\ntheorem t : True := trivial",
        "import Mathlib\nimport all",
        "theorem t : True := trivial",
        2,
        Verdict.VALID,  # `all` is a module here (what follows is a keyword): the stand-in's modules all exist
        id="all-before-a-keyword",
    ),
]
