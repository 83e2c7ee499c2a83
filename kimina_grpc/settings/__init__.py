"""Server settings, from `LEAN_SERVER_*` environment variables (and an optional `.env` file): one
`Settings` (composed.py) made of groups by what they configure — listening (server.py), Lean (lean.py),
the pool (pool.py), requests (requests.py), sessions, access (access.py: keys, TLS), the box (box.py), the
cache, the proof log and gRPC — each group one heading of docs/configuration.md."""

from kimina_grpc.settings.base import parse_size
from kimina_grpc.settings.composed import CONFIG_FILE, Settings
from kimina_grpc.settings.lean import discover_workspace

__all__ = ["CONFIG_FILE", "Settings", "discover_workspace", "parse_size"]
