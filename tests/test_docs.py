"""The documentation: the configuration reference is generated from the settings class and in sync with
it, documents every variable the README's configuration table used to, the README is a front page
whose links all resolve, and every file or module the pages and comments name exists."""

from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
import sys
import tokenize

from kimina_grpc.settings import Settings

from .helpers.paths import ROOT

REFERENCE = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"

# Every variable of the README's configuration table before it moved to docs/configuration.md
# (its `A` / `_B` rows spelled out).
README_TABLE = re.findall(
    r"\S+",
    """
HOST PORT LOG_LEVEL ENVIRONMENT LEAN_VERSION WORKSPACE REPL_PATH PROJECT_DIR REPL_COMMAND
AST_EXPORT_PROJECT_DIR AST_EXPORT_BIN AST_EXPORT_COMMAND MAX_AST_JOBS MAX_REPLS SPARE_REPLS MAX_REPL_USES
MAX_REPL_MEM MAX_REPL_RSS MIN_FREE_MEMORY INIT_REPLS MAX_CONCURRENT_IMPORTS IMPORT_COST_HINT MAX_WAIT
DEFAULT_TIMEOUT MAX_TIMEOUT MIN_TIMEOUT DEFAULT_TRUST MAX_CODE_BYTES MAX_BATCH MAX_QUEUE MAX_QUEUE_BYTES
STREAM_WINDOW SESSIONS_MAX SESSIONS_PER_REPL SESSION_REPLS SESSION_IDLE_SECONDS SESSION_MAX_STATES
API_KEY_FILE API_KEY AUTH TLS_CERT TLS_KEY TLS_CLIENT_CA HEALTH_PORT SANDBOX SANDBOX_TMP_SIZE SANDBOX_HIDE
SANDBOX_UID REPL_ENV_ALLOW MAX_REPL_FILE_SIZE MAX_REPL_PROCS MAX_MESSAGE_BYTES MAX_REPLY_BYTES
MAX_REPLY_MESSAGES MAX_DECODING_BYTES KEEPALIVE_SECONDS MAX_CONNECTION_AGE DRAIN_SECONDS GRACE_SECONDS
METRICS_PORT METRICS_HOST REFLECTION CACHE_ENABLED CACHE_MAX_BYTES CACHE_MAX_ENTRY_BYTES CACHE_URL CACHE_TTL
CACHE_TIMEOUT CACHE_RETRY_SECONDS CACHE_PASSWORD_FILE DATABASE_URL DATABASE_PASSWORD_FILE DATABASE_MIGRATE
DATABASE_TIMEOUT DATABASE_RETRY_SECONDS LOG_SPOOL_DIR LOG_SPOOL_MAX_BYTES LOG_BATCH_SIZE LOG_FLUSH_SECONDS
LOG_MAX_PENDING LOG_RETENTION_DAYS CACHE_ALLOW_UNBOXED
""",
)


def _documented() -> dict[str, tuple[str, str]]:
    """Variable -> (default, meaning), as the reference's tables list them."""
    rows = re.findall(r"^\| `(LEAN_SERVER_[A-Z0-9_]+)` \| `([^`]*)` \| (.+) \|$", REFERENCE.read_text(), re.M)
    return {name: (default, meaning) for name, default, meaning in rows}


def test_the_configuration_reference_is_what_the_settings_class_generates() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_every_variable_of_the_old_readme_table_is_in_the_reference() -> None:
    documented = _documented()
    missing = [name for name in README_TABLE if f"LEAN_SERVER_{name}" not in documented]
    assert not missing


def test_every_setting_is_in_the_reference_with_its_docstring() -> None:
    documented = _documented()
    for name, info in Settings.model_fields.items():
        variable = f"LEAN_SERVER_{name.upper()}"
        assert info.description, name
        assert variable in documented, variable
        assert documented[variable][1] == " ".join(info.description.split()).replace("|", "\\|")
    assert len(documented) == len(Settings.model_fields)


def test_sizes_and_derived_defaults_read_as_an_operator_writes_them() -> None:
    documented = _documented()
    assert documented["LEAN_SERVER_MAX_REPL_MEM"][0] == "12G"
    assert documented["LEAN_SERVER_MAX_REPLS"][0] == "CPUs − 1 (≥ 1)"
    assert documented["LEAN_SERVER_TLS_CERT"][0] == "unset"
    assert documented["LEAN_SERVER_CACHE_ENABLED"][0] == "true"


def test_the_readme_is_a_front_page_with_the_two_commands_first() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    first_section = text.split("\n## ", 2)[1]
    assert first_section.startswith("The two commands")
    assert "    make setup serve\n" in first_section and "    make setup test\n" in first_section
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^setup:", makefile, re.M) and re.search(r"^serve:", makefile, re.M)
    assert re.search(r"^test:", makefile, re.M) and "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve()
            if not resolved.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken


def test_every_docs_page_is_one_click_from_the_readme() -> None:
    linked = set(re.findall(r"\]\(docs/([^)#]+)", README.read_text()))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, pages - linked


# The README's sections before it became a front page: each is now a heading of a docs page.
MOVED_SECTIONS = [
    "Installing",
    "Lean workspace",
    "Using it",
    "Reward functions for RL trainers",
    "Coming from Kimina",
    "Interactive proof sessions (`ProofSession`)",
    "Syntax trees (`ExportAst`)",
    "Health and Kubernetes",
    "Configuration",
    "Untrusted code, secrets and TLS",
    "How a proof is checked",
    "How much to trust VALID",
    "Never the same proof twice (`kimina_grpc/cache/`)",
    "Every checked proof on record (`kimina_grpc/prooflog/`)",
    "Benchmarks",
    "Status",
]


def test_every_moved_section_is_one_click_from_the_readme() -> None:
    readme = README.read_text()
    for title in MOVED_SECTIONS:
        pages = [
            p for p in (ROOT / "docs").glob("*.md") if re.search(rf"^##? {re.escape(title)}$", p.read_text(), re.M)
        ]
        assert pages, title
        anchor = _anchor(title)
        assert any(f"](docs/{p.name})" in readme or f"](docs/{p.name}#{anchor})" in readme for p in pages), title


def _anchor(head: str) -> str:
    return re.sub(r"[^\w\- ]", "", head.lower()).replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    heads = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {_anchor(head) for head in heads}


def test_make_test_leaves_the_slow_tests_out_unless_asked_and_ci_runs_them() -> None:
    # Under `make test-all` (CI) this runs inside make: its command-line variables (SLOW=1) reach a
    # child make through MAKEFLAGS, so the dry runs get an environment without them.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SLOW"}}

    def dry_run(*args: str) -> str:
        done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True, env=env)
        return done.stdout

    assert '-m "not slow"' in dry_run("test")
    assert "not slow" not in dry_run("test", "SLOW=1") and "not slow" not in dry_run("test-all")
    assert re.search(r"^make test-all$", (ROOT / ".ci" / "run").read_text(), re.M)


# A repository path as prose writes it: `kimina_grpc/repl/driver.py`, tests/test_docs.py, `deploy/kubernetes/`;
# a placeholder in capitals (bench/results/NAME.json) stands for no one file.
_REPO_PATH = re.compile(
    r"(?<![\w./-])((?:kimina_grpc|tests|bench|clients|scripts|tools|deploy|protos|docs)/[\w./-]*[\w/])(?![\w(])"
)
# A dotted name in the package: `kimina_grpc.testing.fake_repl`, kimina_grpc.settings.lean (but the
# contract's names, kimina_grpc.v1.VerifierService, are the .proto's).
_DOTTED = re.compile(r"(?<![\w.])kimina_grpc(?:\.\w+)+")


# A module named alone on a page: `pool.py` (some file of the repository has that name).
_BARE_MODULE = re.compile(r"`(\w+\.py)`")


def _prose() -> dict[str, str]:
    """The pages (README, docs/, the Kubernetes guide) and the comments and docstrings of the code."""
    pages = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "kubernetes" / "README.md"]
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in pages}
    for folder in ("kimina_grpc", "tests", "bench", "clients", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "v1" not in path.relative_to(ROOT).parts:
                texts[str(path.relative_to(ROOT))] = _comments_and_docstrings(path.read_text())
    return texts


def _comments_and_docstrings(source: str) -> str:
    """What a module says in words: its comments and its triple-quoted strings."""
    said = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and token.string.endswith('"""')):
            said.append(token.string)
    return "\n".join(said)


def _resolves(dotted: str) -> bool:
    """A module of the package, or a name one of its modules defines."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ROOT.joinpath(*parts[:cut])
        if not (module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()):
            continue
        found: object = importlib.import_module(".".join(parts[:cut]))
        for name in parts[cut:]:
            if not hasattr(found, name):
                return False
            found = getattr(found, name)
        return True
    return False


def _stale(texts: dict[str, str]) -> list[str]:
    """The files, modules and names the texts mention that the repository does not have."""
    modules = {
        p.name
        for folder in ("kimina_grpc", "tests", "bench", "clients", "scripts")
        for p in (ROOT / folder).rglob("*.py")
    }
    stale = []
    for where, text in texts.items():
        for path in _REPO_PATH.findall(text):
            placeholder = any(w.isupper() and w != "README" for w in re.findall(r"[A-Za-z]+", path))
            if not placeholder and not (ROOT / path.rstrip(".")).exists():
                stale.append(f"{where}: {path}")
        for dotted in _DOTTED.findall(text):
            if not dotted.startswith("kimina_grpc.v1.") and not _resolves(dotted.rstrip(".")):
                stale.append(f"{where}: {dotted}")
        if where.endswith(".md"):
            stale += [f"{where}: {name}" for name in _BARE_MODULE.findall(text) if name not in modules]
    return stale


def test_every_file_and_module_the_prose_names_exists() -> None:
    """A renamed or split module leaves no page or comment pointing at its old place."""
    stale = _stale(_prose())
    assert not stale, "\n".join(stale)


def test_a_page_naming_a_moved_module_is_stale() -> None:
    page = (
        "Settings in `kimina_grpc/settings.py`, the URL in kimina_grpc.prooflog.url, the rewards in "
        "`rewards.py`, the stand-in in `kimina_grpc.testing.fake_repl.Simulator` and `fake_repl.py`."
    )
    assert _stale({"page.md": page}) == [
        "page.md: kimina_grpc/settings.py",
        "page.md: kimina_grpc.prooflog.url",
        "page.md: rewards.py",
    ]
