"""structlog set-up: JSON in prod, console in dev; no local variables in tracebacks (proof text)."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(level: str = "INFO", environment: str = "prod") -> None:
    renderer: structlog.typing.Processor
    if environment == "dev":
        # Colour only for a terminal: a redirected log must not fill with escape codes (NO_COLOR too).
        colors = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        renderer = structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)
        exc: list[structlog.typing.Processor] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        exc = [structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *exc,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
