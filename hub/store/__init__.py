"""The durable store: messages, their deliveries, attempts, and the queue built on them.

One protocol, :class:`Store`, made of role protocols (``hub/store/roles.py``: ingest, delivery,
search, identity, audit, operations, lifecycle) so that each part of the hub asks for the role
it uses; two implementations passing one contract suite (``tests/store/test_store_contract.py``),
which build their records with one row mapping (``hub/store/rows.py``):

* :class:`SqliteStore`, the embedded default: one file, one process, WAL with
  ``synchronous=FULL`` so that a commit survives power loss;
* :class:`PostgresStore` (asyncpg), for production and several hub processes
  sharing one database: claims use ``FOR UPDATE SKIP LOCKED``, wake-ups
  ``LISTEN/NOTIFY``.

Both *group-commit*: concurrent :meth:`Store.submit` calls made while a
transaction is being written are committed together in the next one, so a
durable commit-before-ACK costs one fsync per batch, not per message.

Delivery life cycle (``deliveries.status``)::

    pending ──claim──► in_flight ──ACCEPT──► delivered
       ▲                   │ RETRY (attempts left) ──► pending (next_attempt_at = now + backoff)
       │                   │ REJECT / last attempt ──► dead ──requeue──► pending
       └── lease expired / released on shutdown

A delivery whose ``ordering_key`` is set is claimed only when no earlier
delivery of the same queue and key is still pending, in flight or held for
its identity: FIFO per key, different keys in parallel. A dead delivery does
not block its key.

Business keys that are not columns (the INS, document uniqueIds) are indexed
in a message-keys table, written with the message at submit (only when its
metadata carries them) and when a delivery's steps record them. The audit
trail is hash-chained: each entry's hash covers the previous entry's hash.

The content-search index is written after the commit, off the ACK path
(``hub/store/content_index.py``): a submit lists its message as awaiting
indexing in the same transaction, and the store's background indexer takes
the list off in batches, at start too (what a crash left unindexed).
Named leases (``take_lease``) let one node do work for the whole cluster
(alert evaluation), taken over with its saved state when that node dies.

Identity holds (``hub/identity_stage.py``)::

    in_flight ──patient not qualified──► awaiting_identity ──ADT qualifies it──► pending
    in_flight ──traits disagree────────► identity_review ──operator: release──► pending
                                                         └─operator: discard──► dead
"""

from hub.store.base import (
    BLOCKING_STATUSES,
    HELD_STATUSES,
    Attempt,
    AuditEvent,
    AuditKey,
    AuditRecord,
    Claimed,
    ContentQuery,
    Delivery,
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
from hub.store.roles import (
    AuditStore,
    DeliveryStore,
    IdentityStore,
    IngestStore,
    OperationsStore,
    SearchStore,
    Store,
    StoreLifecycle,
    open_store,
)

__all__ = [
    "BLOCKING_STATUSES",
    "HELD_STATUSES",
    "Attempt",
    "AuditEvent",
    "AuditKey",
    "AuditRecord",
    "AuditStore",
    "Claimed",
    "ContentQuery",
    "Delivery",
    "DeliveryStore",
    "IdentityEvent",
    "IdentityRecord",
    "IdentityStore",
    "IngestStore",
    "MessageRecord",
    "NewDelivery",
    "OperationsStore",
    "QueueStats",
    "Review",
    "SearchQuery",
    "SearchStore",
    "SentPayload",
    "Store",
    "StoreLifecycle",
    "SubmitResult",
    "open_store",
]
