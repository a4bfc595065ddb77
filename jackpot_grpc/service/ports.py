"""What the service needs from outside it, as protocols: tests and wiring plug in their own.

ServiceMetrics is implemented by jackpot_grpc.observability.telemetry.BusinessMetrics
(OpenTelemetry);
BatchApplier by JackpotService, and by an in-memory fake in the batcher's unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from jackpot_grpc.domain.errors import DomainError
from jackpot_grpc.domain.model import ContributeCommand, ContributionResult, Group, WinResult


class ServiceMetrics(Protocol):
    """Business metrics, recorded once per committed transaction."""

    def contributions_counted(
        self, written: int, counts: Mapping[Group, int], amounts: Mapping[Group, int]
    ) -> None: ...

    def win_paid(self, result: WinResult) -> None: ...

    def config_changed(self, group: Group) -> None: ...


class BatchApplier(Protocol):
    """Applies contributions in order, in one transaction; one result per command, or the
    refusal of a command whose key is bound to another request."""

    async def contribute_many(
        self, commands: Sequence[ContributeCommand]
    ) -> list[ContributionResult | DomainError]: ...
