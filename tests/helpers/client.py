"""The Python clients as tests use them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from kimina_grpc.client import AsyncKiminaClient


def count_calls(client: AsyncKiminaClient, method: str) -> Counter[str]:
    calls: Counter[str] = Counter()
    original = getattr(client._stub, method)

    def counting(*args: Any, **kw: Any) -> Any:
        calls[method] += 1
        return original(*args, **kw)

    setattr(client._stub, method, counting)
    return calls
