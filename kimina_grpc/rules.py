"""The version of the rules that decide a verdict, for the result cache's key (kimina_grpc/cache/key.py).

Replicas of different builds share one Redis. A stored verdict is served for as long as its key is
read (up to LEAN_SERVER_CACHE_TTL, a week by default), so an entry written under rules that were
later fixed would go on answering for the old rules. The key holds RULES_VERSION: a build with
other rules reads none of the old entries (they expire in Redis on their own).

Bump RULES_VERSION in the same commit as any change that can make the same file, options and Lean
environment get another verdict, reason, axioms or messages than before, for example:
- the verdict of a reply (kimina_grpc/repl/reply_verdict.py);
- a trust rule: what audit or judge ask Lean and how they read its answers (supervisor/trust.py,
  audit.py, judge.py, answers.py);
- the header cut, which decides what Lean reads (repl/header.py);
- how a reply's positions or messages are put back into the user's file (supervisor/check.py,
  repl/driver.py, repl/protocol.py, repl/bounds.py).
Not for changes that cannot change a stored result: speed, scheduling, logging, documentation.
When in doubt, bump: the price is one check of each proof again, never a wrong answer.
tests/test_cache_key.py holds a fingerprint of the verdict, trust and header files' code (comments and docstrings
aside) and fails when they change until the fingerprint is recorded again, as a reminder.

Why not the package version: it is not bumped with each change (every development build of a
release says the same), so two builds with different rules would share entries; and a release that
changes no rule (most do not) would throw away every replica's shared results for nothing.
"""

RULES_VERSION = 3
"""1: the rules up to issue 23. 2: the key holds the header's columns (header errors were reported
at another file's column) and this version. 3: trust, third pass (issues 23 and 31: primed, dotted and
long names, `prelude` refused, axioms' identity, the judge's own reference, kernel timeouts)."""
