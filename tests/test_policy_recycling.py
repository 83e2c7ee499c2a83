"""When a REPL is recycled (policy.py: `use_limit`, `used_up`, `expires_soon`) as tables: no process,
no event loop, no clock; the random draw is a seeded `random.Random` passed in."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from kimina_grpc.supervisor.policy import expires_soon, use_limit, used_up


@pytest.mark.parametrize(
    ("why", "max_uses", "jitter", "low", "high"),
    [
        ("no jitter: every REPL gets MAX_REPL_USES (today's pool)", 25, 0, 25, 25),
        ("jitter: MAX_REPL_USES less a draw in [0, jitter]", 25, 5, 20, 25),
        ("never recycled stays never, whatever the jitter", 0, 5, 0, 0),
        ("a jitter as large as the limit still leaves at least one proof", 3, 10, 1, 3),
        ("a limit of one proof", 1, 0, 1, 1),
    ],
)
def test_use_limit_is_drawn_within_its_bounds(why: str, max_uses: int, jitter: int, low: int, high: int) -> None:
    rng = random.Random(26)
    limits = Counter(use_limit(max_uses, jitter, rng) for _ in range(2000))
    assert set(limits) == set(range(low, high + 1)), why  # every value of the range is drawn, none outside


def test_use_limit_draws_uniformly() -> None:
    rng = random.Random(7)
    limits = Counter(use_limit(500, 100, rng) for _ in range(101_000))
    assert set(limits) == set(range(400, 501))
    assert max(limits.values()) < 2 * min(limits.values())  # about 1,000 each


def test_use_limit_is_reproducible_from_its_seed_and_draws_nothing_without_jitter() -> None:
    assert [use_limit(25, 5, random.Random(3)) for _ in range(3)] == [use_limit(25, 5, random.Random(3))] * 3
    rng = random.Random(3)
    before = rng.getstate()
    assert use_limit(25, 0, rng) == 25 and use_limit(0, 5, rng) == 0
    assert rng.getstate() == before


def test_repls_started_together_get_spread_limits() -> None:
    """Eight REPLs pre-warmed together, MAX_REPL_USES 25: without jitter all eight reach their limit
    on the same proof count; with a jitter of a fifth few share one."""

    def most_sharing_one_limit(jitter: int, seed: int) -> int:
        rng = random.Random(seed)
        return max(Counter(use_limit(25, jitter, rng) for _ in range(8)).values())

    assert {most_sharing_one_limit(0, seed) for seed in range(20)} == {8}
    spread = [most_sharing_one_limit(5, seed) for seed in range(200)]
    assert sum(spread) / len(spread) < 4 and max(spread) < 8


@pytest.mark.parametrize(
    ("why", "uses", "limit", "expected"),
    [
        ("below its limit: keeps working", 24, 25, False),
        ("at its limit: recycled", 25, 25, True),
        ("past it (its limit was drawn lower than another's): recycled", 26, 25, True),
        ("limit 0: never recycled for its uses", 10_000, 0, False),
    ],
)
def test_used_up(why: str, uses: int, limit: int, expected: bool) -> None:
    assert used_up(uses, limit) is expected, why


@pytest.mark.parametrize(
    ("why", "uses", "limit", "ahead", "expected"),
    [
        ("more than an import's worth of proofs left: no successor yet", 21, 25, 3, False),
        ("within an import's worth of its own limit: successor started ahead", 22, 25, 3, True),
        ("its own (jittered) limit counts, not MAX_REPL_USES", 18, 21, 3, True),
        ("never recycled: never expiring", 500, 0, 3, False),
    ],
)
def test_expires_soon(why: str, uses: int, limit: int, ahead: int, expected: bool) -> None:
    assert expires_soon(uses, limit, ahead) is expected, why
