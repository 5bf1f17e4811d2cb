"""The status vocabularies of the store: deliveries, messages, identity reviews.

Each is a `StrEnum`: a member *is* its string, so the values stored in the
database, shown by the admin API and written in audit records are exactly the
strings they always were (``DeliveryStatus.DEAD == "dead"``); a test pins them.

Delivery life cycle (``deliveries.status``, drawn in ``hub/store/__init__.py``)::

    pending ──claim──► in_flight ──ACCEPT──► delivered
    in_flight ──RETRY──► pending;  REJECT / last attempt ──► dead ──requeue──► pending
    in_flight ──patient not qualified──► awaiting_identity ──ADT qualifies it──► pending
    in_flight ──traits disagree──► identity_review ──release──► pending / discard──► discarded

A message's status (``messages.status``, what a search filters on) sums up its
deliveries.
"""

from __future__ import annotations

import enum
from typing import Literal, TypeAlias

__all__ = [
    "BLOCKING_STATUSES",
    "FINAL_STATUSES",
    "FINISHED_MESSAGE_STATUSES",
    "HELD_STATUSES",
    "DeliveryStatus",
    "FinishedMessageStatus",
    "MessageStatus",
    "MessageStatusName",
    "ReviewState",
    "ReviewStateName",
]


class DeliveryStatus(enum.StrEnum):
    """Where one delivery (a message to one destination of one route) stands."""

    PENDING = "pending"
    """Due at ``next_attempt_at``; a worker will claim it."""
    IN_FLIGHT = "in_flight"
    """Claimed by a worker, under a lease."""
    AWAITING_IDENTITY = "awaiting_identity"
    """Held until the patient's identity is qualified (an ADT qualifies it)."""
    IDENTITY_REVIEW = "identity_review"
    """Held until an operator releases or discards it (traits disagree)."""
    DELIVERED = "delivered"
    """Accepted by the destination."""
    DEAD = "dead"
    """Rejected, or out of attempts: dead-lettered until requeued or discarded."""
    DISCARDED = "discarded"
    """Given up by an operator."""


class MessageStatus(enum.StrEnum):
    """Where one message stands, summed up over its deliveries."""

    PENDING = "pending"
    AWAITING_IDENTITY = "awaiting_identity"
    IDENTITY_REVIEW = "identity_review"
    DELIVERED = "delivered"
    FAILED = "failed"
    """A delivery was dead-lettered (the CLI's ``dead``)."""
    REJECTED = "rejected"
    """Refused on receipt as unusable (stored with the reason)."""
    UNROUTED = "unrouted"
    """No route matched it (or it went on as messages of its own, e.g. an MSSanté mail's documents)."""


class ReviewState(enum.StrEnum):
    """An identity review's state: open until an operator releases or discards its deliveries."""

    OPEN = "open"
    RELEASED = "released"
    DISCARDED = "discarded"


#: Deliveries waiting for the patient's identity: for a qualified INS, or for an operator's review.
HELD_STATUSES = (DeliveryStatus.AWAITING_IDENTITY, DeliveryStatus.IDENTITY_REVIEW)
#: Delivery statuses that hold back later deliveries of the same ordering key (FIFO per key); with the
#: route's `hold_behind_dead`, a dead letter holds its key too, until it is requeued or discarded.
BLOCKING_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, *HELD_STATUSES)
#: Message statuses after which nothing more happens to the message (what retention may delete).
FINISHED_MESSAGE_STATUSES = (
    MessageStatus.DELIVERED,
    MessageStatus.REJECTED,
    MessageStatus.UNROUTED,
    MessageStatus.FAILED,
)
#: Delivery statuses after which nothing more will happen without an operator.
FINAL_STATUSES = (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD, DeliveryStatus.DISCARDED)

# A pydantic field typed with an enum is published as a ``$ref`` to a schema of its own; typed with a ``Literal`` of
# the members, its JSON Schema lists the values inline, exactly as before the enums existed.
MessageStatusName: TypeAlias = Literal[
    MessageStatus.PENDING,
    MessageStatus.AWAITING_IDENTITY,
    MessageStatus.IDENTITY_REVIEW,
    MessageStatus.DELIVERED,
    MessageStatus.FAILED,
    MessageStatus.REJECTED,
    MessageStatus.UNROUTED,
]
"""A field holding a `MessageStatus`."""
FinishedMessageStatus: TypeAlias = Literal[
    MessageStatus.DELIVERED, MessageStatus.REJECTED, MessageStatus.UNROUTED, MessageStatus.FAILED
]
"""A message status after which nothing more happens to the message (what retention may delete)."""
ReviewStateName: TypeAlias = Literal[ReviewState.OPEN, ReviewState.RELEASED, ReviewState.DISCARDED]
"""A field holding a `ReviewState`."""
