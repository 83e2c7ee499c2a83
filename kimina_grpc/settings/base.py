"""What every group of settings shares: a field's docstring is its description (its row in
docs/configuration.md, written by scripts/gen_config_docs.py), and sizes read like `12G`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.fields import FieldInfo

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: Any) -> int:
    """'12G' -> bytes; a bare number is bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size like 12G or 512M: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _size(value: Any) -> Any:
    """Sizes read like 12G; empty or 0 means none where none is allowed."""
    if value is None or value == "":
        return None
    return parse_size(value) or None


Size = Annotated[int, BeforeValidator(_size)]
"""Bytes, written like `12G`, `512M` or a number of bytes."""
OptionalSize = Annotated[int | None, BeforeValidator(_size)]
"""Bytes, or none: unset, empty or `0`."""


def read_secret(path: Path, variable: str) -> str:
    """A secret from its file (a password, an API key), stripped; ValueError naming `variable` (and the
    file, never its content) when it cannot be read or is empty."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"LEAN_SERVER_{variable}: cannot read {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ValueError(f"LEAN_SERVER_{variable}: {path} is empty")
    return secret


def is_size(field: FieldInfo) -> bool:
    """Whether the field is a `Size` (the reference prints its default as `12G`)."""
    return any(isinstance(m, BeforeValidator) and m.func is _size for m in field.metadata)


class Group(BaseModel):
    """A group of settings, composed into `Settings` (composed.py), which reads them from the environment.

    A group's docstring is its heading in docs/configuration.md (scripts/gen_config_docs.py), each field's
    docstring its description there, and a field's `shown` the default as the page prints it, where the
    value alone would not say it. A group's validators check its own fields."""

    model_config = ConfigDict(use_attribute_docstrings=True)
