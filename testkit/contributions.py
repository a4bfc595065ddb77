"""Results of `contribute_many`, checked to be contributions in a test that expects them."""

from __future__ import annotations

from collections.abc import Sequence

from jackpot_grpc.domain.errors import DomainError
from jackpot_grpc.domain.model import ContributionResult


def applied(results: Sequence[ContributionResult | DomainError]) -> list[ContributionResult]:
    """`results` when every one is a contribution; an AssertionError naming the first refusal
    otherwise (contribute_many answers a refused command with its DomainError in place)."""
    refused = [r for r in results if isinstance(r, DomainError)]
    assert not refused, f"refused: {refused[0]!r}"
    return [r for r in results if isinstance(r, ContributionResult)]
