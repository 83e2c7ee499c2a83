"""A reward's mechanics on the client: one client per process (a trainer forks or pickles the reward;
a fork pool's worker makes its own and never touches the parent's), and one group checked in one
streamed call, a server that stays down for good (or refuses the request) raised, not scored."""

from __future__ import annotations

from typing import Any

from kimina_grpc.client._errors import KiminaError
from kimina_grpc.client._process import PerProcess
from kimina_grpc.client._sync import KiminaClient
from kimina_grpc.client._types import Proof, Result
from kimina_grpc.rewards.table import misconfigured

RETRY_ATTEMPTS = 11
"""Stream attempts before RewardServerError: about 60 s of backoff, a pod restart and a Mathlib import."""


class RewardServerError(RuntimeError):
    """The server could not check a group even after the client's bounded retries."""


class GroupChecker:
    """Checks a group of proofs on `target` with this process's client, made on first use."""

    def __init__(self, target: str, api_key: str | None, max_attempts: int, verify_options: dict[str, Any]) -> None:
        self.target = target
        self.api_key = api_key
        self.max_attempts = max_attempts
        self.verify_options = verify_options
        self._clients = PerProcess(self._new_client)

    def _new_client(self) -> KiminaClient:
        return KiminaClient(self.target, self.api_key, max_attempts=self.max_attempts)

    @property
    def client(self) -> KiminaClient:
        return self._clients.get()

    def fresh(self) -> GroupChecker:
        """A checker with these settings (the options shared) and no client yet."""
        return GroupChecker(self.target, self.api_key, self.max_attempts, self.verify_options)

    def close(self) -> None:
        client = self._clients.pop()
        if client is not None:
            client.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_clients"]  # a client (its loop thread, its channel) does not cross processes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clients = PerProcess(self._new_client)

    def check(self, proofs: list[Proof]) -> list[Result]:
        """The proofs' results (in the order they finish); RewardServerError when the server could
        not be reached, ValueError when it refused the request for the reward's own set-up."""
        if not proofs:
            return []
        try:
            results = list(self.client.verify_stream(proofs, **self.verify_options))
        except KiminaError as exc:
            tries = f"{exc.attempts} attempt{'s' if exc.attempts != 1 else ''}"
            raise RewardServerError(
                f"kimina-grpc at {self.target} could not check {len(proofs)} completions "
                f"({tries}): {str(exc).splitlines()[0]}"
            ) from exc
        refused = misconfigured(results)
        if refused:
            raise ValueError(
                f"kimina-grpc at {self.target} refused the request (check the reward's options): {refused}"
            )
        return results
