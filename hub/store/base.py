"""Types shared by the store implementations, the Store protocol and group commit."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from hub.errors import StoreError
from hub.message import Message

__all__ = [
    "BLOCKING_STATUSES",
    "HELD_STATUSES",
    "Attempt",
    "Claimed",
    "Delivery",
    "GroupCommitter",
    "IdentityEvent",
    "IdentityRecord",
    "MessageRecord",
    "NewDelivery",
    "Review",
    "SearchQuery",
    "Store",
    "SubmitResult",
    "open_store",
]

#: Deliveries waiting for the patient's identity: for a qualified INS, or for an operator's review.
HELD_STATUSES = ("awaiting_identity", "identity_review")
#: Delivery statuses that hold back later deliveries of the same ordering key.
BLOCKING_STATUSES = ("pending", "in_flight", *HELD_STATUSES)
#: Message statuses.
MESSAGE_STATUSES = ("pending", "awaiting_identity", "identity_review", "delivered", "failed", "rejected", "unrouted")
#: Metadata keys copied into indexed columns.
INDEXED_KEYS = ("control_id", "sending_app", "sending_facility", "message_type", "patient_key")


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
class Claimed:
    delivery: Delivery
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: int
    number: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    error: str


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
    """Search by business keys; every field is an indexed column. Newest first, paged by `before_id`."""

    message_id: str | None = None
    control_id: str | None = None
    sending_app: str | None = None
    sending_facility: str | None = None
    patient_key: str | None = None
    message_type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: str | None = None
    limit: int = 100

    def filters(self) -> list[tuple[str, str, Any]]:
        """(column, operator, value) for every set field."""
        out: list[tuple[str, str, Any]] = []
        for col in ("control_id", "sending_app", "sending_facility", "patient_key", "message_type", "status"):
            value = getattr(self, col)
            if value is not None:
                out.append((col, "=", value))
        if self.message_id is not None:
            out.append(("id", "=", self.message_id))
        if self.since is not None:
            out.append(("received_at", ">=", self.since))
        if self.until is not None:
            out.append(("received_at", "<", self.until))
        if self.before_id is not None:
            out.append(("id", "<", self.before_id))
        return out


class Store(Protocol):
    """What the engine needs from durable storage. Implementations must pass the contract suite."""

    async def open(self) -> None:
        """Connect and migrate the schema to the current version."""

    async def close(self) -> None: ...

    async def submit(
        self, message: Message, deliveries: list[NewDelivery], *, endpoint: str, dedup_key: str | None
    ) -> SubmitResult:
        """Durably store a message and its deliveries in one transaction (group-committed).

        When `dedup_key` is already stored, nothing is written and the result says duplicate.
        """

    async def store_rejected(self, message: Message, *, endpoint: str, reason: str) -> None:
        """Durably store an inbound message that was refused, with the reason (no deliveries)."""

    async def claim(self, route: str, destination: str, *, limit: int, owner: str, lease_secs: float) -> list[Claimed]:
        """Take up to `limit` due deliveries of one queue, respecting ordering keys, under a lease."""

    async def finish(
        self,
        delivery_id: int,
        *,
        owner: str,
        status: str,
        next_attempt_at: datetime | None,
        error: str,
        outcome: str,
        started_at: datetime,
        review: str | None = None,
        output_metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """Record an attempt's outcome; False when the lease was lost meanwhile (nothing written).

        With status ``identity_review``, `review` is the reason and an open review is created.
        """

    async def release_held(self, patient_keys: list[str]) -> int:
        """Deliveries ``awaiting_identity`` for these patients back to pending, in their order."""

    async def get_identity(self, patient_key: str) -> IdentityRecord | None: ...

    async def save_identity(
        self, record: IdentityRecord, *, event: str, message_id: str | None, note: str = ""
    ) -> IdentityRecord:
        """Insert or update (optimistically: `record.version` must be the stored one); history kept.

        Raises StoreError when the stored version moved meanwhile.
        """

    async def list_identities(self, *, status: str | None = None, limit: int = 1000) -> list[IdentityRecord]: ...

    async def identities_by_ins(self, ins: str) -> list[IdentityRecord]: ...

    async def identities_merged_into(self, patient_key: str) -> list[IdentityRecord]:
        """Identities an A40 merged into this one (directly)."""

    async def identity_history(self, patient_key: str) -> list[IdentityEvent]: ...

    async def list_reviews(self, *, state: str | None = None, limit: int = 1000) -> list[Review]: ...

    async def resolve_review(self, review_id: int, *, action: str, by: str) -> Review | None:
        """`release` (send again, trait check waived for it) or `discard` (dead letter); None if not open."""

    async def release(self, delivery_ids: list[int], *, owner: str) -> int:
        """Give claimed deliveries back (shutdown) without counting the attempt."""

    async def recover_leases(self, *, owner: str | None = None) -> int:
        """Return to pending every expired lease, and every lease held by `owner` (a restarted node)."""

    async def requeue(self, delivery_ids: list[int]) -> int:
        """Dead (or delivered) deliveries back to pending with their attempts reset."""

    async def next_due(self, route: str, destination: str) -> datetime | None: ...

    async def undelivered_count(self) -> int: ...

    async def get_message(self, message_id: str) -> MessageRecord | None: ...

    async def search(self, query: SearchQuery) -> list[MessageRecord]: ...

    async def deliveries(self, message_ids: list[str]) -> dict[str, list[Delivery]]: ...

    async def find_deliveries(
        self, *, status: str | None = None, destination: str | None = None, limit: int = 1000
    ) -> list[Delivery]: ...

    async def attempts(self, delivery_id: int) -> list[Attempt]: ...

    async def schema_version(self) -> int: ...

    async def wait_for_work(self, timeout: float) -> None:
        """Sleep until another process signals new work, or `timeout` passes."""


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

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int, writers: int = 1):
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(), name="group-commit") for _ in range(writers)]
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise StoreError("store is closed")
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

    async def close(self) -> None:
        self._closed = True
        # Let the queued writes commit before stopping.
        while self._pending:
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def open_store(config: Any) -> Store:
    """Build and open the store named by a StoreConfig."""
    if config.kind == "postgres":
        from hub.store.postgres import PostgresStore

        store: Store = PostgresStore(
            config.dsn, schema=config.schema_, pool_size=config.pool_size, max_batch=config.max_batch
        )
    else:
        from hub.store.sqlite import SqliteStore

        store = SqliteStore(config.path, max_batch=config.max_batch)
    await store.open()
    return store
