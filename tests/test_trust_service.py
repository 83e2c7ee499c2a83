"""Trust levels through the contract: inheritance, validation, the UNTRUSTED verdict and its reason."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

from .helpers.server import running

STATEMENT = "theorem t (x : ℕ) (h : 2 * x = 6) :\n  x = 3 := by"
CHEAT = "import Mathlib\n\naxiom cheat : False\ntheorem t : 1 = 2 := cheat.elim\n-- fake: axioms t cheat"
HONEST = "import Mathlib\n\ntheorem t (x : ℕ) (h : 2 * x = 6) : x = 3 := by omega"


def proof(pid: str, code: str, **opts: Any) -> pb.Proof:
    return pb.Proof(id=pid, code=code, options=pb.ProofOptions(**opts))


async def test_levels_inherit_and_untrusted_carries_reason_and_axioms() -> None:
    async with running(default_trust="audit") as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        reply = await stub.Verify(
            pb.VerifyRequest(
                proofs=[
                    proof("cheat", CHEAT),  # the request's level: judge
                    proof("cheat-check", CHEAT, trust=pb.TRUST_LEVEL_CHECK),  # its own
                    proof("honest", HONEST, statement=STATEMENT),
                    proof("weaker", HONEST.replace("x = 3", "x ≤ 3"), statement=STATEMENT),
                ],
                options=pb.ProofOptions(trust=pb.TRUST_LEVEL_JUDGE, theorem_name="t"),
            )
        )
        got = {r.id: r for r in reply.results}
        assert {k: pb.Verdict.Name(r.verdict) for k, r in got.items()} == {
            "cheat": "VERDICT_UNTRUSTED",
            "cheat-check": "VERDICT_VALID",
            "honest": "VERDICT_VALID",
            "weaker": "VERDICT_UNTRUSTED",
        }
        assert got["cheat"].reason.startswith(
            "axioms: t depends on cheat in the proof's environment, outside the allowed"
        )
        assert [(a.theorem, list(a.axioms)) for a in got["cheat"].axioms] == [("t", ["cheat"])]
        assert not got["cheat-check"].axioms and not got["cheat-check"].reason
        assert [(a.theorem, list(a.axioms)) for a in got["honest"].axioms] == [("t", [])]
        assert "`(x : ℕ) (h : 2 * x = 6) : x ≤ 3`" in got["weaker"].reason
        assert "`(x : ℕ) (h : 2 * x = 6) : x = 3`" in got["weaker"].reason
        # The server's default (audit) applies when neither proof nor request sets a level.
        alone = await stub.Verify(pb.VerifyRequest(proofs=[proof("c", CHEAT, theorem_name="t")]))
        assert alone.results[0].verdict == pb.VERDICT_UNTRUSTED


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (pb.ProofOptions(trust=pb.TRUST_LEVEL_AUDIT), "proofs[0].options.theorem_name"),
        (pb.ProofOptions(trust=pb.TRUST_LEVEL_JUDGE, statement="def f := 1"), "proofs[0].options.theorem_name"),
        (pb.ProofOptions(trust=pb.TrustLevel.ValueType(9), theorem_name="t"), "options.trust"),
        (pb.ProofOptions(allowed_axioms=["sorryAx"]), "options.allowed_axioms[0]"),
        (pb.ProofOptions(theorem_name="t\n#exit"), "options.theorem_name"),
        (pb.ProofOptions(theorem_name="t/-"), "options.theorem_name"),  # would comment the query out
        (
            pb.ProofOptions(trust=pb.TRUST_LEVEL_AUDIT, theorem_name="u", statement="theorem t : True := by sorry"),
            "proofs[0].options.statement",  # the statement declares another theorem
        ),
    ],
)
async def test_bad_trust_options_are_invalid_argument(options: pb.ProofOptions, field: str) -> None:
    async with running() as (_, ch):
        stub = pb_grpc.VerifierServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Verify(pb.VerifyRequest(proofs=[proof("p", HONEST)], options=options))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
