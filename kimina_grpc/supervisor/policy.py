"""Where REPLs go: when one leaves its header for another, and where the warm spares wait. Pure
policy over a snapshot of the pool (`spare_plan` for the spares, at the end).

The pool is a polling system with switch-over times: REPLs are the servers, headers the queues,
and moving a REPL to another header costs an import (seconds of dead time, 10–20 s for Mathlib).
Its rule is **exhaustive service with a starvation bound**:

- A REPL keeps serving its header while that header has queued work (exhaustive service: the
  fewest switch-overs, so the least time lost to imports). A REPL whose header has nothing queued
  is free and goes where the work is (the pool's conversion rule, outside this module).
- It leaves a header that still has work only after serving it for `FAIR_IMPORTS` imports' worth
  (a visit pays for its import), and only for a header with no REPL at all that *starves*:
  one whose wait (since its oldest queued proof came, or since a proof of it last started on a
  REPL, whichever is later) has reached `FAIR_IMPORTS` imports' worth, or whose oldest proof would
  otherwise pass `MAX_WAIT` (its wait plus an import and a proof reach the bound). The one that has
  waited longest goes first; a header about to pass `MAX_WAIT` before any other.
- The wait is measured from the header's last service, not from its proofs' arrival: a header a
  REPL just left has its clock reset, so the displaced header does not starve at once and take a
  REPL straight back (the thrash of 3 headers on 2 REPLs, where nearly every proof paid an import).
  Headers outnumbering REPLs for long are served in turn, each turn at least `FAIR_IMPORTS`
  imports long: at most about 1/`FAIR_IMPORTS` of the pool's time goes to switch-over imports.
- A header about to pass `MAX_WAIT` takes a REPL whatever its visit's length (the bound is the
  operator's). A proof that asked for a REPL of its own (`reuse=false`) waits one import and takes
  any idle REPL: its visit is one proof, after which the REPL's header is imported back (the pool
  keeps its strength), so waiting longer would save no import.

Nothing here starts a process, reads a clock or touches the event loop: the `Scheduler` builds a
`Snapshot` and applies the `Switch`es it gets back. Also here: where the warm spares go
(`spare_plan`), where new and idle REPLs go (`neediest`, `worth_converting`, `move_target`), and when
a REPL is recycled (`use_limit`, `used_up`, `expires_soon`; the random draw is passed in).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from kimina_grpc.supervisor.jobs import PoolKey

# A header with no REPL takes one from a header that still has work after this many imports' worth
# of waiting: the switch-over's import is then at most this fraction of the time it waited.
FAIR_IMPORTS = 8.0


@dataclass(frozen=True, slots=True)
class Waiting:
    """A header with queued proofs."""

    key: PoolKey
    oldest: float
    """When its oldest queued proof was submitted."""
    repls: int
    """Its REPLs, in any state (starting, idle, busy)."""
    served: float | None = None
    """When a proof of this header last started on a REPL (None: not since it was last forgotten)."""


@dataclass(frozen=True, slots=True)
class Idle:
    """An idle REPL that could switch headers."""

    id: str
    key: PoolKey
    queued: int
    """Proofs of its header waiting."""
    repls: int
    """REPLs of its header, this one included."""
    idle_since: float = 0.0
    arrived: float = 0.0
    """When it became warm for its header (its visit began)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    import_cost: float
    """Seconds an import takes (the pool's running mean)."""
    proof_cost: float
    """Seconds a proof takes (the pool's running mean)."""
    max_wait: float
    """LEAN_SERVER_MAX_WAIT (0: no bound)."""
    import_slots: int
    """Imports that may start now (LEAN_SERVER_MAX_CONCURRENT_IMPORTS less those running)."""
    waiting: tuple[Waiting, ...]
    idle: tuple[Idle, ...]


@dataclass(frozen=True, slots=True)
class Switch:
    """Retire idle REPL `repl` and start one for `to` in its place."""

    repl: str
    to: PoolKey


@dataclass(frozen=True, slots=True)
class SwitchPolicy:
    fair_imports: float = FAIR_IMPORTS

    def waited(self, w: Waiting, now: float) -> float:
        """How long the header has gone without service."""
        since = w.oldest if w.served is None else max(w.oldest, w.served)
        return now - since

    def urgent(self, w: Waiting, snap: Snapshot) -> bool:
        """Its oldest proof passes MAX_WAIT unless a REPL starts importing for it now."""
        return snap.max_wait > 0 and snap.now - w.oldest + snap.import_cost + snap.proof_cost >= snap.max_wait

    def bound(self, key: PoolKey, snap: Snapshot) -> float:
        """How long a header with no REPL waits before it takes one from a header with work. A
        `fresh` key (a proof that asked for a REPL of its own) waits one import: its REPL serves one
        proof and goes back, so waiting longer saves no import."""
        return snap.import_cost if key.fresh else self.fair_imports * snap.import_cost

    def starving(self, snap: Snapshot) -> list[PoolKey]:
        """Headers with no REPL that may take one from a header with work, most urgent first."""
        ranked = [
            (not self.urgent(w, snap), w.oldest if self.urgent(w, snap) else -self.waited(w, snap.now), w.key.header, w)
            for w in snap.waiting
            if w.repls == 0 and (self.urgent(w, snap) or self.waited(w, snap.now) >= self.bound(w.key, snap))
        ]
        return [w.key for *_, w in sorted(ranked, key=lambda r: r[:3])]

    def switches(self, snap: Snapshot) -> list[Switch]:
        """Idle REPLs to move to starving headers, one each, within the import slots. A REPL whose
        header has nothing queued goes first, then one whose header keeps another REPL, then the
        one whose header has the least queued per REPL; the longest idle breaks ties."""
        out: list[Switch] = []
        free = list(snap.idle)
        left: dict[PoolKey, int] = {}  # REPLs each header has lost to the switches chosen so far

        def order(i: Idle) -> tuple[bool, bool, float, float, str]:
            repls = i.repls - left.get(i.key, 0)
            return (i.queued > 0, repls < 2, i.queued / repls, i.idle_since, i.id)

        fair = self.fair_imports * snap.import_cost
        urgent = {w.key for w in snap.waiting if self.urgent(w, snap)}
        for key in self.starving(snap):
            if len(out) >= snap.import_slots or not free:
                break
            movable = (
                i
                for i in free
                if i.key != key and (not i.queued or key in urgent or key.fresh or snap.now - i.arrived >= fair)
            )
            pick = min(movable, key=order, default=None)
            if pick is None:
                continue
            free.remove(pick)
            left[pick.key] = left.get(pick.key, 0) + 1
            out.append(Switch(pick.id, key))
        return out


def spare_plan(
    spare_repls: int,
    working: dict[PoolKey, int],
    queued: dict[PoolKey, int],
    spares: dict[PoolKey, int],
    expiring: dict[PoolKey, int] | None = None,
    *,
    cold: Collection[PoolKey] = (),
) -> tuple[list[PoolKey], list[PoolKey]]:
    """Where the warm spares go (LEAN_SERVER_SPARE_REPLS): to the headers in use, one at a time to
    the header with the most working REPLs per spare (a header's REPLs die and are recycled in
    proportion to how many it has), ties to the one with fewer spares, then more queued. A header
    in use has working REPLs or queued proofs; `fresh` keys never get spares (their REPLs serve
    one proof). First of all, each working REPL about to reach MAX_REPL_USES (`expiring`: within
    an import's worth of proofs of it) has a spare of its header: its successor is started ahead,
    so the swap at the limit is immediate (recycling before the limit, within the spares).
    No spare is started for a `cold` header (in use, but none of its working REPLs has imported it
    yet): a standby waits until its header has imported once, so a header whose imports fail (Lean
    rejects it, the OOM killer) does not pay every failure twice; its spares already there are kept.
    Returns (headers to start a spare for, headers to retire one spare of), so the spares follow
    the demand: a spare of a header no longer in use is retired, its memory given back."""
    demand = {
        k: (working.get(k, 0), queued.get(k, 0))
        for k in set(working) | set(queued)
        if not k.fresh and (working.get(k, 0) or queued.get(k, 0))
    }
    target: dict[PoolKey, int] = {}
    for key in sorted(expiring or {}, key=lambda k: (-(expiring or {})[k], k.header)):
        if key in demand:
            target[key] = min((expiring or {})[key], spare_repls - sum(target.values()))
    for _ in range(spare_repls - sum(target.values()) if demand else 0):
        key = max(
            sorted(demand, key=lambda k: k.header),
            key=lambda k: (max(demand[k][0], 1) / (target.get(k, 0) + 1), -target.get(k, 0), demand[k][1]),
        )
        target[key] = target.get(key, 0) + 1
    # A spare of a header still in use is kept even when the target moved (each move costs an
    # import): only spares of headers out of use, or beyond the count, are retired.
    retire = [k for k in sorted(spares, key=lambda k: k.header) if k not in demand for _ in range(spares[k])]
    kept = {k: n for k, n in spares.items() if k in demand}
    over = sum(kept.values()) - spare_repls
    for k in sorted(kept, key=lambda k: (target.get(k, 0) - kept[k], k.header)):
        while over > 0 and kept[k] > target.get(k, 0):
            retire.append(k)
            kept[k] -= 1
            over -= 1
    room = spare_repls - sum(kept.values())
    start = [k for k in target if k not in cold for _ in range(target[k] - kept.get(k, 0))][: max(room, 0)]
    return start, retire


# A spare whose import failed is not tried again for its header at once: after this long, doubling
# with each failure in a row to the max (readiness's backoff for a problem, readiness.py).
SPARE_RETRY_PERIOD = 1.0
SPARE_RETRY_MAX = 30.0


def spare_retry_delay(failures: int) -> float:
    """How long no spare is started for a header after `failures` spare imports of it failed in a
    row (none since one of its imports succeeded): a spare is a standby, so a header whose spares
    keep dying (the OOM killer while memory is short, an import that times out) is not re-imported
    in a loop; its working REPLs and their proofs are not affected."""
    if failures <= 0:
        return 0.0
    return min(SPARE_RETRY_MAX, SPARE_RETRY_PERIOD * 2.0 ** min(failures - 1, 16))


# An idle REPL of another header is converted only if, after the conversion, each REPL of the
# header would still have this many imports' worth of queued work: the import pays for itself, and
# a short burst of one header does not pull REPLs away from the others (hysteresis).
CONVERT_FACTOR = 0.5


def neediest(
    keys: Sequence[PoolKey],
    queued: Mapping[PoolKey, int],
    repls: Mapping[PoolKey, int],
    starting: Mapping[PoolKey, int],
) -> PoolKey | None:
    """Which of `keys` (oldest first) gets the next new REPL: the one with the most queued proofs
    per REPL (busy, idle or starting) after one more; none whose proofs REPLs on their way will take."""
    best: PoolKey | None = None
    best_score = 0.0
    for key in keys:
        waiting = queued.get(key, 0)
        if waiting <= starting.get(key, 0):
            continue  # REPLs on their way will take these
        score = waiting / (repls.get(key, 0) + 1)
        if best is None or score > best_score:
            best, best_score = key, score
    return best


def worth_converting(backlog: float, repls: int, import_cost: float) -> bool:
    """Whether an idle REPL with nothing to do converts to a header with `backlog` seconds of queued
    work and `repls` REPLs: at once when nothing serves it, else only if the import pays for itself."""
    return repls == 0 or backlog / (repls + 1) > CONVERT_FACTOR * import_cost


def move_target(
    own: PoolKey, backlogs: Mapping[PoolKey, float], repls: Mapping[PoolKey, int], import_cost: float
) -> PoolKey | None:
    """Where an idle REPL of `own` (whose header still has work) moves: the header that will drain
    last, if giving it this REPL lets it drain an import's worth sooner while `own` still drains no
    later than it (8 REPLs over 3 equal headers start 3/3/2, and one REPL changes sides midway).
    `backlogs`: seconds of queued work of the waiting headers."""
    mine = repls.get(own, 0)
    if own.fresh or mine < 2:
        return None
    drains = {key: backlog / repls[key] for key, backlog in backlogs.items() if not key.fresh and repls.get(key, 0) > 0}
    last = max(drains, key=drains.__getitem__)
    if last == own:
        return None
    after = (backlogs[last] + import_cost) / (repls[last] + 1)
    if backlogs.get(own, 0.0) / (mine - 1) <= after <= drains[last] - CONVERT_FACTOR * import_cost:
        return last
    return None


class Step(Enum):
    """What an idle REPL does on a scheduling pass (`idle_step`)."""

    RELEASE = "release"
    """Started for one `reuse=false` proof that went (cancelled, expired) while it imported: it goes,
    and the pool REPL it stood in for comes back. No idle fresh REPL is left behind."""
    SWITCH = "switch"
    """It leaves for a starving header (`SwitchPolicy.switches`)."""
    MOVE = "move"
    """Its header still has work, but it leaves for the header that will drain last (`move_target`)."""
    RUN = "run"
    """It takes the oldest proof of its header."""
    WAIT = "wait"
    """Nothing of its header waits: it stays warm (a conversion may take it)."""


def idle_step(key: PoolKey, queued: int, switch: PoolKey | None, move: PoolKey | None) -> tuple[Step, PoolKey | None]:
    """What an idle REPL of `key`, with `queued` proofs of its header waiting, does: `switch` is the
    switch policy's choice for it, `move` the header `move_target` gives it (None when the import
    bound leaves no slot for a move). Returns the step and, for SWITCH and MOVE, where it goes."""
    if key.fresh and not queued:
        return Step.RELEASE, None
    if switch is not None:
        return Step.SWITCH, switch
    if queued and move is not None:
        return Step.MOVE, move
    return (Step.RUN if queued else Step.WAIT), None


def use_limit(max_uses: int, jitter: int, rng: random.Random) -> int:
    """A REPL's own use limit, drawn once when it starts: MAX_REPL_USES less a jitter drawn uniformly
    in [0, `jitter`] (MAX_REPL_USES_JITTER; gunicorn's `max_requests_jitter`). REPLs started together
    (pre-warm, a burst) then reach their limits at different times, so their recycles come one by
    one and the warm spares keep up, instead of coming in a burst that outruns them. At least 1;
    `max_uses` 0 (never recycled) stays 0, and `jitter` 0 draws nothing (every REPL gets MAX_REPL_USES)."""
    if max_uses <= 0:
        return 0
    if jitter <= 0:
        return max_uses
    return max(1, max_uses - rng.randint(0, jitter))


def used_up(uses: int, limit: int) -> bool:
    """A REPL that has run `uses` proofs is recycled now (its `use_limit`; 0: never)."""
    return limit > 0 and uses >= limit


def expires_soon(uses: int, limit: int, ahead: int) -> bool:
    """A REPL within `ahead` proofs of its own limit (an import's worth): its successor is started
    ahead as a spare (`spare_plan`'s `expiring`), so the swap at the limit is immediate."""
    return limit > 0 and uses >= limit - ahead
