"""Types shared by the store implementations and group commit (the Store protocol: hub/store/roles.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from hub.errors import StoreError
from hub.message import Message
from hub.replies import PeerReply
from hub.statuses import BLOCKING_STATUSES, HELD_STATUSES, DeliveryStatus

__all__ = [
    "AUDIT_GENESIS",
    "AUDIT_HMAC_PREFIX",
    "BLOCKING_STATUSES",
    "CONTENT_MIN_CHARS",
    "DEAD_LETTER_AHEAD_SQL",
    "HELD_STATUSES",
    "KEY_SOURCES",
    "Attempt",
    "AuditEvent",
    "AuditKey",
    "AuditRecord",
    "Claimed",
    "ContentQuery",
    "Delivery",
    "GroupCommitter",
    "IdentityEvent",
    "IdentityRecord",
    "MessageRecord",
    "NewDelivery",
    "QueueStats",
    "Review",
    "SearchQuery",
    "SentPayload",
    "SubmitResult",
    "audit_hash",
    "business_keys",
    "searchable_text",
]

#: The dead letter that holds a delivery's ordering key (both stores; ``{t}`` the table, ``{p}`` the placeholder).
DEAD_LETTER_AHEAD_SQL = (
    "SELECT e.id FROM {t} e JOIN {t} d ON d.route = e.route AND d.destination = e.destination"
    " AND d.ordering_key = e.ordering_key WHERE d.id = {p} AND e.status = 'dead' AND e.id < d.id"
    " ORDER BY e.id LIMIT 1"
)
#: Business keys indexed in the message-keys table (several per message, added at submit and when a delivery's
#: steps record them), with the metadata keys that carry them: the INS, and the document uniqueId (CDA
#: ClinicalDocument/id as ``root^extension``, or a FHIR DocumentReference's master identifier).
KEY_SOURCES: dict[str, tuple[str, ...]] = {
    "ins": ("ins",),
    "document_id": ("document_id", "unique_id"),
    # the set of versions of a CDA document (setId): a correction finds the version it replaces (hub/documents.py)
    "set_id": ("set_id",),
    # an MDN or DSN received for mail the hub sent names the original's correlation id (adapters/smtp/intake.py)
    "ack_for": ("ack_for_message_id",),
}
_KEY_MAX = 256
#: `prev_hash` of the first audit record.
AUDIT_GENESIS = "0" * 64


def business_keys(metadata: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, value) of the business keys present in `metadata`; a few dict look-ups, cheap on the ingest path."""
    out: list[tuple[str, str]] = []
    for name, sources in KEY_SOURCES.items():
        for source in sources:
            value = metadata.get(source)
            if value and (name, value[:_KEY_MAX]) not in out:
                out.append((name, value[:_KEY_MAX]))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class NewDelivery:
    """One destination a message was routed to, as written with the message."""

    route: str
    destination: str
    ordering_key: str | None = None
    max_attempts: int = 10


@dataclasses.dataclass(frozen=True, slots=True)
class SubmitResult:
    message_id: str
    duplicate: bool
    deliveries: int


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    message_id: str
    route: str
    destination: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    ordering_key: str | None
    last_error: str
    created_at: datetime
    updated_at: datetime
    identity_override: bool = False
    output_metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """What the route's steps added to the message's metadata on the last attempt (e.g. the INS stamped)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "destination": self.destination,
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "last_error": self.last_error,
            "updated_at": self.updated_at.isoformat(),
            "output_metadata": dict(self.output_metadata),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class IdentityRecord:
    """One local identity (IPP within its assigning authority) and what the registry knows of it.

    `traits` holds the strict traits as strings (keys of `hub.identity.StrictTraits`),
    `attributes` the RNIV attributes (DOUT, FICT, HOMA). `merged_into` is the
    patient key that absorbed this one (A40). `version` increases with every change.
    """

    patient_key: str
    authority: str
    local_id: str
    status: str
    ins: str | None = None
    ins_oid: str | None = None
    attributes: tuple[str, ...] = ()
    traits: Mapping[str, str] = dataclasses.field(default_factory=dict)
    merged_into: str | None = None
    version: int = 0
    updated_at: datetime | None = None

    def __repr__(self) -> str:
        return f"IdentityRecord(patient_key=<masked>, status={self.status!r}, has_ins={self.ins is not None})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "patient_key": self.patient_key, "authority": self.authority, "local_id": self.local_id,
            "status": self.status, "ins": self.ins, "ins_oid": self.ins_oid, "attributes": list(self.attributes),
            "merged_into": self.merged_into, "version": self.version,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class IdentityEvent:
    """One change of an identity, kept as its history."""

    patient_key: str
    at: datetime
    event: str
    message_id: str | None
    status: str
    ins: str | None
    note: str


@dataclasses.dataclass(frozen=True, slots=True)
class Review:
    """A delivery sent to identity review: the message's traits disagree with the registry."""

    id: int
    delivery_id: int
    message_id: str
    patient_key: str
    reason: str
    state: str  # open, released, discarded
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "review_id": self.id, "delivery_id": self.delivery_id, "message_id": self.message_id,
            "patient_key": self.patient_key, "reason": self.reason, "state": self.state,
            "created_at": self.created_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None, "resolved_by": self.resolved_by,
        }  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class SentPayload:
    """What one delivery sends: the route's steps' output, computed once and kept with the delivery.

    Written with the outcome of the attempt that computed it (same transaction: no extra commit on
    the delivery path) and resent as is by later attempts, so a retry sends the same bytes, the
    same outgoing message id (an idempotency key downstream, e.g. the XDS submission id) and the
    same metadata without running the steps again.
    """

    delivery_id: int
    sent_id: str
    """The outgoing message's id (a step derives a new message, so not the inbound one's)."""
    parent_id: str | None
    content_type: str
    body: bytes | None
    """None: the inbound body unchanged (not stored twice)."""
    metadata: Mapping[str, str]
    computed_at: datetime
    basis: str = ""
    """The identity the steps ran with: ``""`` (the steps need none), ``"-"`` (no registry record),
    ``"v<version>"`` (that version of the patient's record). Reused only while it is still current."""
    size: int = 0
    """Bytes of the sent body (when read without the body)."""

    @classmethod
    def of(cls, delivery_id: int, inbound: Message, out: Message, basis: str = "") -> SentPayload:
        same = out.body is inbound.body or out.body == inbound.body
        return cls(
            delivery_id=delivery_id, sent_id=out.id, parent_id=out.parent_id, content_type=out.content_type,
            body=None if same else out.body, metadata=dict(out.metadata), computed_at=out.received_at,
            basis=basis, size=len(out.body),
        )  # fmt: skip

    def message(self, inbound: Message) -> Message:
        """The outgoing message as the attempt that computed it sent it."""
        return Message(
            id=self.sent_id, content_type=self.content_type, body=inbound.body if self.body is None else self.body,
            metadata=self.metadata, received_at=self.computed_at, correlation_id=inbound.correlation_id,
            parent_id=self.parent_id,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    delivery: Delivery
    message: Message
    sent: SentPayload | None = None
    """What an earlier attempt computed and sent, if any (see :class:`SentPayload`)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One recorded attempt of a delivery, with what the destination's peer answered to it."""

    delivery_id: int
    number: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    error: str
    reply: PeerReply | None = None
    """The peer's reply (None: it gave none, e.g. a time-out, or the attempt never reached it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class MessageRecord:
    """A stored message with its processing state."""

    message: Message
    endpoint: str
    status: str
    reason: str
    updated_at: datetime

    def summary(self) -> dict[str, Any]:
        m = self.message
        return {
            "id": m.id,
            "status": self.status,
            "reason": self.reason,
            "endpoint": self.endpoint,
            "control_id": m.metadata.get("control_id", ""),
            "message_type": m.metadata.get("message_type", ""),
            "sending_app": m.metadata.get("sending_app", ""),
            "sending_facility": m.metadata.get("sending_facility", ""),
            "received_at": m.received_at.isoformat(),
            "correlation_id": m.correlation_id,
            "parent_id": m.parent_id,
            "content_type": m.content_type,
            "size": len(m.body),
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    """Search by business keys; every field is index-backed. Newest first, paged by `before_id`.

    `ipp` is a local patient id in any assigning authority (a range on the
    ``patient_key`` index, ``IPP@authority``). `ins` and `document_id` go
    through the message-keys index (see `KEY_SOURCES`); `ins` also finds the
    messages of every local identity the registry maps to that INS.
    """

    message_id: str | None = None
    control_id: str | None = None
    sending_app: str | None = None
    sending_facility: str | None = None
    patient_key: str | None = None
    message_type: str | None = None
    status: str | None = None
    correlation_id: str | None = None
    ipp: str | None = None
    ins: str | None = None
    document_id: str | None = None
    set_id: str | None = None
    """Messages whose deliveries produced a version of this CDA document set (ClinicalDocument/setId)."""
    ack_for: str | None = None
    """Acknowledgements (MDN, DSN) received for the message with this correlation id."""
    since: datetime | None = None
    until: datetime | None = None
    before_id: str | None = None
    limit: int = 100

    def filters(self) -> list[tuple[str, str, Any]]:
        """(column, operator, value) for every set field but the message-keys ones (`key_filters`)."""
        out: list[tuple[str, str, Any]] = []
        for col in (
            "control_id", "sending_app", "sending_facility", "patient_key", "message_type", "status", "correlation_id",
        ):  # fmt: skip
            value = getattr(self, col)
            if value is not None:
                out.append((col, "=", value))
        if self.ipp is not None:
            # '@' (0x40) is followed by 'A' (0x41): every "<ipp>@<authority>" sorts between these bounds.
            out.append(("patient_key", ">=", f"{self.ipp}@"))
            out.append(("patient_key", "<", f"{self.ipp}A"))
        if self.message_id is not None:
            out.append(("id", "=", self.message_id))
        if self.since is not None:
            out.append(("received_at", ">=", self.since))
        if self.until is not None:
            out.append(("received_at", "<", self.until))
        if self.before_id is not None:
            out.append(("id", "<", self.before_id))
        return out

    def key_filters(self) -> list[tuple[str, str]]:
        """(key name, value) to look up in the message-keys index."""
        return [(name, v[:_KEY_MAX]) for name in KEY_SOURCES if (v := getattr(self, name)) is not None]


#: How much of each payload is indexed for content search: the headers and segments where names and
#: identifiers are, not the base64 attachments (a PDF in a CDA) that would only swell the index.
SEARCHABLE_CHARS = 64 * 1024
#: Trigram indexes (pg_trgm, FTS5 trigram) need three characters to use the index at all.
CONTENT_MIN_CHARS = 3


def searchable_text(body: bytes) -> str:
    """The text of a payload as content search sees it: UTF-8, else ISO 8859-1 (HL7 v2 MSH-18 8859/1, the
    French default), NUL-free (PostgreSQL text cannot hold it), cut at SEARCHABLE_CHARS."""
    head = body[: SEARCHABLE_CHARS * 4]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", errors="ignore") if _mostly_utf8(head) else head.decode("latin-1")
    return text[:SEARCHABLE_CHARS].replace("\x00", " ")


def _mostly_utf8(head: bytes) -> bool:
    """A UTF-8 payload cut inside a multi-byte character at the end of `head` is still UTF-8."""
    try:
        head[:-3].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ContentQuery:
    """Messages whose payload contains `text` (case-insensitive), received in [since, until).

    Always bounded: the window is required (the API caps it), the result count by `limit`, and
    the stores run it under `timeout_secs` so that a broad search cannot hold a connection.
    """

    text: str
    since: datetime
    until: datetime
    limit: int = 100
    timeout_secs: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """What waits in one (route, destination) queue. Delivered rows are not counted."""

    route: str
    destination: str
    pending: int = 0
    """Waiting to be sent, retries included."""
    retrying: int = 0
    """Pending after at least one failed attempt."""
    in_flight: int = 0
    held: int = 0
    """Awaiting a qualified identity or an identity review."""
    dead: int = 0
    oldest_at: datetime | None = None
    """When the oldest pending or in-flight delivery was created."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """Who did what to which message: one audit-trail entry to append. Never a payload."""

    actor: str
    role: str
    action: str
    message_id: str | None = None
    target: str = ""
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    outcome: str = "ok"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """A stored audit entry; `hash` covers its fields and `prev_hash`, the previous entry's hash."""

    id: int
    at: datetime
    actor: str
    role: str
    action: str
    message_id: str | None
    target: str
    detail: str
    """Canonical JSON (sorted keys), hashed as stored."""
    outcome: str
    prev_hash: str
    hash: str

    @property
    def key_id(self) -> str | None:
        """The id of the key whose HMAC `hash` is, or None for an unkeyed (plain SHA-256) entry."""
        return self.hash.split(":")[1] if self.hash.startswith(AUDIT_HMAC_PREFIX) else None

    def expected_hash(self, key: AuditKey | None = None) -> str:
        """The hash this entry must carry: with `key` (the one named by `key_id`), its HMAC."""
        return audit_hash(
            self.prev_hash, self.id, self.at, self.actor, self.role, self.action, self.message_id, self.target,
            self.detail, self.outcome, key=key,
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": self.at.isoformat(), "actor": self.actor, "role": self.role, "action": self.action,
            "message_id": self.message_id, "target": self.target, "detail": json.loads(self.detail),
            "outcome": self.outcome, "prev_hash": self.prev_hash, "hash": self.hash,
        }  # fmt: skip


def canonical_detail(detail: Mapping[str, Any]) -> str:
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


#: Prefix of a keyed entry's hash: ``hmac-sha256:<key id>:<hex>``.
AUDIT_HMAC_PREFIX = "hmac-sha256:"


@dataclasses.dataclass(frozen=True, slots=True)
class AuditKey:
    """The secret keying the audit chain, kept outside the database (config or file), and its id."""

    id: str
    secret: bytes = dataclasses.field(repr=False)


def audit_hash(
    prev_hash: str,
    entry_id: int,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    message_id: str | None,
    target: str,
    detail: str,
    outcome: str,
    *,
    key: AuditKey | None = None,
) -> str:
    """SHA-256 over the previous hash and every field of the entry (a hash chain: editing, removing or
    reordering an entry breaks every later link); with `key`, HMAC-SHA-256 (RFC 2104) instead, so that
    only the key's holder can write a chain that verifies, not whoever can write to the database."""
    fields = [prev_hash, entry_id, at.isoformat(), actor, role, action, message_id, target, detail, outcome]
    data = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return f"{AUDIT_HMAC_PREFIX}{key.id}:{hmac.new(key.secret, data, hashlib.sha256).hexdigest()}"


def fold_queue_stats(rows: Iterable[tuple[str, str, str, int, datetime, int | None]]) -> list[QueueStats]:
    """Fold (route, destination, status, count, oldest created_at, retried) rows into one QueueStats per queue."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for route, destination, status, count, oldest, retried in rows:
        q = acc.setdefault((route, destination), {})
        if status == DeliveryStatus.PENDING:
            q["pending"] = q.get("pending", 0) + count
            q["retrying"] = q.get("retrying", 0) + int(retried or 0)
        elif status == DeliveryStatus.IN_FLIGHT:
            q["in_flight"] = count
        elif status == DeliveryStatus.DEAD:
            q["dead"] = count
        else:
            q["held"] = q.get("held", 0) + count
        waiting = status in (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT)
        if waiting and (q.get("oldest_at") is None or oldest < q["oldest_at"]):
            q["oldest_at"] = oldest
    return [QueueStats(route=r, destination=d, **q) for (r, d), q in sorted(acc.items())]


class OutcomeRecord(NamedTuple):
    """One delivery outcome as `Store.finish` takes it, queued for the stores' outcome group commit."""

    delivery_id: int
    owner: str
    status: str
    next_attempt_at: datetime | None
    error: str
    outcome: str
    started_at: datetime
    review: str | None
    output_metadata: Mapping[str, str] | None
    count_attempt: bool
    sent: SentPayload | None = None
    reply: PeerReply | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HourlyCount:
    """One counter of one (route, destination) over one hour, e.g. ``delivered`` = 12 in 14:00-15:00 UTC.

    Inbound counters (`received`, `rejected`) of a listener have route ``""`` and the listener as destination.
    """

    hour: datetime
    route: str
    destination: str
    counter: str
    count: int


def dump_metadata(metadata: Mapping[str, str]) -> str:
    return json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False)


def load_metadata(text: str | None) -> dict[str, str]:
    return json.loads(text) if text else {}


T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    """Batch concurrent writes into one transaction each (group commit).

    Callers await :meth:`submit`; a single writer task takes everything that
    queued up while the previous transaction was committing and hands it to
    `flush`, which must return one result per item, in order. If `flush`
    raises, every caller of that batch gets a :class:`StoreError`.
    """

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch: int,
        writers: int = 1,
        max_pending: int = 20_000,
    ):
        self._flush = flush
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(), name="group-commit") for _ in range(writers)]
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise StoreError("store is closed")
        if len(self._pending) >= self._max_pending:
            # Bounded: while the database is slow or away, callers get a refusal (AE, 4xx, 451) at
            # once instead of piling up unacknowledged work in memory.
            raise StoreError("commit queue full")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                self._resolve(batch, await self._flush([item for item, _ in batch]))
            except Exception as exc:
                if len(batch) == 1:
                    self._fail(batch, exc)
                    continue
                # One bad item must not cost the others their commit: write them one by one.
                for one in batch:
                    try:
                        self._resolve([one], await self._flush([one[0]]))
                    except Exception as exc1:
                        self._fail([one], exc1)

    @staticmethod
    def _resolve(batch: list[tuple[T, asyncio.Future[R]]], results: list[R]) -> None:
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: Exception) -> None:
        err = exc if isinstance(exc, StoreError) else StoreError(f"commit failed: {type(exc).__name__}")
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking writes, let the queued ones commit (for at most `timeout`), then stop."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._pending and (deadline is None or loop.time() < deadline):
            await asyncio.sleep(0.005)
        self._fail(self._pending, StoreError("store is closed"))
        self._pending.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
