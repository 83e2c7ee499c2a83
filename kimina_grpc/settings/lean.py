"""Where Lean lives: the workspace, the REPL's command line, and the exporter's."""

from __future__ import annotations

import shlex
from pathlib import Path

from pydantic import Field, model_validator

from kimina_grpc.settings.base import Group


def discover_workspace() -> Path | None:
    """The seed's order: LEAN_SERVER_WORKSPACE (handled by the field), the current directory if it
    holds mathlib4/ or repl/, then ~/kimina-workspace, ~/lean-workspace, ~/workspace."""
    cwd = Path.cwd()
    if (cwd / "mathlib4").is_dir() or (cwd / "repl").is_dir():
        return cwd
    for name in ("kimina-workspace", "lean-workspace", "workspace"):
        candidate = Path.home() / name
        if (candidate / "repl").is_dir() or (candidate / "mathlib4").is_dir():
            return candidate
    return None


class LeanSettings(Group):
    """Where Lean lives."""

    workspace: Path | None = Field(None, json_schema_extra={"shown": "discovered"})
    """Where `repl/` and `mathlib4/` are. Discovered when unset: the current directory if it has
    `mathlib4/` or `repl/`, else `~/kimina-workspace`, `~/lean-workspace`, `~/workspace`."""
    project_dir: Path | None = Field(None, json_schema_extra={"shown": "<workspace>/mathlib4"})
    """The Lean project the REPL runs in (cwd; its .olean files are importable)."""
    repl_path: Path | None = Field(None, json_schema_extra={"shown": "<workspace>/repl/.lake/build/bin/repl"})
    """The REPL binary, run through `lake env`."""
    repl_command: str | None = None
    """A whole command line replacing `lake env <repl>` (shell-split; tests: the stand-in)."""

    @model_validator(mode="after")
    def _check_repl_command(self) -> LeanSettings:
        if self.repl_command is not None and not shlex.split(self.repl_command):
            raise ValueError("LEAN_SERVER_REPL_COMMAND is empty")
        return self

    def resolved_workspace(self) -> Path | None:
        return self.workspace or discover_workspace()

    def repl_argv(self) -> tuple[tuple[str, ...], str | None]:
        """The REPL's command line and working directory."""
        if self.repl_command:
            cwd = str(self.project_dir) if self.project_dir else None
            return tuple(shlex.split(self.repl_command)), cwd
        workspace = self.resolved_workspace()
        repl = self.repl_path or (workspace / "repl/.lake/build/bin/repl" if workspace else None)
        project = self.project_dir or (workspace / "mathlib4" if workspace else None)
        if repl is None or project is None:
            raise ValueError(
                "no Lean workspace found: set LEAN_SERVER_WORKSPACE (see tools/install_lean.sh), "
                "or LEAN_SERVER_REPL_COMMAND for the stand-in REPL"
            )
        return ("lake", "env", str(repl)), str(project)


class AstExportSettings(Group):
    """ExportAst."""

    ast_export_bin: Path | None = Field(None, json_schema_extra={"shown": "lake exe ast-export"})
    """The exporter binary (default: `lake exe ast-export` in the AST project)."""
    ast_export_project_dir: Path | None = Field(None, json_schema_extra={"shown": "<workspace>/ast_export"})
    """The Lake project ast_export runs in (it resolves modules there)."""
    ast_export_command: str | None = None
    """A whole command line replacing the exporter (shell-split; tests: the stand-in)."""
    max_ast_jobs: int = Field(2, ge=1)
    """Exports at once."""
