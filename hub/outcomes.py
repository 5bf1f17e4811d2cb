"""Delivery outcome hooks: what to send once a message's deliveries have an outcome.

Some acknowledgements must follow the fact they acknowledge, not the receipt:
an MSSanté MDN "processed" goes back when the DPI has accepted the document,
an MDN with an error when it refused it. A message names its hook in the
``on_final`` metadata key; when one of its deliveries reaches a final status
(delivered, dead or discarded) the worker calls the hook, registered as
``outcome_hook`` in :mod:`hub.registry`. The hook reads what it needs through
:class:`OutcomeServices` (nothing else of the hub) and returns the follow-up
messages; the hub submits them as inbound messages of the original endpoint,
each with a dedup key, so that a hook called twice (two deliveries finishing
together, a retry after a store error) sends once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hub.message import Message
from hub.statuses import FINAL_STATUSES
from hub.store import Delivery, MessageRecord

__all__ = ["FINAL_STATUSES", "FinalOutcome", "FollowUp", "OutcomeHook", "OutcomeServices"]



@dataclass(frozen=True)
class FinalOutcome:
    """One delivery of `message` reached `status` (one of FINAL_STATUSES)."""

    message: Message
    destination: str
    status: str
    error: str


@dataclass(frozen=True)
class FollowUp:
    """A message to submit because of an outcome, under `dedup_key` (sent at most once)."""

    message: Message
    dedup_key: str


class OutcomeServices(Protocol):
    """What a hook may read of the hub."""

    async def get_message(self, message_id: str) -> MessageRecord | None: ...

    async def correlated(self, correlation_id: str) -> list[MessageRecord]:
        """The messages of one correlation (a mail and the documents taken out of it)."""
        ...

    async def deliveries(self, message_ids: list[str]) -> dict[str, list[Delivery]]: ...


OutcomeHook = Callable[[FinalOutcome, OutcomeServices], Awaitable[list[FollowUp]]]
