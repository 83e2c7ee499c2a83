"""Which backend gets a proof: a pure policy, no I/O, no clock (tests drive it with plain values).

- **Header affinity** (rendezvous, highest-random-weight hashing, with bounded loads): each backend
  scores `hash(backend, header)`; a header's ranking is the ready backends by score. Its owner is the
  first backend in its ranking that owns fewer than its share of the headers seen (`ceil(headers /
  backends)`), chosen when the header is first seen and kept while that backend is ready: one header
  always goes where every client sends it (its top score), 3 headers over 3 backends get one each
  (plain hashing would put two on one backend 7 times in 9), and a backend that comes or goes moves
  only its own headers.
- A proof goes to its header's owner while that backend's window has room. When it is full, the
  proof spills to the next backend in the header's ranking that has an idle REPL (fewer proofs in
  flight than REPLs), else to the backend with the most free room among those that own no header
  waiting in this call: spill uses capacity that would idle otherwise, so N replicas do not all
  import every header, and one header's batch still fills the cluster. When none qualifies the
  proof waits for a slot.
- **Without affinity**: join-the-shortest-queue, the ready backend with the most free room.

The header key is a client-side approximation of the server's header split (the leading `import`
lines, comments and blank lines skipped): a wrong key costs only an import, never a verdict.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Collection, Sequence
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
    return list(_rank(key, tuple(sorted(backends))))


@functools.lru_cache(maxsize=4096)
def _rank(key: str, backends: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(backends, key=lambda b: (-score(b, key), b)))


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


class Balancer:
    """The policy; it remembers each header's owner (at most `max_headers`, the least recent dropped)."""

    def __init__(self, affinity: bool = True, max_headers: int = 10_000) -> None:
        self.affinity = affinity
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._max_headers = max_headers

    def owner(self, key: str, ready: Sequence[str]) -> str:
        """The backend that owns header `key` among the `ready` ones (assigned on first sight)."""
        owner = self._owners.get(key)
        if owner is None or owner not in ready:
            live = [o for k, o in self._owners.items() if o in ready and k != key]
            share = math.ceil((len(live) + 1) / len(ready))
            owner = next(b for b in rank(key, ready) if live.count(b) < share)
            self._owners[key] = owner
            while len(self._owners) > self._max_headers:
                self._owners.popitem(last=False)
        self._owners.move_to_end(key)
        return owner

    def choose(self, key: str, loads: Sequence[Load], claimed: Collection[str] = ()) -> Choice | None:
        """Where a proof of header `key` goes now, or None: wait until a slot frees. `claimed`: the
        backends that own a header with proofs waiting in this call (they keep their room for it)."""
        ready = [load for load in loads if load.ready]
        if not ready:
            return None
        ranked = rank(key, [load.name for load in ready])
        by_name = {load.name: load for load in ready}
        if not self.affinity:
            best = max(ready, key=lambda load: (load.free, -ranked.index(load.name)))
            return Choice(best.name, spilled=False) if best.free > 0 else None
        first = by_name[self.owner(key, ranked)]
        if first.free > 0:
            return Choice(first.name, spilled=False)
        for name in ranked:
            load = by_name[name]
            if name != first.name and load.free > 0 and load.in_flight < load.repls:
                return Choice(name, spilled=True)
        unclaimed = [load for load in ready if load.name not in claimed and load.free > 0]
        if unclaimed:  # nobody else's header waits for it: fill it (shortest queue first)
            best = max(unclaimed, key=lambda load: (load.free, -ranked.index(load.name)))
            return Choice(best.name, spilled=True)
        return None


def backend_window(window: int, repls: int, depth: int = 4) -> int:
    """A backend's share of a call's window: `depth` proofs per REPL (one running, the next ones
    queued so the REPL never waits for the network, even for proofs shorter than a round trip on
    a busy machine), at most `window`. `repls` 0 (unknown): `window`."""
    return window if repls < 1 else max(1, min(window, depth * repls))
