"""What the pool is told: `PoolSettings`, and how it is read from the server's `Settings` in one
place (`PoolSettings.from_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from kimina_grpc.repl import ReplSpec
from kimina_grpc.repl.sandbox import OFF, Box
from kimina_grpc.settings import Settings

# The fields of PoolSettings that are not the Settings field of the same name. Each other field is
# LEAN_SERVER_<ITS NAME>: a new pool setting is declared in both classes and copied by no one.
_NOT_FROM_SETTINGS = frozenset({"spec", "import_timeout", "seed", "max_repl_uses_jitter"})


@dataclass(frozen=True, slots=True)
class PoolSettings:
    spec: ReplSpec
    max_repls: int = 1
    max_repl_uses: int = 0
    max_repl_uses_jitter: int = 0
    """Each REPL's own limit is `max_repl_uses` less a random draw in [0, this] (`policy.use_limit`)."""
    seed: int | None = None
    """Seeds the pool's random draws (the use-limit jitter): tests and benchmarks; None: unpredictable."""
    max_repl_rss: int | None = None
    max_wait: float = 0.0
    max_queue: int = 100_000
    max_queue_bytes: int = 0
    """Bytes of code queued at most, over all callers (0 = no bound)."""
    max_concurrent_imports: int = 2
    min_free_memory: int | None = None
    import_timeout: float = 1800.0
    import_cost_hint: float = 15.0
    init_repls: dict[str, int] = field(default_factory=dict)
    min_timeout: float = 0.1
    """A proof whose budget (its timeout, or what its caller's deadline leaves) is below this is
    answered NOT_CHECKED without a REPL: a check cut that short only kills a warm REPL."""
    spare_repls: int = 0
    """Warm REPLs beyond `max_repls`, kept imported for the headers in use: a REPL killed, crashed
    or recycled is replaced by one at once (see `policy.spare_plan`). They never run a proof while
    they are spares: `max_repls` still bounds the checks running at once."""

    @classmethod
    def from_settings(cls, settings: Settings, box: Box = OFF) -> PoolSettings:
        """The pool's settings from the server's: the REPL's command, limits and reply bounds make
        `spec`; the jitter's default is a tenth of MAX_REPL_USES; every other field but `import_timeout`
        and `seed` is the Settings field of its name."""
        argv, cwd = settings.repl_argv()
        spec = ReplSpec(
            argv=argv,
            cwd=cwd,
            max_memory_bytes=settings.max_repl_mem,
            max_file_bytes=settings.max_repl_file_size,
            max_processes=settings.max_repl_procs,
            box=box,
            max_reply_bytes=settings.max_reply_bytes,
            max_reply_items=settings.max_reply_messages,
        )
        named = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name not in _NOT_FROM_SETTINGS}
        return cls(spec=spec, max_repl_uses_jitter=settings.repl_uses_jitter(), **named)
