"""Which optional dependencies each extra brings (pyproject's optional-dependencies), and the one line
that names the extra when one is missing. Modules are looked up, not imported."""

from __future__ import annotations

import importlib.util

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


def hint(extra: str, module: str) -> str:
    return f"needs the {extra} extra ({module} is missing): pip install 'kimina_grpc[{extra}]'"


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
