"""Where the repository and the shared fixtures (recorded REPL transcripts, Kimina recordings) are."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


FIXTURES = Path(os.environ.get("KIMINA_FIXTURES", ROOT.parent / "shared" / "fixtures"))


TRANSCRIPTS = FIXTURES / "repl-transcripts"


KIMINA_MATCH = FIXTURES / "kimina-match"
