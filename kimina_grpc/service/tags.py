"""The contract's rules for caller tags (Proof.tags, VerifyRequest.tags): labels for the proof log,
bounded so a caller cannot make every row of it large."""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_TAGS = 32
MAX_VALUE_BYTES = 256
_KEY = re.compile(r"[A-Za-z0-9_.\-/:]{1,64}")


def check_tags(
    tags: Mapping[str, str], where: str, inherited: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """One violation per broken rule; `inherited` (the request's tags) counts towards the bound."""
    problems = []
    count = len(set(tags) | set(inherited or {}))
    if count > MAX_TAGS:
        problems.append((where, f"at most {MAX_TAGS} tags (with the request's), got {count}"))
    for key, value in tags.items():
        if not _KEY.fullmatch(key):
            problems.append((f"{where}[{key!r:.80}]", "a key is 1-64 ASCII letters, digits or _.-/:"))
        elif len(value.encode()) > MAX_VALUE_BYTES:
            problems.append((f"{where}[{key!r}]", f"a value is at most {MAX_VALUE_BYTES} bytes"))
    return problems
