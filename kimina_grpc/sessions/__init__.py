"""Interactive proof sessions (ProofSession): tactic trees on warm REPLs that survive a REPL's death.

`tree` keeps a session's states and assembles proofs (pure); `home` is what is said to a session's
REPL (its code opened, a tactic sent, a tree replayed); `room` owns the sessions' REPLs and moves
sessions to a fresh REPL when one dies; `memory` is a session REPL's memory budget. The servicer's
ProofSession is in `kimina_grpc/service/sessions.py`.
"""

from kimina_grpc.sessions.room import SessionLimits, SessionRoom, SessionsFull
from kimina_grpc.sessions.tree import Node, SessionTree, Status, TacticOutcome

__all__ = ["Node", "SessionLimits", "SessionRoom", "SessionTree", "SessionsFull", "Status", "TacticOutcome"]
