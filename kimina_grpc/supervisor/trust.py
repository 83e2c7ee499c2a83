"""Trust levels: what a VALID verdict vouches for beyond "Lean printed no error and no sorry".

Uses the REPL driver, not the pool: the pool calls `Reviewer.review` with its warm REPL right after a
proof's body came back VALID, and gets the final Outcome back. Lean's answers are read by
`supervisor/answers.py`.

Every query names the theorem as a global constant, `_root_.NAME`, through commands that resolve it
as one (`#print axioms`, and `#check` of a bare identifier, which prints the constant's signature),
never as a term: a term would see the proof's section `variable`s first (a `variable (t : <the
statement>)` next to a `theorem t : True` would print the statement's type), and an unqualified name
would resolve in the proof's namespace and `open`s. The signature is printed with `pp.all`, and with
`pp.fullNames` and `pp.privateNames` set explicitly: `pp.all` only sets their defaults, and an option
the proof set explicitly wins over a default (Lean's `getPPFullNames o := o.get pp.fullNames.name
(getPPAll o)`), so a proof's `set_option pp.fullNames false` inside `namespace X` would print its own
`X.instAddNat` as the core `instAddNat`. Options that only hide detail make the texts differ, which
fails closed. `#print axioms` runs with `pp.universes false` (newer Lean prints the axioms' names
with `MessageData.ofConstName`, which a proof's `pp.universes true` turns into `Classical.choice.{u}`).

The reference statement is declared under its own name with a fresh suffix (`Nat.t_kimina<hex>` for
`theorem Nat.t`), at top level, so Lean opens the namespaces the caller's declaration opens
(`expandDeclNamespace?`: in `theorem Nat.t (n : ℕ) : succ n ≠ 0`, `succ` is `Nat.succ`).

An allowed axiom must be *the* axiom of that name: each axiom `#print axioms` lists is looked up
(`#check _root_.A`) where the theorem was, and in a clean environment of the same header, and the two
signatures must be equal; an axiom the clean environment does not have was declared by the proof (a
name this Lean's core does not declare, e.g. `Lean.trustCompiler` before it existed). A `prelude` file
is refused at audit and judge: it chooses which core modules it imports, so it can leave
`Init/Core.lean` out and declare its own `propext` and the `Iff`/`Eq` its type mentions.

- audit (on the pool REPL): the queries in the proof's own environment; the reference and the
  axioms' identities in the header's environment (the pool REPL's base environment, where no proof
  has run). `#print axioms` must list only allowed axioms (never `sorryAx`), the theorem must exist
  (so `#exit` before it, or another name, fails), and its signature must equal the reference's.
  The queries run where the proof's own syntax is in force: a proof that redefines `#print axioms`
  or `#check` fools the audit, and so does code another caller's proof left running inside the
  same REPL process. That is the audit's documented limit. Nor can it see `debug.skipKernelTC`:
  only a kernel re-check can (the judge's, up to REPL v4.29).
- judge (supervisor/judge.py): the audit first (a naive cheat is rejected without paying an
  import); then a separate REPL is started for this proof with the pool's ReplSpec, imports the
  header (its clean environment: the reference and the axioms' identities are elaborated there),
  and unpickles the proof's environment (`pickleTo` in the pool REPL, `unpickleEnvFrom` in the
  judge's), where the queries run again. Nothing but the pickle comes from the shared REPL.

Limits of the statement check (both levels): signatures are compared as `pp.all` prints them, so
bound variable and universe names must match the reference's; a reference that declares its own
definitions is not supported (the proof's same-named definitions would print alike).

Time: each command of the audit and the judge is bounded by the proof's own timeout (so a trusted
check can take up to a few times it), the judge's imports by the pool's import timeout.
"""

from __future__ import annotations

from dataclasses import replace

from kimina_grpc.repl import Repl
from kimina_grpc.supervisor.answers import Rejected, axioms_answer, signature
from kimina_grpc.supervisor.audit import (
    NATIVE_AXIOMS,
    SORRY_AXIOM,
    Failed,
    Review,
    Shared,
    refuse_prelude,
    statement_name,
)
from kimina_grpc.supervisor.jobs import Outcome, TrustLevel, TrustPolicy
from kimina_grpc.supervisor.judge import judge
from kimina_grpc.verdict import Verdict

__all__ = ["NATIVE_AXIOMS", "SORRY_AXIOM", "Reviewer", "statement_name"]

# The names tests know these by.
_Rejected = Rejected
_axioms = axioms_answer
_signature = signature


class Reviewer(Shared):
    """Runs the audit and the judge for the pool. One per supervisor."""

    async def review(
        self,
        repl: Repl,
        outcome: Outcome,
        *,
        env: int,
        base_env: int,
        policy: TrustPolicy,
        timeout: float,
        header: str,
    ) -> Outcome:
        """The final outcome of a proof whose body came back VALID in environment `env` of `repl`
        (whose header-only environment, of `header`, is `base_env`). May kill `repl` (timeout);
        never raises but for cancellation."""
        review = Review(self, repl, env, base_env, policy, timeout, header)
        try:
            refuse_prelude(header)
            await review.audit()
            if policy.level is TrustLevel.JUDGE:
                await judge(review)
        except Rejected as exc:
            outcome = replace(outcome, verdict=Verdict.UNTRUSTED, reason=exc.reason)
        except Failed as exc:
            outcome = replace(outcome, verdict=exc.verdict, error=exc.error)
        return replace(outcome, axioms=tuple(review.found.items()))
