"""`Settings`: every group of settings in one object, read from `LEAN_SERVER_*` environment variables
(and the config file, and an optional `.env` file). What spans groups lives here.

A bad value stops start-up with pydantic's message, which names the variable.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from kimina_grpc.settings.access import AccessSettings
from kimina_grpc.settings.box import BoxSettings
from kimina_grpc.settings.cache import CacheSettings
from kimina_grpc.settings.lean import AstExportSettings, LeanSettings
from kimina_grpc.settings.pool import ReplPoolSettings
from kimina_grpc.settings.prooflog import ProofLogSettings
from kimina_grpc.settings.requests import RequestSettings
from kimina_grpc.settings.server import GrpcSettings, ListenSettings
from kimina_grpc.settings.sessions import SessionSettings

CONFIG_FILE = Path(os.environ.get("LEAN_SERVER_CONFIG_FILE", Path.home() / ".config" / "kimina-grpc" / "config.env"))
"""Written by `kimina-grpc setup --save-config`; a local .env and the environment override it."""


class Settings(
    # The groups in the order docs/configuration.md lists them (pydantic itself collects fields and runs
    # validators from the last base up; no group's validator reads another group's fields).
    ListenSettings,
    LeanSettings,
    AstExportSettings,
    ReplPoolSettings,
    RequestSettings,
    SessionSettings,
    AccessSettings,
    BoxSettings,
    CacheSettings,
    ProofLogSettings,
    GrpcSettings,
    BaseSettings,
):
    model_config = SettingsConfigDict(
        env_prefix="LEAN_SERVER_", env_file=(CONFIG_FILE, ".env"), extra="ignore", use_attribute_docstrings=True
    )

    def secret_paths(self) -> list[Path]:
        """Files a REPL must not read: the key file, the TLS key, the Redis password, the config file."""
        paths = (self.api_key_file, self.tls_key, self.cache_password_file, self.database_password_file, CONFIG_FILE)
        return [p for p in paths if p is not None]

    def ast_argv(self) -> tuple[tuple[str, ...], Path]:
        """The exporter's command line (module arguments follow) and its project directory."""
        workspace = self.resolved_workspace()
        project = self.ast_export_project_dir or (workspace / "ast_export" if workspace else None)
        if project is None:
            raise ValueError("no ast_export project: set LEAN_SERVER_AST_EXPORT_PROJECT_DIR or LEAN_SERVER_WORKSPACE")
        if self.ast_export_command:
            return tuple(shlex.split(self.ast_export_command)), project
        if self.ast_export_bin:
            return (str(self.ast_export_bin),), project
        return ("lake", "exe", "ast-export"), project
