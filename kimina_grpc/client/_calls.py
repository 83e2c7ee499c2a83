"""The calls on one channel (one server, or gRPC's round_robin over several): a unary call retried
(bounded, exponential, honouring the server's retry delay), Verify in batches, and StreamVerify that
reconnects and re-sends what is unanswered. A cluster's Verify and StreamVerify are `_dispatch`'s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from kimina_grpc.client._dispatch import next_proof, stream_item
from kimina_grpc.client._errors import is_retryable, reconnect_delay, translate, tried, wait
from kimina_grpc.client._types import Proof, Result, not_checked
from kimina_grpc.client._wire import from_proto, to_proto
from kimina_grpc.v1 import verifier_pb2 as pb
from kimina_grpc.v1 import verifier_pb2_grpc as pb_grpc

T = TypeVar("T")


class Calls:
    """One channel's stub, the caller's metadata, and how many attempts a call gets."""

    def __init__(
        self, stub: pb_grpc.VerifierServiceAsyncStub, metadata: tuple[tuple[str, str], ...], max_attempts: int
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._max_attempts = max_attempts

    async def unary(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()`, retried on UNAVAILABLE and RESOURCE_EXHAUSTED; other failures as typed errors."""
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retryable),
                stop=stop_after_attempt(self._max_attempts),
                wait=wait,
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    return await fn()
        except grpc.RpcError as err:
            raise tried(translate(err), attempts) from None
        raise AssertionError("unreachable")

    async def verify(self, items: list[Proof], opts: pb.ProofOptions, batch_size: int) -> list[Result]:
        """Results in input order, `batch_size` proofs a Verify."""
        results: list[Result] = []
        for start in range(0, len(items), batch_size):
            results += await self._verify_batch([to_proto(p) for p in items[start : start + batch_size]], opts)
        return results

    async def _verify_batch(self, proofs: list[pb.Proof], opts: pb.ProofOptions) -> list[Result]:
        """One Verify, and again for the proofs a shutting-down server answered `retryable`."""
        answers: dict[str, pb.ProofResult] = {}
        todo = proofs
        for _ in range(self._max_attempts):
            request = pb.VerifyRequest(proofs=todo, options=opts)
            reply = await self.unary(lambda r=request: self._stub.Verify(r, metadata=self._metadata))  # type: ignore[misc]
            answers.update((r.id, r) for r in reply.results)
            todo = [p for p in todo if p.id in answers and answers[p.id].retryable]
            if not todo:
                break
        lost = "the server's response had no result for this proof"
        return [from_proto(answers[p.id]) if p.id in answers else not_checked(p.id, lost) for p in proofs]

    async def stream(self, source: Iterator[Proof], opts: pb.ProofOptions, window: int) -> AsyncIterator[Result]:
        """StreamVerify with at most `window` proofs in flight; each id is yielded once (see
        AsyncKiminaClient.verify_stream)."""
        pending: dict[str, Proof] = {}  # sent (or about to be), not yet answered
        exhausted = False
        refused: Exception | None = None  # raised by the proofs' source, or a repeated id
        failures = 0
        while True:
            slots = asyncio.Semaphore(window)
            resend = list(pending.values())
            ended: list[bool] = []  # the call is over: the request generator returns (gRPC's task with it)

            async def requests(
                resend: list[Proof] = resend, slots: asyncio.Semaphore = slots, ended: list[bool] = ended
            ) -> AsyncIterator[Any]:
                nonlocal exhausted, refused
                for proof in resend:
                    await slots.acquire()
                    if ended:
                        return
                    yield stream_item(proof, opts)
                while not exhausted:
                    await slots.acquire()
                    if ended:
                        return
                    try:
                        new = next_proof(source, pending)
                    except Exception as exc:
                        refused = exc
                        raise  # gRPC cancels the call; the caller gets `refused`
                    if new is None:
                        exhausted = True
                        break
                    pending[new.id] = new
                    yield stream_item(new, opts)

            if exhausted and not pending:
                return
            call = self._stub.StreamVerify(requests(), metadata=self._metadata)
            try:
                async for response in call:
                    if response.result.retryable:
                        continue  # a shutting-down server's: stays pending, sent again on the next stream
                    if pending.pop(response.result.id, None) is None:
                        continue  # not ours to answer (already answered)
                    failures = 0
                    slots.release()
                    yield from_proto(response.result)
                if exhausted and not pending:
                    return
                # The server ended the call as done, yet owes these ids: sent again, a few times,
                # then answered here, so no caller waits for them forever.
                failures += 1
                if failures >= self._max_attempts:
                    lost = list(pending)
                    pending.clear()
                    for proof_id in lost:
                        yield not_checked(proof_id, "the server ended the stream without answering this proof")
                    if exhausted:
                        return
                await asyncio.sleep(reconnect_delay(failures))
            except asyncio.CancelledError:
                if refused is None:
                    raise
                raise refused from None
            except grpc.RpcError as err:
                if refused is not None:
                    raise refused from None
                if not is_retryable(err):
                    raise tried(translate(err), failures + 1) from None
                failures += 1
                if failures >= self._max_attempts:
                    raise tried(translate(err), failures) from None
                await asyncio.sleep(reconnect_delay(failures))
            finally:
                call.cancel()
                ended.append(True)
                slots.release()
