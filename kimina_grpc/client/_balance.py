"""Which backend gets a proof: a pure policy, no I/O, no clock (tests drive it with plain values).

- **Header affinity** (rendezvous, highest-random-weight hashing): each backend scores
  `hash(backend, header)`; a header's preferred backends are the highest scores among the ready
  ones. Every client, in every process, ranks the same way without talking to another, and a
  backend that comes or goes moves only the headers it ranked first.
- A proof goes to its header's first backend while that backend's window has room. When it is full,
  the proof spills to the next backend in the header's ranking that has an idle REPL (fewer proofs in
  flight than REPLs): spill only uses capacity that would idle otherwise, so N replicas do not all
  import every header. When none qualifies the proof waits for a slot.
- **Without affinity**: join-the-shortest-queue, the ready backend with the most free room.

The header key is a client-side approximation of the server's header split (the leading `import`
lines, comments and blank lines skipped): a wrong key costs only an import, never a verdict.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_COMMENT = re.compile(r"--[^\n]*|/-(?![-!]).*?-/", re.DOTALL)
_IMPORT = re.compile(r"^(?:(?:public|meta)\s+)*import\s+(?:(?:all|runtime)\s+)?[^\s]+$")


def header_key(code: str) -> str:
    """The import lines at the top of `code`, normalised (one per line, duplicates dropped)."""
    lines: list[str] = []
    for raw in _COMMENT.sub(" ", code).splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        if line in ("module", "prelude") or _IMPORT.match(line):
            if line not in lines:
                lines.append(line)
            continue
        break
    return "\n".join(lines)


def score(backend: str, key: str) -> int:
    """The rendezvous weight of `backend` for header `key` (stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(f"{backend}\0{key}".encode(), digest_size=8).digest(), "big")


def rank(key: str, backends: Sequence[str]) -> list[str]:
    """`backends` from the most to the least preferred for header `key`."""
    return sorted(backends, key=lambda b: (-score(b, key), b))


@dataclass(frozen=True, slots=True)
class Load:
    """What the policy knows of one backend during a call."""

    name: str
    ready: bool
    """SERVING and connected: may get new proofs (a draining or lost backend only finishes its own)."""
    in_flight: int
    """This call's proofs sent to it and not answered yet."""
    window: int
    """At most this many of this call's proofs in flight there."""
    repls: int
    """Its REPLs (GetServerInfo.max_repls); fewer proofs in flight than this means a REPL idles."""

    @property
    def free(self) -> int:
        return self.window - self.in_flight


@dataclass(frozen=True, slots=True)
class Choice:
    backend: str
    spilled: bool
    """Not the header's preferred backend (which was full)."""


@dataclass(frozen=True, slots=True)
class Balancer:
    affinity: bool = True

    def choose(self, key: str, loads: Sequence[Load]) -> Choice | None:
        """Where a proof of header `key` goes now, or None: wait until a slot frees."""
        ready = [load for load in loads if load.ready]
        if not ready:
            return None
        ranked = rank(key, [load.name for load in ready])
        by_name = {load.name: load for load in ready}
        if not self.affinity:
            best = max(ready, key=lambda load: (load.free, -ranked.index(load.name)))
            return Choice(best.name, spilled=False) if best.free > 0 else None
        first = by_name[ranked[0]]
        if first.free > 0:
            return Choice(first.name, spilled=False)
        for name in ranked[1:]:
            load = by_name[name]
            if load.free > 0 and load.in_flight < load.repls:
                return Choice(name, spilled=True)
        return None


def backend_window(window: int, repls: int, depth: int = 2) -> int:
    """A backend's share of a call's window: `depth` proofs per REPL (one running, the next queued
    so the REPL never waits for the network), at most `window`. `repls` 0 (unknown): `window`."""
    return window if repls < 1 else max(1, min(window, depth * repls))
