"""The pool's settings are read from the server's in one place (`PoolSettings.from_settings`): each
pool setting is the LEAN_SERVER_ setting of its name, none copied by hand."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from kimina_grpc.repl.sandbox import OFF
from kimina_grpc.settings import Settings
from kimina_grpc.supervisor import PoolSettings

# A value unlike PoolSettings' default for each pool setting the server's Settings holds.
CHANGED: dict[str, Any] = {
    "max_repls": 7,
    "max_repl_uses": 9,
    "max_repl_uses_jitter": 4,
    "max_repl_rss": 3 << 30,
    "max_wait": 12.5,
    "max_queue": 11,
    "max_queue_bytes": 1 << 20,
    "max_concurrent_imports": 3,
    "min_free_memory": 1 << 30,
    "import_cost_hint": 4.0,
    "init_repls": {"import A": 2},
    "min_timeout": 0.5,
    "spare_repls": 2,
}


def test_every_pool_setting_comes_from_the_setting_of_its_name() -> None:
    settings = Settings(_env_file=None, repl_command="repl --flag", **CHANGED)  # type: ignore[call-arg]
    pool = PoolSettings.from_settings(settings)
    from_settings = {f.name for f in fields(PoolSettings)} - {"spec", "import_timeout", "seed"}
    assert from_settings == set(CHANGED)  # a new pool setting is added to CHANGED too
    defaults = PoolSettings(spec=pool.spec)
    for name, value in CHANGED.items():
        assert getattr(pool, name) == value != getattr(defaults, name), name


def test_the_repl_spec_carries_the_command_limits_and_reply_bounds() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        repl_command="repl --flag",
        max_repl_mem=1 << 30,
        max_repl_file_size=1 << 20,
        max_repl_procs=64,
        max_reply_bytes=1 << 16,
        max_reply_messages=50,
    )
    spec = PoolSettings.from_settings(settings).spec
    assert spec.argv == ("repl", "--flag") and spec.box is OFF
    assert (spec.max_memory_bytes, spec.max_file_bytes, spec.max_processes) == (1 << 30, 1 << 20, 64)
    assert (spec.max_reply_bytes, spec.max_reply_items) == (1 << 16, 50)
