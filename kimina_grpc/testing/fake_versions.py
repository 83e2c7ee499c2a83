"""What the stand-in's Lean version changes (KIMINA_FAKE_LEAN_VERSION, default v4.19.0, the
installer's): one table of what real Lean and the REPL do differently per version
(tests/test_lean_versions.py; tests/real_lean marks each case by the versions it holds for)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# Options Lean lacks before a version: `set_option` of one is "unknown option", and with `in` the
# command under it is not elaborated.
_OPTION_SINCE = {
    "pp.maxSteps": (4, 11),
    "warn.sorry": (4, 22),  # lean4 PR #8662, in the Lean v4.22.0 release notes
}
_MODULES_SINCE = (4, 22)  # `module`, `public`/`meta import`, `import all` (the module system)
_TRIMS_SINCE = (4, 22)  # the REPL's `getLines` right-trims request lines
_REPLAY_UNPICKLE = ((4, 10), (4, 30))  # REPL/Snapshots.lean: unpickling runs Environment.replay (kernel)
# An info "Goals accomplished!" over each finished proof: in the REPL's expected outputs at v4.19.0-rc2
# and v4.19.0, not at v4.18.0 nor from v4.20.1-rc1 (a silent message there).
_GOALS_ACCOMPLISHED = ((4, 19), (4, 20))
_MODULE_REFUSES_PRINT_AXIOMS = ((4, 22), (4, 30))  # lean4 #8174, until #13117
_AXIOMS_AS_CONSTANTS_SINCE = (4, 30)  # `#print axioms` names via `MessageData.ofConstName`


@dataclass(frozen=True)
class LeanVersion:
    """The (major, minor) of the Lean the stand-in models, and what that version does."""

    number: tuple[int, ...]

    @staticmethod
    def from_environment() -> LeanVersion:
        version = re.findall(r"\d+", os.environ.get("KIMINA_FAKE_LEAN_VERSION", "v4.19.0"))
        return LeanVersion(tuple(int(v) for v in version[:2]))

    def knows_option(self, name: str) -> bool:
        return self.number >= _OPTION_SINCE.get(name, (0, 0))

    @property
    def modules(self) -> bool:
        """Module headers (`module`, `public`/`meta import`, `import all`) exist."""
        return self.number >= _MODULES_SINCE

    @property
    def trims_requests(self) -> bool:
        return self.number >= _TRIMS_SINCE

    @property
    def replays_unpickle(self) -> bool:
        """Unpickling re-checks every constant with the kernel."""
        return _REPLAY_UNPICKLE[0] <= self.number < _REPLAY_UNPICKLE[1]

    @property
    def goals_accomplished(self) -> bool:
        return _GOALS_ACCOMPLISHED[0] <= self.number < _GOALS_ACCOMPLISHED[1]

    @property
    def module_refuses_print_axioms(self) -> bool:
        return _MODULE_REFUSES_PRINT_AXIOMS[0] <= self.number < _MODULE_REFUSES_PRINT_AXIOMS[1]

    @property
    def axioms_as_constants(self) -> bool:
        """`#print axioms` prints names as constants: `pp.universes` shows their universe parameters."""
        return self.number >= _AXIOMS_AS_CONSTANTS_SINCE
