"""Database rows to the store's dataclasses, written once for both stores.

Each ``*_COLUMNS`` tuple is the order in which a store selects a table's columns (``*_SELECT`` as an SQL
select list); the matching
:class:`RowMapper` method reads a row (a tuple, or an asyncpg Record: positional access only) in
that order. The stores differ only in how timestamps come back, which their mapper is given:
SQLite keeps epoch seconds (and ISO text for the audit trail, whose hash covers that text),
PostgreSQL returns aware datetimes. JSON columns come back as text from both.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from hub.message import Message
from hub.replies import PeerReply
from hub.store.base import (
    Attempt,
    AuditRecord,
    Delivery,
    IdentityRecord,
    MessageRecord,
    Review,
    SentPayload,
    load_metadata,
)

__all__ = [
    "ATTEMPT_COLUMNS",
    "ATTEMPT_SELECT",
    "AUDIT_COLUMNS",
    "AUDIT_SELECT",
    "DELIVERY_COLUMNS",
    "DELIVERY_SELECT",
    "IDENTITY_COLUMNS",
    "IDENTITY_SELECT",
    "MESSAGE_COLUMNS",
    "MESSAGE_SELECT",
    "REVIEW_COLUMNS",
    "REVIEW_SELECT",
    "SENT_COLUMNS",
    "Row",
    "RowMapper",
    "reply_values",
    "select_list",
]

MESSAGE_COLUMNS = (
    "id", "parent_id", "correlation_id", "endpoint", "content_type", "body", "metadata", "status", "reason",
    "received_at", "updated_at",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "id", "message_id", "route", "destination", "status", "attempts", "max_attempts", "next_attempt_at",
    "ordering_key", "last_error", "created_at", "updated_at", "identity_override", "output_metadata",
)  # fmt: skip
SENT_COLUMNS = (
    "delivery_id", "sent_id", "parent_id", "content_type", "body", "metadata", "basis", "computed_at", "size",
)  # fmt: skip
#: An attempt and the peer's reply to it (reply_kind NULL: no reply); the reply was cut when
#: reply_size exceeds the stored bytes (PeerReply.truncated), so no flag of its own is kept.
ATTEMPT_COLUMNS = (
    "delivery_id", "number", "started_at", "finished_at", "outcome", "error", "reply_kind", "reply_summary",
    "reply_content_type", "reply", "reply_size", "reply_at",
)  # fmt: skip
IDENTITY_COLUMNS = (
    "patient_key", "authority", "local_id", "status", "ins", "ins_oid", "attributes", "traits", "merged_into",
    "version", "updated_at",
)  # fmt: skip
REVIEW_COLUMNS = (
    "id", "delivery_id", "message_id", "patient_key", "reason", "state", "created_at", "resolved_at", "resolved_by",
)  # fmt: skip
AUDIT_COLUMNS = (
    "id", "at", "actor", "role", "action", "message_id", "target", "detail", "outcome", "prev_hash", "hash",
)  # fmt: skip


def select_list(columns: Sequence[str], *, prefix: str = "", replace: Mapping[str, str] | None = None) -> str:
    """`columns` as an SQL select list, each qualified with `prefix` (``"m."``), or replaced by an expression."""
    replace = replace or {}
    return ", ".join(replace.get(c, prefix + c) for c in columns)


MESSAGE_SELECT = select_list(MESSAGE_COLUMNS)
DELIVERY_SELECT = select_list(DELIVERY_COLUMNS)
IDENTITY_SELECT = select_list(IDENTITY_COLUMNS)
REVIEW_SELECT = select_list(REVIEW_COLUMNS)
AUDIT_SELECT = select_list(AUDIT_COLUMNS)
ATTEMPT_SELECT = select_list(ATTEMPT_COLUMNS)


def reply_values(reply: PeerReply | None) -> tuple[Any, ...]:
    """The reply columns of :data:`ATTEMPT_COLUMNS` (from ``reply_kind`` on) for `reply`, timestamp left aware."""
    if reply is None:
        return (None, None, None, None, None, None)
    return (reply.kind, reply.summary, reply.content_type, reply.body, reply.size, reply.received_at)


class Row(Protocol):
    """A database row read by position: a tuple (SQLite) or an asyncpg Record."""

    def __getitem__(self, index: int, /) -> Any: ...


def _same(value: Any) -> Any:
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class RowMapper:
    """Builds the dataclasses from rows in the ``*_COLUMNS`` order, with one store's timestamp conversions."""

    #: A stored timestamp (not NULL) as an aware datetime.
    timestamp: Callable[[Any], datetime] = _same
    #: The audit trail's stored `at` as an aware datetime.
    audit_at: Callable[[Any], datetime] = _same

    def message_record(self, row: Row) -> MessageRecord:
        """A row of :data:`MESSAGE_COLUMNS`."""
        message = Message(
            id=row[0], parent_id=row[1], correlation_id=row[2], content_type=row[4], body=bytes(row[5]),
            metadata=load_metadata(row[6]), received_at=self.timestamp(row[9]),
        )  # fmt: skip
        return MessageRecord(
            message=message, endpoint=row[3], status=row[7], reason=row[8], updated_at=self.timestamp(row[10])
        )

    def delivery(self, row: Row) -> Delivery:
        """A row of :data:`DELIVERY_COLUMNS`."""
        ts = self.timestamp
        return Delivery(
            id=row[0], message_id=row[1], route=row[2], destination=row[3], status=row[4], attempts=row[5],
            max_attempts=row[6], next_attempt_at=ts(row[7]), ordering_key=row[8], last_error=row[9],
            created_at=ts(row[10]), updated_at=ts(row[11]), identity_override=bool(row[12]),
            output_metadata=json.loads(row[13]),
        )  # fmt: skip

    def sent(self, row: Row) -> SentPayload:
        """A row of :data:`SENT_COLUMNS`."""
        return SentPayload(
            delivery_id=row[0], sent_id=row[1], parent_id=row[2], content_type=row[3],
            body=None if row[4] is None else bytes(row[4]), metadata=load_metadata(row[5]), basis=row[6],
            computed_at=self.timestamp(row[7]), size=row[8],
        )  # fmt: skip

    def attempt(self, row: Row) -> Attempt:
        """A row of :data:`ATTEMPT_COLUMNS`."""
        ts = self.timestamp
        reply = None
        if row[6] is not None:
            reply = PeerReply(
                kind=row[6], summary=row[7], content_type=row[8], body=bytes(row[9] or b""), size=row[10],
                received_at=ts(row[11]),
            )  # fmt: skip
        return Attempt(row[0], row[1], ts(row[2]), ts(row[3]), row[4], row[5], reply)

    def identity(self, row: Row) -> IdentityRecord:
        """A row of :data:`IDENTITY_COLUMNS` (`attributes` stored comma-separated)."""
        return IdentityRecord(
            patient_key=row[0], authority=row[1], local_id=row[2], status=row[3], ins=row[4], ins_oid=row[5],
            attributes=tuple(a for a in row[6].split(",") if a), traits=json.loads(row[7]), merged_into=row[8],
            version=row[9], updated_at=self.timestamp(row[10]),
        )  # fmt: skip

    def review(self, row: Row) -> Review:
        """A row of :data:`REVIEW_COLUMNS`."""
        return Review(
            id=row[0], delivery_id=row[1], message_id=row[2], patient_key=row[3], reason=row[4], state=row[5],
            created_at=self.timestamp(row[6]), resolved_at=None if row[7] is None else self.timestamp(row[7]),
            resolved_by=row[8],
        )  # fmt: skip

    def audit(self, row: Row) -> AuditRecord:
        """A row of :data:`AUDIT_COLUMNS`."""
        return AuditRecord(
            id=row[0], at=self.audit_at(row[1]), actor=row[2], role=row[3], action=row[4], message_id=row[5],
            target=row[6], detail=row[7], outcome=row[8], prev_hash=row[9], hash=row[10],
        )  # fmt: skip
