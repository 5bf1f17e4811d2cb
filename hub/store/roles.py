"""The store's role protocols: what each part of the hub needs from durable storage, and nothing more.

:class:`Store` is their union, which both implementations (SQLite, PostgreSQL) provide and the contract suite
checks (``tests/store/``). A part that needs one role takes that role: the delivery worker a
:class:`DeliveryStore`, the identity registry an :class:`IdentityStore`, the audit helpers an
:class:`AuditStore`. Every method of the store belongs to exactly one role (``tests/store/test_roles.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from hub.message import Message
from hub.replies import PeerReply
from hub.store.base import (
    Attempt,
    AuditEvent,
    AuditKey,
    AuditRecord,
    Claimed,
    ContentQuery,
    Delivery,
    HourlyCount,
    IdentityEvent,
    IdentityRecord,
    MessageRecord,
    NewDelivery,
    QueueStats,
    Review,
    SearchQuery,
    SentPayload,
    SubmitResult,
)
from hub.store.content_index import IndexLag

__all__ = [
    "ROLES",
    "AuditStore",
    "DeliveryStore",
    "IdentityStore",
    "IngestStore",
    "OperationsStore",
    "SearchStore",
    "Store",
    "StoreLifecycle",
    "open_store",
]


@runtime_checkable
class StoreLifecycle(Protocol):
    """Opening, closing and health of the store."""

    async def open(self) -> None:
        """Connect and migrate the schema to the current version."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the store answers now (health checks)."""
        ...

    async def schema_version(self) -> int: ...


@runtime_checkable
class IngestStore(Protocol):
    """What the listeners need: commit an inbound message (and its deliveries) before acknowledging it."""

    async def submit(
        self, message: Message, deliveries: list[NewDelivery], *, endpoint: str, dedup_key: str | None
    ) -> SubmitResult:
        """Durably store a message and its deliveries in one transaction (group-committed).

        When `dedup_key` is already stored, nothing is written and the result says duplicate.
        """

    async def store_rejected(self, message: Message, *, endpoint: str, reason: str) -> None:
        """Durably store an inbound message that was refused, with the reason (no deliveries)."""


@runtime_checkable
class DeliveryStore(Protocol):
    """What the delivery workers need: claim due deliveries under a lease, record outcomes, give them back."""

    async def claim(
        self,
        route: str,
        destination: str,
        *,
        limit: int,
        owner: str,
        lease_secs: float,
        hold_behind_dead: bool = False,
    ) -> list[Claimed]:
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
        count_attempt: bool = True,
        sent: SentPayload | None = None,
        reply: PeerReply | None = None,
    ) -> bool:
        """Record an attempt's outcome; False when the lease was lost meanwhile (nothing written).

        `reply` (what the destination's peer answered, already cut to its bound) is stored with the
        attempt; :meth:`SearchStore.attempts` gives it back.

        `sent` (the steps' output this attempt computed) is stored with the outcome, replacing an
        earlier one; later claims of the delivery carry it (:attr:`Claimed.sent`).

        With status ``identity_review``, `review` is the reason and an open review is created.
        With ``count_attempt=False`` (the destination could not be reached, nothing was sent) the
        claim's attempt is given back and no attempt is recorded.
        """

    async def renew(self, delivery_ids: list[int], *, owner: str, lease_secs: float) -> set[int]:
        """Extend `owner`'s leases on these in-flight deliveries to `lease_secs` from now; returns the ids it
        still held (the others were taken back after their lease expired, and must not be sent)."""

    async def release(self, delivery_ids: list[int], *, owner: str) -> int:
        """Give claimed deliveries back (shutdown) without counting the attempt."""

    async def release_orphans(self, route: str, destination: str, *, owner: str, keep: list[int]) -> int:
        """Give back this owner's in-flight deliveries of one queue except `keep` (attempts given back too).

        A claim whose commit reached the database but whose answer was lost (the connection broke)
        leaves deliveries in flight that no worker holds; the worker calls this once the store is
        back, rather than leave them to wait for their lease to run out.
        """

    async def recover_leases(self, *, owner: str | None = None) -> int:
        """Return to pending every expired lease, and every lease held by `owner` (a restarted node)."""

    async def next_due(self, route: str, destination: str) -> datetime | None: ...

    async def wait_for_work(self, timeout: float) -> None:
        """Sleep until another process signals new work, or `timeout` passes."""

    async def dead_letter_ahead(self, delivery_id: int) -> int | None:
        """The earliest dead letter of the same queue and ordering key before this delivery, if any."""

    async def sent_payloads(self, delivery_ids: list[int], *, body: bool = True) -> dict[int, SentPayload]:
        """The stored SentPayload of these deliveries (those that have one).

        Without `body`, bodies are not read: ``b""`` stands for a body the steps changed, None as ever
        for the inbound body unchanged; `size` is the real size either way.
        """


@runtime_checkable
class SearchStore(Protocol):
    """Reading messages and their deliveries back: by id, by fields and business keys, by content."""

    async def get_message(self, message_id: str) -> MessageRecord | None: ...

    async def search(self, query: SearchQuery) -> list[MessageRecord]: ...

    async def search_content(self, query: ContentQuery) -> list[MessageRecord]:
        """Newest first; index-backed (trigram); StoreError if it outlasts `query.timeout_secs`.

        The index is written after the commit (hub/store/content_index.py): a message committed a moment ago
        may not be found yet, which :meth:`content_index_lag` tells."""

    async def index_content(self, limit: int) -> int:
        """Index the text of up to `limit` committed messages awaiting it; returns how many were taken.
        The store's own indexer calls it after commits and at start (catch-up after a crash)."""

    async def content_index_lag(self) -> IndexLag:
        """Committed messages not yet in the content index (counted up to a cap) and the oldest one's age."""

    async def deliveries(self, message_ids: list[str]) -> dict[str, list[Delivery]]: ...

    async def find_deliveries(
        self, *, status: str | None = None, destination: str | None = None, limit: int = 1000, after_id: int = 0
    ) -> list[Delivery]:
        """Deliveries by status and destination, oldest first, paged by `after_id` (a delivery id)."""

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        """The delivery's recorded attempts in order, each with the peer's reply when it gave one."""


@runtime_checkable
class IdentityStore(Protocol):
    """The patient identity registry, its history, the reviews it opens and the deliveries it holds."""

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

    async def release_held(self, patient_keys: list[str]) -> int:
        """Deliveries ``awaiting_identity`` for these patients back to pending, in their order."""


@runtime_checkable
class AuditStore(Protocol):
    """The hash-chained audit trail."""

    audit_key: AuditKey | None
    """The key of the audit chain's HMAC (None: plain SHA-256 links); never stored in the database."""

    async def append_audit(self, event: AuditEvent) -> AuditRecord:
        """Append one entry to the hash-chained audit trail (serialised across processes)."""

    async def list_audit(
        self, *, before_id: int | None = None, message_id: str | None = None, actor: str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:  # fmt: skip
        """Audit entries, newest first, paged by `before_id`."""

    async def audit_chain(self, *, after_id: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Audit entries in chain order (oldest first) after `after_id`, to verify the chain."""


@runtime_checkable
class OperationsStore(Protocol):
    """What operators and the cluster's housekeeping need: queue control, retention, statistics, named leases."""

    async def requeue(self, delivery_ids: list[int]) -> int:
        """Dead (or delivered) deliveries back to pending with their attempts reset.

        Their stored :class:`SentPayload` is dropped: the next attempt runs today's steps, since an
        operator requeues after fixing what made it fail (a table, a mapping, an identity).
        """

    async def discard(self, delivery_ids: list[int]) -> int:
        """Dead deliveries to ``discarded``: given up by an operator; they no longer hold their ordering key."""

    async def purge(self, *, before: datetime, statuses: tuple[str, ...], batch: int = 1000) -> int:
        """Delete up to `batch` messages received before `before` whose status is one of `statuses`, with
        their deliveries, attempts, reviews and search keys, in one transaction; returns how many.

        Retention runs it again and again (small transactions, never one giant DELETE). The audit
        trail is kept whole: its entries name message ids, and its hash chain must not break.
        """

    async def set_paused(self, route: str, destination: str, *, paused: bool, by: str = "") -> None:
        """Pause or resume one queue for every node, until changed again (kept across restarts)."""

    async def queue_pauses(self) -> dict[tuple[str, str], bool]:
        """The stored pause state of the queues an operator paused or resumed."""

    async def undelivered_count(self, *, cap: int | None = None) -> int:
        """Deliveries pending or in flight; with `cap`, counting stops there (bounded cost)."""

    async def queue_stats(self) -> list[QueueStats]:
        """Counts per (route, destination) of undelivered deliveries, and the oldest pending one's age."""

    async def queue_last_errors(self) -> dict[tuple[str, str], tuple[str, datetime]]:
        """Per (route, destination): the newest error of a delivery still waiting or dead, and when."""

    async def add_hourly(self, counts: Sequence[HourlyCount]) -> None:
        """Add these counts to the stored hourly totals (summed with what other nodes added)."""

    async def read_hourly(self, since: datetime) -> list[HourlyCount]:
        """Stored hourly totals from the hour holding `since` on, oldest first."""

    async def take_lease(self, name: str, *, owner: str, secs: float) -> str | None:
        """Take (or renew) the named lease for `owner` until `secs` from now, unless another owner's lease runs.

        Returns the state its holders saved (``""`` at first) when `owner` holds it now, None otherwise: work one
        node does for the cluster (alert evaluation) is taken over, with its state, when its holder dies."""

    async def save_lease_state(self, name: str, *, owner: str, state: str) -> bool:
        """Save the holder's state with the lease; False if `owner` no longer holds it."""

    async def release_lease(self, name: str, *, owner: str) -> None:
        """End `owner`'s lease now (shutdown): another node takes it at its next try."""


@runtime_checkable
class Store(
    StoreLifecycle, IngestStore, DeliveryStore, SearchStore, IdentityStore, AuditStore, OperationsStore, Protocol
):
    """What the engine needs from durable storage: every role. Implementations must pass the contract suite."""


#: The roles :class:`Store` is made of; each of its methods belongs to exactly one.
ROLES: tuple[type, ...] = (
    StoreLifecycle, IngestStore, DeliveryStore, SearchStore, IdentityStore, AuditStore, OperationsStore
)  # fmt: skip


async def open_store(config: Any) -> Store:
    """Build and open the store named by a StoreConfig."""
    if config.kind == "postgres":
        from hub.store.postgres import PostgresStore

        store: Store = PostgresStore(
            config.dsn, schema=config.schema_, pool_size=config.pool_size, max_batch=config.max_batch,
            index_delay_secs=config.index_delay_secs,
        )  # fmt: skip
    else:
        from hub.store.sqlite import SqliteStore

        store = SqliteStore(config.path, max_batch=config.max_batch, index_delay_secs=config.index_delay_secs)
    await store.open()
    return store
