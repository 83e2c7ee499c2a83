"""Header split: what is imported once per REPL, and how body lines map to the user's file."""

from __future__ import annotations

from kimina_grpc.repl import split_header


def test_imports_and_body() -> None:
    s = split_header("import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 0\ntheorem t : True := trivial\n")
    assert s.header == "import Mathlib\nimport Aesop"
    assert s.body.startswith("set_option maxHeartbeats 0\n")
    assert s.line_offset == 3
    assert s.header_lines == (1, 2)


def test_comments_before_and_between_imports() -> None:
    code = (
        "-- a file\n/- about\n   it /- nested -/ still\n-/\nimport A.B -- why\n\n/- plain -/\nimport C\n"
        "theorem t := 1\n"
    )
    s = split_header(code)
    assert s.header == "import A.B\nimport C"
    assert s.header_lines == (5, 8)
    assert s.body == "theorem t := 1\n"
    assert code.split("\n")[s.line_offset] == "theorem t := 1"


def test_a_doc_comment_is_a_token_and_ends_the_header() -> None:
    # Lean's `whitespace` stops at `/--` and `/-!`: the import after it is a command, an error.
    code = "import A\n/-- doc -/\nimport C\ntheorem t := 1\n"
    s = split_header(code)
    assert s.header == "import A"
    assert s.body == "/-- doc -/\nimport C\ntheorem t := 1\n" and s.line_offset == 1


def test_block_comment_spanning_lines_after_import_stays_in_body() -> None:
    code = "import A\n/- problem\nstatement -/\ntheorem t := 1"
    s = split_header(code)
    assert s.header == "import A"
    assert s.body == "/- problem\nstatement -/\ntheorem t := 1"
    assert s.line_offset == 1


def test_windows_line_endings() -> None:
    s = split_header("import A\r\nimport B\r\n\r\ntheorem t := 1\r\n")
    assert s.header == "import A\nimport B"
    assert s.body == "theorem t := 1\n"
    assert s.line_offset == 3


def test_no_imports() -> None:
    s = split_header("theorem t : True := trivial")
    assert (s.header, s.body, s.line_offset) == ("", "theorem t : True := trivial", 0)


def test_imports_only() -> None:
    s = split_header("import Mathlib\n")
    assert (s.header, s.body) == ("import Mathlib", "")
    s = split_header("import Mathlib")
    assert (s.header, s.body) == ("import Mathlib", "")


def test_import_inside_string_or_comment_after_header_is_body() -> None:
    code = 'import A\ndef s := "import B"\n-- import C\n/- import D -/\nimport E\n'
    s = split_header(code)
    assert s.header == "import A"
    assert "import E" in s.body and "import B" in s.body


def test_normalisation_whitespace_duplicates_never_widened() -> None:
    a = split_header("import   Mathlib.Data.Real.Basic\nimport Mathlib.Data.Real.Basic\ntheorem t := 1")
    b = split_header("import Mathlib.Data.Real.Basic\ntheorem t := 1")
    assert a.header == b.header == "import Mathlib.Data.Real.Basic"
    assert split_header("import Mathlib\ntheorem t := 1").header != a.header


def test_newer_header_commands() -> None:
    s = split_header(
        "module\n\nprelude\npublic import A\nmeta import B\npublic meta import C\nimport all D\ndef x := 1"
    )
    assert s.header.split("\n") == [
        "module",
        "prelude",
        "public import A",
        "meta import B",
        "public meta import C",
        "import all D",
    ]
    assert s.body == "def x := 1"
    # `prelude` after an import is not part of Lean's header: it and the rest are the body.
    s = split_header("import A\nprelude\ndef x := 1")
    assert s.header == "import A" and s.body == "prelude\ndef x := 1"


def test_word_starting_with_import_is_not_a_header() -> None:
    s = split_header("importance : Nat := 1")
    assert s.header == "" and s.line_offset == 0


def test_a_keyword_is_no_module_name() -> None:
    """`import theorem` is Lean's header error (the header parser's `ident` refuses a token), never an
    import of a module `theorem`; after `import all`, a keyword means `all` was the module."""
    s = split_header("import A\nimport theorem\ntheorem t := 1")
    assert s.header == "import A" and s.body.startswith("import theorem\n")
    s = split_header("import all\ntheorem t := 1")
    assert (s.header, s.body) == ("import all", "theorem t := 1")
    s = split_header("import Mathlib.Tactic theorem x := 1")  # a longer name is a name
    assert s.header == "import Mathlib.Tactic"
