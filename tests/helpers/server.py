"""The real gRPC server with the stand-in REPL: its settings, running it (on the test's loop or a
thread of its own), a proof in its wire form, and its metrics page."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from kimina_grpc.service.server import App, create_app
from kimina_grpc.settings import Settings
from kimina_grpc.testing import fake_repl_command
from kimina_grpc.v1 import verifier_pb2 as pb

from .processes import none_left


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "repl_command": fake_repl_command(),
        "max_repls": 2,
        "max_repl_mem": None,
        "drain_seconds": 0,
        "grace_seconds": 1,
        "import_cost_hint": 0.1,
        # Test fixtures live in /tmp, which the box replaces with its own: the box has its own tests.
        "sandbox": "off",
        # This interpreter and the fixtures may be root's alone (pyenv under /root, mkdtemp): a box
        # that is not root could not run them. The uid a root server's box takes has its own tests.
        "sandbox_uid": 0,
        "auth": "on" if kw.get("api_key") or kw.get("api_key_file") else "off",
    }
    return Settings(_env_file=None, **{**base, **kw})  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running(**kw: Any) -> AsyncIterator[tuple[App, grpc.aio.Channel]]:
    app = create_app(settings(**kw))
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    passed = False
    try:
        yield app, channel
        passed = True
    finally:
        await channel.close()
        await app.stop()
        # A process the server killed may still be on its way out: wait (briefly) for none, and name
        # any that stays. Not after a failure: what the test left running (its Redis) would replace
        # the test's own error with "processes left after close".
        if passed:
            await none_left()


def proof(pid: str, body: str, header: str = "import A", **opts: Any) -> pb.Proof:
    return pb.Proof(
        id=pid, code=f"{header}\n\ntheorem t : True := by\n{body}\n  trivial", options=pb.ProofOptions(**opts)
    )


@contextlib.contextmanager
def threaded_app(**kw: Any) -> Iterator[tuple[App, asyncio.AbstractEventLoop]]:
    """A server on an event loop of its own thread, for blocking clients in the test's thread."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    async def start() -> App:
        app = create_app(settings(**kw))
        await app.start()
        return app

    app = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        yield app, loop
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()


def scrape(port: int) -> dict[str, float]:
    """The metrics page as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
