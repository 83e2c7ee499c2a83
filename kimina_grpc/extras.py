"""Which optional dependencies each extra brings (pyproject's optional-dependencies), and the one line
that names the extra when one is missing. Modules are looked up, not imported.

kimina_grpc is not on PyPI: `pip install 'kimina_grpc[server]'` fails. The hint names what this
install came from (pip records it, PEP 610: the checkout or the wheel file), so its command runs as
printed; without that record, how to do it from a checkout or a wheel.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shlex
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

EXTRAS = {
    "server": (
        "pydantic",
        "pydantic_settings",
        "structlog",
        "psutil",
        "prometheus_client",
        "grpc_reflection",
        "redis",
        "psycopg",
    ),
    "bench": ("datasets", "matplotlib", "tqdm"),
    "log": ("psycopg", "pyarrow", "datasets"),
}


def installed_from() -> tuple[str, bool] | None:
    """The checkout folder or wheel file this kimina_grpc was installed from, when it still exists,
    and whether the install is editable; else the checkout this module runs from; else None."""
    records = (d.read_text("direct_url.json") for d in importlib.metadata.distributions(name="kimina_grpc"))
    record = next((r for r in records if r), None)  # a checkout's own .egg-info has none
    data = json.loads(record) if record else {}
    url = str(data.get("url", ""))
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        if path.exists():
            return str(path), bool(data.get("dir_info", {}).get("editable"))
    checkout = Path(__file__).resolve().parent.parent
    return (str(checkout), False) if (checkout / "pyproject.toml").is_file() else None


def _pip() -> str:
    """`pip` when the one on PATH is this interpreter's, else this interpreter's `python -m pip`."""
    found = shutil.which("pip")
    if found and Path(found).parent == Path(sys.executable).parent:
        return "pip"
    return f"{shlex.quote(sys.executable)} -m pip"


def install_command(extra: str) -> str:
    found = installed_from()
    if found is None:
        return (
            f"pip install '.[{extra}]' in a kimina_grpc checkout, or pip install "
            f"'kimina_grpc-VERSION-py3-none-any.whl[{extra}]' (kimina_grpc is not on PyPI)"
        )
    source, editable = found
    return f"{_pip()} install {'-e ' if editable else ''}{shlex.quote(f'{source}[{extra}]')}"


def hint(extra: str, module: str) -> str:
    return f"needs the {extra} extra ({module} is missing): {install_command(extra)}"


def missing(extra: str) -> str | None:
    """The first module of `extra` that is not installed, else None."""
    return next((m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None), None)


def missing_module(module: str) -> bool:
    """Whether `module` is not installed."""
    return importlib.util.find_spec(module) is None


def require(extra: str, what: str) -> None:
    """Raise ModuleNotFoundError naming the extra when `what` cannot run without it."""
    module = missing(extra)
    if module is not None:
        raise ModuleNotFoundError(f"{what} {hint(extra, module)}", name=module)
