"""SQLite store: the embedded default (one process, one file).

All SQL runs on one dedicated thread that owns the connection, so the event
loop never blocks on disk. WAL journal with ``synchronous=FULL``: a commit
is on disk, across power loss, before :meth:`submit` returns and the sender
is acknowledged. Group commit makes that one fsync per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from hub.errors import StoreError
from hub.message import Message, utcnow
from hub.replies import PeerReply
from hub.statuses import DeliveryStatus, MessageStatus, ReviewState
from hub.store.base import (
    AUDIT_GENESIS,
    BLOCKING_STATUSES,
    DEAD_LETTER_AHEAD_SQL,
    SEARCHABLE_CHARS,
    Attempt,
    AuditEvent,
    AuditKey,
    AuditRecord,
    Claimed,
    ContentQuery,
    Delivery,
    GroupCommitter,
    HourlyCount,
    IdentityEvent,
    IdentityRecord,
    MessageRecord,
    NewDelivery,
    OutcomeRecord,
    QueueStats,
    Review,
    SearchQuery,
    SentPayload,
    SubmitResult,
    audit_hash,
    business_keys,
    canonical_detail,
    dump_metadata,
    fold_queue_stats,
    searchable_text,
)
from hub.store.content_index import LAG_COUNT_CAP, ContentIndexer, IndexLag
from hub.store.rows import (
    ATTEMPT_SELECT,
    AUDIT_SELECT,
    DELIVERY_SELECT,
    IDENTITY_SELECT,
    MESSAGE_COLUMNS,
    MESSAGE_SELECT,
    REVIEW_SELECT,
    SENT_COLUMNS,
    RowMapper,
    reply_values,
    select_list,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # 1: messages, deliveries, attempts
    """
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        parent_id TEXT,
        correlation_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body BLOB NOT NULL,
        metadata TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        control_id TEXT,
        sending_app TEXT,
        sending_facility TEXT,
        message_type TEXT,
        patient_key TEXT,
        dedup_key TEXT
    );
    CREATE UNIQUE INDEX messages_dedup ON messages (dedup_key) WHERE dedup_key IS NOT NULL;
    CREATE INDEX messages_received ON messages (received_at);
    CREATE INDEX messages_control ON messages (control_id);
    CREATE INDEX messages_sender ON messages (sending_app, sending_facility, control_id);
    CREATE INDEX messages_patient ON messages (patient_key, received_at);
    CREATE INDEX messages_status ON messages (status, received_at);
    CREATE INDEX messages_type ON messages (message_type, received_at);
    CREATE INDEX messages_correlation ON messages (correlation_id);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL REFERENCES messages (id),
        route TEXT NOT NULL,
        destination TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        ordering_key TEXT,
        lease_owner TEXT,
        lease_expires_at REAL,
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_message ON deliveries (message_id);
    CREATE INDEX deliveries_due ON deliveries (route, destination, next_attempt_at, id)
        WHERE status = 'pending';
    CREATE INDEX deliveries_order ON deliveries (route, destination, ordering_key, id)
        WHERE status IN ('pending', 'in_flight');
    CREATE INDEX deliveries_leases ON deliveries (lease_expires_at) WHERE status = 'in_flight';
    CREATE INDEX deliveries_status ON deliveries (status, destination);
    CREATE TABLE attempts (
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
        number INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (delivery_id, number)
    );
    """,
    # 2: identity registry, reviews, held deliveries
    """
    DROP INDEX deliveries_order;
    CREATE INDEX deliveries_order ON deliveries (route, destination, ordering_key, id)
        WHERE status IN ('pending', 'in_flight', 'awaiting_identity', 'identity_review');
    CREATE INDEX deliveries_held ON deliveries (message_id) WHERE status IN ('awaiting_identity', 'identity_review');
    ALTER TABLE deliveries ADD COLUMN identity_override INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE identities (
        patient_key TEXT PRIMARY KEY,
        authority TEXT NOT NULL,
        local_id TEXT NOT NULL,
        status TEXT NOT NULL,
        ins TEXT,
        ins_oid TEXT,
        attributes TEXT NOT NULL DEFAULT '',
        traits TEXT NOT NULL DEFAULT '{}',
        merged_into TEXT,
        version INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX identities_ins ON identities (ins);
    CREATE INDEX identities_status ON identities (status);
    CREATE INDEX identities_merged ON identities (merged_into) WHERE merged_into IS NOT NULL;
    CREATE TABLE identity_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        patient_key TEXT NOT NULL,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        message_id TEXT,
        status TEXT NOT NULL,
        ins TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX identity_history_key ON identity_history (patient_key, id);
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
        message_id TEXT NOT NULL,
        patient_key TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        resolved_at REAL,
        resolved_by TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX reviews_state ON reviews (state, id);
    """,
    # 3: what the steps added to the metadata, per delivery (e.g. which INS was stamped and why)
    "ALTER TABLE deliveries ADD COLUMN output_metadata TEXT NOT NULL DEFAULT '{}'",
    # 4: business keys that are not columns (INS, document uniqueId), and the hash-chained audit trail
    """
    CREATE TABLE message_keys (
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        message_id TEXT NOT NULL,
        PRIMARY KEY (name, value, message_id)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        message_id TEXT,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        outcome TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_message ON audit (message_id, id) WHERE message_id IS NOT NULL;
    CREATE INDEX audit_actor ON audit (actor, id);
    """,
    # 5: paused queues, shared by every node and kept across restarts
    """
    CREATE TABLE queue_state (
        route TEXT NOT NULL,
        destination TEXT NOT NULL,
        paused INTEGER NOT NULL,
        changed_by TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL,
        PRIMARY KEY (route, destination)
    );
    """,
    # 6: a delivery queued behind an earlier one of its ordering key is `waiting` and out of the claim index,
    # so that claiming costs the same whatever the backlog (see _claim_sync)
    """
    ALTER TABLE deliveries ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    UPDATE deliveries SET waiting = 1 WHERE status = 'pending' AND ordering_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM deliveries e WHERE e.route = deliveries.route AND e.destination = deliveries.destination
        AND e.ordering_key = deliveries.ordering_key AND e.id < deliveries.id
        AND e.status IN ('pending', 'in_flight', 'awaiting_identity', 'identity_review'));
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_ready ON deliveries (route, destination, next_attempt_at, id)
        WHERE status = 'pending' AND waiting = 0;
    CREATE INDEX deliveries_dead_keys ON deliveries (route, destination, ordering_key, id) WHERE status = 'dead';
    """,
    # 7: what each delivery sends: its steps' output, computed once and resent by retries (body NULL: the
    # inbound body unchanged). A table of its own keeps the deliveries rows, scanned by every claim, small.
    """
    CREATE TABLE sent (
        delivery_id INTEGER PRIMARY KEY REFERENCES deliveries (id),
        sent_id TEXT NOT NULL,
        parent_id TEXT,
        content_type TEXT NOT NULL,
        body BLOB,
        metadata TEXT NOT NULL,
        size INTEGER NOT NULL,
        basis TEXT NOT NULL DEFAULT '',
        computed_at REAL NOT NULL
    );
    """,
    # 8: content search: the decoded text of each payload (its first SEARCHABLE_CHARS) in an FTS5 trigram
    # index, so that any substring of three characters or more is an index lookup (SQLite FTS5 "The
    # Experimental Trigram Tokenizer"); rows written before this migration are indexed as UTF-8.
    f"""
    CREATE VIRTUAL TABLE message_text USING fts5 (body, message_id UNINDEXED, tokenize = 'trigram');
    INSERT INTO message_text (body, message_id)
        SELECT substr(CAST(body AS TEXT), 1, {SEARCHABLE_CHARS}), id FROM messages;
    """,
    # 9: the content index is written after the commit (hub/store/content_index.py): a submit only lists its
    # message here, in its own transaction, and the indexer takes the rows off once their text is indexed
    "CREATE TABLE text_pending (message_id TEXT PRIMARY KEY) WITHOUT ROWID",
    # 10: named leases for work one node does for the cluster (alert evaluation), with the holder's state
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT ''
    );
    """,
    # 11: what the destination's peer answered to each attempt (hub/replies.py), its bytes cut to a bound;
    # reply_kind NULL: no reply. Beside the attempt it answers: written in the same INSERT, no extra statement.
    """
    ALTER TABLE attempts ADD COLUMN reply_kind TEXT;
    ALTER TABLE attempts ADD COLUMN reply_summary TEXT;
    ALTER TABLE attempts ADD COLUMN reply_content_type TEXT;
    ALTER TABLE attempts ADD COLUMN reply BLOB;
    ALTER TABLE attempts ADD COLUMN reply_size INTEGER;
    ALTER TABLE attempts ADD COLUMN reply_at REAL;
    """,
]

_BLOCKING = ", ".join(f"'{s}'" for s in BLOCKING_STATUSES)


def _ts(dt: datetime) -> float:
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


_ROWS = RowMapper(timestamp=_dt, audit_at=datetime.fromisoformat)


#: Without bodies: ``b""`` stands for a stored body, NULL stays NULL (the inbound body unchanged).
_SENT_NO_BODY = {"body": "CASE WHEN body IS NULL THEN NULL ELSE x'' END"}


def _sent_rows(db: sqlite3.Connection, ids: list[int], *, body: bool = True) -> dict[int, SentPayload]:
    marks = ",".join("?" * len(ids))
    cols = select_list(SENT_COLUMNS, replace=None if body else _SENT_NO_BODY)
    return {r[0]: _ROWS.sent(r) for r in db.execute(f"SELECT {cols} FROM sent WHERE delivery_id IN ({marks})", ids)}


def _insert_keys(db: sqlite3.Connection, message_id: str, keys: list[tuple[str, str]]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO message_keys (name, value, message_id) VALUES (?,?,?)",
        [(name, value, message_id) for name, value in keys],
    )


_Submission = tuple[Message, list[NewDelivery], str, str | None, str, str]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class SqliteStore:
    """The Store protocol on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_batch: int = 512,
        wal_limit_bytes: int = 64 * 1024 * 1024,
        index_delay_secs: float = 0.05,
    ) -> None:
        self.path = Path(path)
        self._indexer = ContentIndexer(self.index_content, delay_secs=index_delay_secs)
        self.wal_limit_bytes = wal_limit_bytes
        self._max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None
        self._committer: GroupCommitter[_Submission, SubmitResult] | None = None
        self._finisher: GroupCommitter[OutcomeRecord, bool] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.checkpoint_secs = 1.0
        self.audit_key: AuditKey | None = None  # set by the hub: HMAC-keys the audit chain

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {type(exc).__name__}") from None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._open_sync)
        self._committer = GroupCommitter(self._flush, max_batch=self._max_batch)
        self._finisher = GroupCommitter(self._finish_batch, max_batch=self._max_batch)
        if str(self.path) != ":memory:":
            self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="sqlite-checkpoint")
        self._indexer.start()

    async def _checkpoint_loop(self) -> None:
        """Move the WAL into the database from a second connection, off the commit thread.

        SQLite's automatic checkpoint runs inside the committing transaction, so with
        ``synchronous=FULL`` every thousandth commit would carry a large copy and fsync and every
        sender waiting on that group commit would see it. A PASSIVE checkpoint never blocks the
        writer (SQLite WAL mode, "Checkpointing"); it catches up between bursts.

        Under sustained writes a PASSIVE checkpoint never reaches the end of the WAL, and the WAL
        is only rewound when a checkpoint has copied all of it: it would grow without bound. So
        once the WAL passes ``wal_limit_bytes`` a TRUNCATE checkpoint runs instead, on the store's
        own thread: the writer pauses for the time of the copy (the group commit queues meanwhile)
        and the file is emptied. From the other connection it would starve: the writer takes the
        lock again between two batches faster than SQLite's busy handler polls for it.
        """
        loop = asyncio.get_running_loop()
        wal = Path(str(self.path) + "-wal")
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint") as pool:
            conn = await loop.run_in_executor(pool, lambda: sqlite3.connect(str(self.path), check_same_thread=False))
            try:
                while True:
                    await asyncio.sleep(self.checkpoint_secs)
                    # Busy, full disk: the next round tries again.
                    if _size(wal) > self.wal_limit_bytes:
                        with contextlib.suppress(StoreError):
                            await self._run(self._fetchone, "PRAGMA wal_checkpoint(TRUNCATE)", ())
                    else:
                        with contextlib.suppress(sqlite3.Error):
                            await loop.run_in_executor(pool, conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                await loop.run_in_executor(pool, conn.close)

    async def ping(self) -> None:
        """Raise StoreError unless the database can be read now (for /healthz)."""
        await self._run(self._fetchone, "SELECT 1", ())

    def _open_sync(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an ACKed message survives power loss.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run beside the writer: _checkpoint_loop
        # After a checkpoint rewinds the WAL, the file is cut back to this size instead of staying
        # as large as the largest burst it ever held.
        db.execute(f"PRAGMA journal_size_limit={self.wal_limit_bytes}")
        self._db = db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in enumerate(MIGRATIONS, start=1):
            if number > version:
                db.execute("BEGIN IMMEDIATE")
                for stmt in sql.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute(f"PRAGMA user_version={number}")
                db.execute("COMMIT")

    async def close(self) -> None:
        await self._indexer.close()
        if self._finisher:
            await self._finisher.close()
        if self._committer:
            await self._committer.close()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
        if self._db is not None:
            with contextlib.suppress(StoreError):
                await self._run(self._db.execute, "PRAGMA wal_checkpoint(PASSIVE)")  # never waits on readers
            await self._run(self._db.close)
        self._executor.shutdown(wait=True)

    async def schema_version(self) -> int:
        return int((await self._run(self._fetchone, "PRAGMA user_version", ()))[0])

    # -- small helpers (run on the store thread) ----------------------------------------------------
    def _fetchone(self, sql: str, args: tuple[Any, ...]) -> Any:
        assert self._db is not None
        return self._db.execute(sql, args).fetchone()

    def _fetchall(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        assert self._db is not None
        return self._db.execute(sql, args).fetchall()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (full disk, I/O error) may or may not have ended the transaction
            # (SQLite "Response To Errors Within A Transaction"); never leave one open, or every
            # later BEGIN fails and the store stays broken after the cause has gone.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        return result

    # -- writes -------------------------------------------------------------------------------------
    async def submit(
        self, message: Message, deliveries: list[NewDelivery], *, endpoint: str, dedup_key: str | None
    ) -> SubmitResult:
        assert self._committer is not None
        status = MessageStatus.PENDING if deliveries else MessageStatus.UNROUTED
        return await self._committer.submit((message, deliveries, endpoint, dedup_key, status, ""))

    async def store_rejected(self, message: Message, *, endpoint: str, reason: str) -> None:
        assert self._committer is not None
        await self._committer.submit((message, [], endpoint, None, MessageStatus.REJECTED, reason))

    async def _flush(self, batch: list[_Submission]) -> list[SubmitResult]:
        results: list[SubmitResult] = await self._run(self._tx, lambda db: self._insert_batch(db, batch))
        self._indexer.wake()
        return results

    async def index_content(self, limit: int) -> int:
        """Write the searchable text of up to `limit` messages awaiting indexing; returns how many it took.

        Its own transaction, not fsynced: lost to a power cut, it only leaves the rows pending (indexed again).
        """

        def work(db: sqlite3.Connection) -> int:
            rows = db.execute(
                "SELECT p.message_id, substr(m.body, 1, ?) FROM text_pending p LEFT JOIN messages m"
                " ON m.id = p.message_id ORDER BY p.message_id LIMIT ?",
                (SEARCHABLE_CHARS * 4, limit),
            ).fetchall()
            db.executemany(
                "INSERT INTO message_text (body, message_id) VALUES (?, ?)",
                [(searchable_text(bytes(body)), mid) for mid, body in rows if body is not None],
            )
            db.executemany("DELETE FROM text_pending WHERE message_id = ?", [(mid,) for mid, _ in rows])
            return len(rows)

        return await self._run(self._tx_unsynced, work)

    async def take_lease(self, name: str, *, owner: str, secs: float) -> str | None:
        now = time.time()
        row = await self._run(self._tx_unsynced, lambda db: db.execute(
            "INSERT INTO leases (name, owner, expires_at) VALUES (?,?,?) ON CONFLICT (name) DO UPDATE"
            " SET owner = excluded.owner, expires_at = excluded.expires_at"
            " WHERE leases.owner = excluded.owner OR leases.expires_at < ? RETURNING state",
            (name, owner, now + secs, now),
        ).fetchone())  # fmt: skip
        return None if row is None else str(row[0])

    async def save_lease_state(self, name: str, *, owner: str, state: str) -> bool:
        cur = await self._run(self._tx, lambda db: db.execute(
            "UPDATE leases SET state = ? WHERE name = ? AND owner = ?", (state, name, owner)))  # fmt: skip
        return bool(cur.rowcount)

    async def release_lease(self, name: str, *, owner: str) -> None:
        await self._run(self._tx, lambda db: db.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ?", (name, owner)))  # fmt: skip

    async def content_index_lag(self) -> IndexLag:
        row = await self._run(
            self._fetchone,
            "SELECT count(*), min(m.received_at) FROM (SELECT message_id FROM text_pending LIMIT ?) p"
            " JOIN messages m ON m.id = p.message_id",
            (LAG_COUNT_CAP,),
        )
        return IndexLag(int(row[0]), _dt(row[1]) if row[1] is not None else None)

    def _insert_batch(self, db: sqlite3.Connection, batch: list[_Submission]) -> list[SubmitResult]:
        now = time.time()
        results = []
        for message, deliveries, endpoint, dedup_key, status, reason in batch:
            md = message.metadata
            cur = db.execute(
                "INSERT INTO messages (id, parent_id, correlation_id, endpoint, content_type, body, metadata,"
                " status, reason, received_at, updated_at, control_id, sending_app, sending_facility,"
                " message_type, patient_key, dedup_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING",
                (
                    message.id,
                    message.parent_id,
                    message.correlation_id,
                    endpoint,
                    message.content_type,
                    message.body,
                    dump_metadata(md),
                    status,
                    reason,
                    _ts(message.received_at),
                    now,
                    md.get("control_id"),
                    md.get("sending_app"),
                    md.get("sending_facility"),
                    md.get("message_type"),
                    md.get("patient_key"),
                    dedup_key,
                ),
            )
            if cur.rowcount == 0:
                row = db.execute("SELECT id FROM messages WHERE dedup_key = ?", (dedup_key,)).fetchone()
                results.append(SubmitResult(row[0], True, 0))
                continue
            db.executemany(
                "INSERT INTO deliveries (message_id, route, destination, status, max_attempts, next_attempt_at,"
                " ordering_key, created_at, updated_at, waiting) VALUES (?,?,?,'pending',?,?,?,?,?,?)",
                [
                    (
                        message.id, d.route, d.destination, d.max_attempts, now, d.ordering_key, now, now,
                        d.ordering_key is not None and self._key_busy(db, d.route, d.destination, d.ordering_key),
                    )
                    for d in deliveries
                ],
            )  # fmt: skip
            keys = business_keys(md)
            if keys:
                _insert_keys(db, message.id, keys)
            db.execute("INSERT INTO text_pending (message_id) VALUES (?)", (message.id,))
            results.append(SubmitResult(message.id, False, len(deliveries)))
        return results

    @staticmethod
    def _key_busy(db: sqlite3.Connection, route: str, destination: str, key: str) -> bool:
        """Whether an ordering key has a delivery that holds back later ones (one probe of deliveries_order)."""
        return (
            db.execute(
                f"SELECT 1 FROM deliveries WHERE route = ? AND destination = ? AND ordering_key = ?"
                f" AND status IN ({_BLOCKING}) LIMIT 1",
                (route, destination, key),
            ).fetchone()
            is not None
        )

    @staticmethod
    def _promote_next(db: sqlite3.Connection, delivery_id: int) -> None:
        """After a delivery stopped holding back its key: the key's first blocking delivery stops waiting."""
        db.execute(
            f"UPDATE deliveries SET waiting = 0 WHERE waiting = 1 AND id = (SELECT n.id FROM deliveries d"
            f" JOIN deliveries n ON n.route = d.route AND n.destination = d.destination"
            f" AND n.ordering_key = d.ordering_key WHERE d.id = ? AND n.status IN ({_BLOCKING}) ORDER BY n.id LIMIT 1)",
            (delivery_id,),
        )

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
        return await self._run(
            self._tx_unsynced,
            lambda db: self._claim_sync(db, route, destination, limit, owner, lease_secs, hold_behind_dead),
        )

    def _tx_unsynced(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A transaction whose commit is not fsynced: a claim lost to a power cut only gives the delivery back
        to pending (sent at least once either way). The next FULL commit syncs it with the rest of the WAL,
        and a WAL commit is atomic whatever the setting (SQLite "PRAGMA synchronous", WAL mode)."""
        db = self._db
        assert db is not None
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._tx(fn)
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _claim_sync(
        self,
        db: sqlite3.Connection,
        route: str,
        destination: str,
        limit: int,
        owner: str,
        lease_secs: float,
        hold_behind_dead: bool,
    ) -> list[Claimed]:
        now = time.time()
        # Only the first delivery of each ordering key is not `waiting`, so the walk of deliveries_ready
        # meets claimable rows at once, however deep the backlog behind them. The NOT EXISTS test still
        # guards FIFO on its own (one index probe per candidate).
        # The status lists are literal so that SQLite can use the partial indexes (deliveries_order, and
        # deliveries_dead_keys when a dead letter holds its key).
        hold = (
            " AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.route = c.route AND x.destination = c.destination"
            " AND x.ordering_key = c.ordering_key AND x.status = 'dead' AND x.id < c.id)"
            if hold_behind_dead
            else ""
        )
        rows = db.execute(
            f"SELECT {DELIVERY_SELECT} FROM deliveries c WHERE route = ? AND destination = ? AND status = 'pending'"
            " AND waiting = 0 AND next_attempt_at <= ? AND (ordering_key IS NULL OR NOT EXISTS ("
            "  SELECT 1 FROM deliveries e WHERE e.route = c.route AND e.destination = c.destination"
            f"  AND e.ordering_key = c.ordering_key AND e.status IN ({_BLOCKING}) AND e.id < c.id)){hold}"
            " ORDER BY next_attempt_at, id LIMIT ?",
            (route, destination, now, limit),
        ).fetchall()
        if not rows:
            return []
        ids = [r[0] for r in rows]
        marks = ",".join("?" * len(ids))
        db.execute(
            f"UPDATE deliveries SET status = 'in_flight', attempts = attempts + 1, lease_owner = ?,"
            f" lease_expires_at = ?, updated_at = ? WHERE id IN ({marks})",
            (owner, now + lease_secs, now, *ids),
        )
        msg_ids = sorted({r[1] for r in rows})
        mmarks = ",".join("?" * len(msg_ids))
        messages = {
            r[0]: _ROWS.message_record(r).message
            for r in db.execute(f"SELECT {MESSAGE_SELECT} FROM messages WHERE id IN ({mmarks})", msg_ids).fetchall()
        }
        sent = _sent_rows(db, ids)
        out = []
        for r in rows:
            d = dataclasses.replace(_ROWS.delivery(r), status=DeliveryStatus.IN_FLIGHT, attempts=r[5] + 1)
            out.append(Claimed(d, messages[d.message_id], sent.get(d.id)))
        return out

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
        assert self._finisher is not None
        return await self._finisher.submit(
            OutcomeRecord(
                delivery_id, owner, status, next_attempt_at, error, outcome, started_at, review, output_metadata,
                count_attempt, sent, reply,
            )
        )  # fmt: skip

    async def _finish_batch(self, batch: list[OutcomeRecord]) -> list[bool]:
        """Outcomes recorded together (group commit): one transaction and one fsync for the batch."""
        return await self._run(self._tx, lambda db: [self._finish_sync(db, f) for f in batch])

    def _finish_sync(self, db: sqlite3.Connection, record: OutcomeRecord) -> bool:
        delivery_id, owner, status, next_attempt_at, error, outcome, started_at, review, output_metadata, counted = (
            record[:10]
        )
        now = time.time()
        row = db.execute(
            "SELECT message_id, attempts FROM deliveries WHERE id = ? AND status = 'in_flight' AND lease_owner = ?",
            (delivery_id, owner),
        ).fetchone()
        if row is None:
            return False
        message_id, attempts = row
        db.execute(
            "UPDATE deliveries SET status = ?, next_attempt_at = ?, last_error = ?, lease_owner = NULL,"
            " lease_expires_at = NULL, updated_at = ?, attempts = attempts - ?,"
            " output_metadata = COALESCE(?, output_metadata) WHERE id = ?",
            (
                status,
                _ts(next_attempt_at) if next_attempt_at else now,
                error,
                now,
                0 if counted else 1,
                json.dumps(dict(output_metadata)) if output_metadata is not None else None,
                delivery_id,
            ),
        )
        if (sent := record.sent) is not None:
            db.execute(
                "INSERT OR REPLACE INTO sent (delivery_id, sent_id, parent_id, content_type, body, metadata,"
                " size, basis, computed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (delivery_id, sent.sent_id, sent.parent_id, sent.content_type, sent.body,
                 dump_metadata(sent.metadata), sent.size, sent.basis, _ts(sent.computed_at)),
            )  # fmt: skip
        if not counted:  # the destination was not reached: no attempt to record
            return True  # (in flight → pending: the message stays pending)
        reply = reply_values(record.reply)
        db.execute(
            f"INSERT OR REPLACE INTO attempts ({ATTEMPT_SELECT}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (delivery_id, attempts, _ts(started_at), now, outcome, error, *reply[:5],
             None if record.reply is None else _ts(record.reply.received_at)),
        )  # fmt: skip
        if status not in BLOCKING_STATUSES:
            self._promote_next(db, delivery_id)
        keys = business_keys(output_metadata) if output_metadata else None
        if keys:
            _insert_keys(db, message_id, keys)
        if status == DeliveryStatus.IDENTITY_REVIEW:
            key = db.execute("SELECT patient_key FROM messages WHERE id = ?", (message_id,)).fetchone()[0]
            db.execute(
                "INSERT INTO reviews (delivery_id, message_id, patient_key, reason, state, created_at)"
                " VALUES (?,?,?,?,'open',?)",
                (delivery_id, message_id, key or "", review or error, now),
            )
        self._refresh_message_status(db, [message_id], now)
        return True

    @staticmethod
    def _refresh_message_status(db: sqlite3.Connection, message_ids: list[str], now: float) -> None:
        for mid in message_ids:
            db.execute(
                "UPDATE messages SET updated_at = :now, status = CASE"
                " WHEN EXISTS (SELECT 1 FROM deliveries WHERE message_id = :mid"
                "   AND status IN ('pending', 'in_flight')) THEN 'pending'"
                " WHEN EXISTS (SELECT 1 FROM deliveries WHERE message_id = :mid AND status = 'awaiting_identity')"
                "   THEN 'awaiting_identity'"
                " WHEN EXISTS (SELECT 1 FROM deliveries WHERE message_id = :mid AND status = 'identity_review')"
                "   THEN 'identity_review'"
                " WHEN EXISTS (SELECT 1 FROM deliveries WHERE message_id = :mid AND status IN ('dead', 'discarded'))"
                "   THEN 'failed' ELSE 'delivered' END"
                " WHERE id = :mid AND status NOT IN ('rejected', 'unrouted')",
                {"now": now, "mid": mid},
            )

    async def renew(self, delivery_ids: list[int], *, owner: str, lease_secs: float) -> set[int]:
        if not delivery_ids:
            return set()

        def work(db: sqlite3.Connection) -> set[int]:
            marks = ",".join("?" * len(delivery_ids))
            rows = db.execute(
                f"UPDATE deliveries SET lease_expires_at = ? WHERE status = 'in_flight' AND lease_owner = ?"
                f" AND id IN ({marks}) RETURNING id",
                (time.time() + lease_secs, owner, *delivery_ids),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._run(self._tx_unsynced, work)

    async def release(self, delivery_ids: list[int], *, owner: str) -> int:
        if not delivery_ids:
            return 0

        def work(db: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(delivery_ids))
            cur = db.execute(
                f"UPDATE deliveries SET status = 'pending', attempts = MAX(attempts - 1, 0), lease_owner = NULL,"
                f" lease_expires_at = NULL, updated_at = ? WHERE status = 'in_flight' AND lease_owner = ?"
                f" AND id IN ({marks})",
                (time.time(), owner, *delivery_ids),
            )
            return cur.rowcount

        return await self._run(self._tx, work)

    async def recover_leases(self, *, owner: str | None = None) -> int:
        def work(db: sqlite3.Connection) -> int:
            now = time.time()
            cur = db.execute(
                "UPDATE deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = ? WHERE status = 'in_flight' AND (lease_expires_at < ? OR lease_owner = ?)",
                (now, now, owner),
            )
            return cur.rowcount

        return await self._run(self._tx, work)

    async def requeue(self, delivery_ids: list[int]) -> int:
        if not delivery_ids:
            return 0

        def work(db: sqlite3.Connection) -> int:
            now = time.time()
            marks = ",".join("?" * len(delivery_ids))
            rows = db.execute(
                f"SELECT id, message_id FROM deliveries WHERE id IN ({marks}) AND status IN ('dead', 'delivered')",
                delivery_ids,
            ).fetchall()
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            marks = ",".join("?" * len(ids))
            db.execute(
                f"UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, last_error = '',"
                f" updated_at = ? WHERE id IN ({marks})",
                (now, now, *ids),
            )
            db.execute(f"DELETE FROM sent WHERE delivery_id IN ({marks})", ids)  # today's steps run again
            self._refresh_message_status(db, sorted({r[1] for r in rows}), now)
            return len(ids)

        return await self._run(self._tx, work)

    async def release_orphans(self, route: str, destination: str, *, owner: str, keep: list[int]) -> int:
        marks = ",".join("?" * len(keep))
        return await self._run(
            self._tx,
            lambda db: db.execute(
                "UPDATE deliveries SET status = 'pending', attempts = MAX(attempts - 1, 0), lease_owner = NULL,"
                " lease_expires_at = NULL, updated_at = ? WHERE route = ? AND destination = ?"
                f" AND status = 'in_flight' AND lease_owner = ? AND id NOT IN ({marks})",
                (time.time(), route, destination, owner, *keep),
            ).rowcount,
        )

    async def dead_letter_ahead(self, delivery_id: int) -> int | None:
        row = await self._run(self._fetchone, DEAD_LETTER_AHEAD_SQL.format(t="deliveries", p="?"), (delivery_id,))
        return int(row[0]) if row else None

    async def discard(self, delivery_ids: list[int]) -> int:
        if not delivery_ids:
            return 0
        marks = ",".join("?" * len(delivery_ids))
        return await self._run(
            self._tx,
            lambda db: db.execute(
                f"UPDATE deliveries SET status = 'discarded', updated_at = ? WHERE status = 'dead' AND id IN ({marks})",
                (time.time(), *delivery_ids),
            ).rowcount,
        )

    async def release_held(self, patient_keys: list[str]) -> int:
        if not patient_keys:
            return 0

        def work(db: sqlite3.Connection) -> int:
            now = time.time()
            marks = ",".join("?" * len(patient_keys))
            mids = [
                r[0]
                for r in db.execute(
                    f"SELECT DISTINCT d.message_id FROM deliveries d JOIN messages m ON m.id = d.message_id"
                    f" WHERE d.status = 'awaiting_identity' AND m.patient_key IN ({marks})",
                    patient_keys,
                ).fetchall()
            ]
            if not mids:
                return 0
            mmarks = ",".join("?" * len(mids))
            cur = db.execute(
                f"UPDATE deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ?"
                f" WHERE status = 'awaiting_identity' AND message_id IN ({mmarks})",
                (now, now, *mids),
            )
            self._refresh_message_status(db, mids, now)
            return cur.rowcount

        return await self._run(self._tx, work)

    # -- identity registry --------------------------------------------------------------------------
    async def get_identity(self, patient_key: str) -> IdentityRecord | None:
        row = await self._run(
            self._fetchone, f"SELECT {IDENTITY_SELECT} FROM identities WHERE patient_key = ?", (patient_key,)
        )
        return _ROWS.identity(row) if row else None

    async def save_identity(
        self, record: IdentityRecord, *, event: str, message_id: str | None, note: str = ""
    ) -> IdentityRecord:
        def work(db: sqlite3.Connection) -> IdentityRecord:
            now = time.time()
            row = db.execute("SELECT version FROM identities WHERE patient_key = ?", (record.patient_key,)).fetchone()
            stored = row[0] if row else 0
            if stored != record.version:
                raise StoreError("identity changed meanwhile (version conflict)")
            values = (
                record.authority,
                record.local_id,
                record.status,
                record.ins,
                record.ins_oid,
                ",".join(record.attributes),
                json.dumps(dict(record.traits)),
                record.merged_into,
                stored + 1,
                now,
                record.patient_key,
            )
            if row:
                db.execute(
                    "UPDATE identities SET authority = ?, local_id = ?, status = ?, ins = ?, ins_oid = ?,"
                    " attributes = ?, traits = ?, merged_into = ?, version = ?, updated_at = ?"
                    " WHERE patient_key = ?",
                    values,
                )
            else:
                db.execute(
                    "INSERT INTO identities (authority, local_id, status, ins, ins_oid, attributes, traits,"
                    " merged_into, version, updated_at, patient_key) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    values,
                )
            db.execute(
                "INSERT INTO identity_history (patient_key, at, event, message_id, status, ins, note)"
                " VALUES (?,?,?,?,?,?,?)",
                (record.patient_key, now, event, message_id, record.status, record.ins, note),
            )
            return dataclasses.replace(record, version=stored + 1, updated_at=_dt(now))

        try:
            return await self._run(self._tx, work)
        except sqlite3.IntegrityError:
            raise StoreError("identity changed meanwhile (version conflict)") from None

    async def list_identities(self, *, status: str | None = None, limit: int = 1000) -> list[IdentityRecord]:
        sql = f"SELECT {IDENTITY_SELECT} FROM identities"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        rows = await self._run(self._fetchall, sql + " ORDER BY patient_key LIMIT ?", (*args, limit))
        return [_ROWS.identity(r) for r in rows]

    async def identities_by_ins(self, ins: str) -> list[IdentityRecord]:
        rows = await self._run(
            self._fetchall, f"SELECT {IDENTITY_SELECT} FROM identities WHERE ins = ? ORDER BY patient_key", (ins,)
        )
        return [_ROWS.identity(r) for r in rows]

    async def identities_merged_into(self, patient_key: str) -> list[IdentityRecord]:
        rows = await self._run(
            self._fetchall,
            f"SELECT {IDENTITY_SELECT} FROM identities WHERE merged_into = ? ORDER BY patient_key",
            (patient_key,),
        )
        return [_ROWS.identity(r) for r in rows]

    async def identity_history(self, patient_key: str) -> list[IdentityEvent]:
        rows = await self._run(
            self._fetchall,
            "SELECT patient_key, at, event, message_id, status, ins, note"
            " FROM identity_history WHERE patient_key = ? ORDER BY id",
            (patient_key,),
        )
        return [IdentityEvent(r[0], _dt(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def list_reviews(self, *, state: str | None = None, limit: int = 1000) -> list[Review]:
        sql = f"SELECT {REVIEW_SELECT} FROM reviews"
        args: tuple[Any, ...] = ()
        if state:
            sql += " WHERE state = ?"
            args = (state,)
        rows = await self._run(self._fetchall, sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [_ROWS.review(r) for r in rows]

    async def resolve_review(self, review_id: int, *, action: str, by: str) -> Review | None:
        if action not in ("release", "discard"):
            raise ValueError("action must be release or discard")

        def work(db: sqlite3.Connection) -> Review | None:
            now = time.time()
            row = db.execute(
                f"SELECT {REVIEW_SELECT} FROM reviews WHERE id = ? AND state = 'open'", (review_id,)
            ).fetchone()
            if row is None:
                return None
            review = _ROWS.review(row)
            if action == "release":
                db.execute(
                    "UPDATE deliveries SET status = 'pending', identity_override = 1, next_attempt_at = ?,"
                    " updated_at = ? WHERE id = ? AND status = 'identity_review'",
                    (now, now, review.delivery_id),
                )
            else:
                db.execute(
                    "UPDATE deliveries SET status = 'dead', last_error = 'discarded in identity review',"
                    " updated_at = ? WHERE id = ? AND status = 'identity_review'",
                    (now, review.delivery_id),
                )
                self._promote_next(db, review.delivery_id)
            state = ReviewState.RELEASED if action == "release" else ReviewState.DISCARDED
            db.execute(
                "UPDATE reviews SET state = ?, resolved_at = ?, resolved_by = ? WHERE id = ?",
                (state, now, by, review_id),
            )
            self._refresh_message_status(db, [review.message_id], now)
            return dataclasses.replace(review, state=state, resolved_at=_dt(now), resolved_by=by)

        return await self._run(self._tx, work)

    async def purge(self, *, before: datetime, statuses: tuple[str, ...], batch: int = 1000) -> int:
        def work(db: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(statuses))
            ids = [r[0] for r in db.execute(
                f"SELECT id FROM messages WHERE received_at < ? AND status IN ({marks}) ORDER BY received_at LIMIT ?",
                (_ts(before), *statuses, batch)).fetchall()]  # fmt: skip
            if not ids:
                return 0
            m = ",".join("?" * len(ids))
            deliveries = f"SELECT id FROM deliveries WHERE message_id IN ({m})"
            db.execute(f"DELETE FROM attempts WHERE delivery_id IN ({deliveries})", ids)
            db.execute(f"DELETE FROM reviews WHERE delivery_id IN ({deliveries})", ids)
            db.execute(f"DELETE FROM sent WHERE delivery_id IN ({deliveries})", ids)
            db.execute(f"DELETE FROM deliveries WHERE message_id IN ({m})", ids)
            db.execute(f"DELETE FROM message_keys WHERE message_id IN ({m})", ids)
            db.execute(f"DELETE FROM message_text WHERE message_id IN ({m})", ids)
            db.execute(f"DELETE FROM text_pending WHERE message_id IN ({m})", ids)
            db.execute(f"DELETE FROM messages WHERE id IN ({m})", ids)
            return len(ids)

        return await self._run(self._tx, work)

    async def set_paused(self, route: str, destination: str, *, paused: bool, by: str = "") -> None:
        await self._run(self._tx, lambda db: db.execute(
            "INSERT INTO queue_state (route, destination, paused, changed_by, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT (route, destination) DO UPDATE SET paused = excluded.paused,"
            " changed_by = excluded.changed_by, updated_at = excluded.updated_at",
            (route, destination, int(paused), by, time.time())))  # fmt: skip

    async def queue_pauses(self) -> dict[tuple[str, str], bool]:
        rows = await self._run(self._fetchall, "SELECT route, destination, paused FROM queue_state", ())
        return {(r[0], r[1]): bool(r[2]) for r in rows}

    # -- reads --------------------------------------------------------------------------------------
    async def next_due(self, route: str, destination: str) -> datetime | None:
        row = await self._run(
            self._fetchone,
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE route = ? AND destination = ? AND status = 'pending'"
            " AND waiting = 0",
            (route, destination),
        )
        return _dt(row[0]) if row and row[0] is not None else None

    async def undelivered_count(self, *, cap: int | None = None) -> int:
        row = await self._run(
            self._fetchone,
            "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries WHERE status IN ('pending', 'in_flight') LIMIT ?)",
            (cap if cap is not None else -1,),
        )
        return int(row[0])

    async def get_message(self, message_id: str) -> MessageRecord | None:
        row = await self._run(self._fetchone, f"SELECT {MESSAGE_SELECT} FROM messages WHERE id = ?", (message_id,))
        return _ROWS.message_record(row) if row else None

    async def search(self, query: SearchQuery) -> list[MessageRecord]:
        where, args = [], []
        for col, op, value in query.filters():
            where.append(f"{col} {op} ?")
            args.append(_ts(value) if isinstance(value, datetime) else value)
        for name, value in query.key_filters():
            keyed = "id IN (SELECT message_id FROM message_keys WHERE name = ? AND value = ?)"
            args += [name, value]
            if name == "ins":
                keyed = f"({keyed} OR patient_key IN (SELECT patient_key FROM identities WHERE ins = ?))"
                args.append(value)
            where.append(keyed)
        sql = f"SELECT {MESSAGE_SELECT} FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._run(self._fetchall, sql, (*args, query.limit))
        return [_ROWS.message_record(r) for r in rows]

    async def search_content(self, query: ContentQuery) -> list[MessageRecord]:
        # A phrase of the trigram tokenizer matches the text anywhere, case-insensitively ('"' doubled: FTS5
        # string syntax); the time window and order are applied to the few messages it finds.
        phrase = '"' + query.text.replace('"', '""') + '"'
        sql = (
            f"SELECT {select_list(MESSAGE_COLUMNS, prefix='m.')} FROM message_text t"
            " JOIN messages m ON m.id = t.message_id WHERE message_text MATCH ?"
            " AND m.received_at >= ? AND m.received_at < ? ORDER BY m.received_at DESC, m.id DESC LIMIT ?"
        )
        args = (phrase, _ts(query.since), _ts(query.until), query.limit)
        if str(self.path) == ":memory:":
            rows = await self._run(self._fetchall, sql, args)
        else:
            # On a connection and thread of its own (WAL readers do not block the writer): a long search
            # must not hold the store thread that commits before every ACK.
            rows = await self._run_reader(sql, args, query.timeout_secs)
        return [_ROWS.message_record(r) for r in rows]

    async def _run_reader(self, sql: str, args: tuple[Any, ...], timeout_secs: float) -> list[Any]:
        def read() -> list[Any]:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                deadline = time.monotonic() + timeout_secs
                # A non-zero return interrupts the statement (sqlite3_progress_handler).
                db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                return db.execute(sql, args).fetchall()
            finally:
                db.close()

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: content search {type(exc).__name__}") from None

    async def deliveries(self, message_ids: list[str]) -> dict[str, list[Delivery]]:
        out: dict[str, list[Delivery]] = {m: [] for m in message_ids}
        if not message_ids:
            return out
        marks = ",".join("?" * len(message_ids))
        rows = await self._run(
            self._fetchall,
            f"SELECT {DELIVERY_SELECT} FROM deliveries WHERE message_id IN ({marks}) ORDER BY id",
            tuple(message_ids),
        )
        for r in rows:
            out[r[1]].append(_ROWS.delivery(r))
        return out

    async def sent_payloads(self, delivery_ids: list[int], *, body: bool = True) -> dict[int, SentPayload]:
        if not delivery_ids:
            return {}
        db = self._db
        assert db is not None
        return await self._run(lambda: _sent_rows(db, list(delivery_ids), body=body))

    async def find_deliveries(
        self, *, status: str | None = None, destination: str | None = None, limit: int = 1000, after_id: int = 0
    ) -> list[Delivery]:
        where = ["id > ?"]
        args: list[object] = [after_id]
        if status:
            where.append("status = ?")
            args.append(status)
        if destination:
            where.append("destination = ?")
            args.append(destination)
        sql = f"SELECT {DELIVERY_SELECT} FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._run(self._fetchall, sql + " ORDER BY id LIMIT ?", (*args, limit))
        return [_ROWS.delivery(r) for r in rows]

    async def queue_stats(self) -> list[QueueStats]:
        rows = await self._run(
            self._fetchall,
            "SELECT route, destination, status, COUNT(*), MIN(created_at), SUM(attempts > 0) FROM deliveries"
            " WHERE status IN ('pending', 'in_flight', 'awaiting_identity', 'identity_review', 'dead')"
            " GROUP BY route, destination, status",
            (),
        )
        return fold_queue_stats((r[0], r[1], r[2], r[3], _dt(r[4]), r[5]) for r in rows)

    async def append_audit(self, event: AuditEvent) -> AuditRecord:
        def work(db: sqlite3.Connection) -> AuditRecord:
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            number, prev = (last[0] + 1, last[1]) if last else (1, AUDIT_GENESIS)
            at = utcnow()
            detail = canonical_detail(event.detail)
            digest = audit_hash(
                prev, number, at, event.actor, event.role, event.action, event.message_id, event.target, detail,
                event.outcome, key=self.audit_key,
            )  # fmt: skip
            row = (
                number, at.isoformat(), event.actor, event.role, event.action, event.message_id, event.target,
                detail, event.outcome, prev, digest,
            )  # fmt: skip
            db.execute(f"INSERT INTO audit ({AUDIT_SELECT}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
            return _ROWS.audit(row)

        return await self._run(self._tx, work)

    async def list_audit(
        self, *, before_id: int | None = None, message_id: str | None = None, actor: str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:  # fmt: skip
        where, args = [], []
        for clause, value in (("id < ?", before_id), ("message_id = ?", message_id), ("actor = ?", actor)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"SELECT {AUDIT_SELECT} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._run(self._fetchall, sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [_ROWS.audit(r) for r in rows]

    async def audit_chain(self, *, after_id: int = 0, limit: int = 1000) -> list[AuditRecord]:
        rows = await self._run(
            self._fetchall, f"SELECT {AUDIT_SELECT} FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [_ROWS.audit(r) for r in rows]

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        sql = f"SELECT {ATTEMPT_SELECT} FROM attempts WHERE delivery_id = ? ORDER BY number"
        rows = await self._run(self._fetchall, sql, (delivery_id,))
        return [_ROWS.attempt(r) for r in rows]

    async def wait_for_work(self, timeout: float) -> None:
        # One process owns an SQLite store; other writers (the CLI) are seen by polling.
        await asyncio.sleep(timeout)

    # -- operations: hourly totals and last errors ----------------------------------------------------
    # The hourly table is created on first use (IF NOT EXISTS) rather than by a numbered migration: it
    # holds only derived figures, and its creation is then independent of the schema's version line.
    _HOURLY_DDL = (
        "CREATE TABLE IF NOT EXISTS stats_hourly (hour REAL NOT NULL, route TEXT NOT NULL,"
        " destination TEXT NOT NULL, counter TEXT NOT NULL, count INTEGER NOT NULL,"
        " PRIMARY KEY (hour, route, destination, counter))"
    )

    async def _hourly_table(self) -> None:
        if not getattr(self, "_hourly_ready", False):
            await self._run(self._fetchall, self._HOURLY_DDL, ())
            self._hourly_ready = True

    async def add_hourly(self, counts: Sequence[HourlyCount]) -> None:
        if not counts:
            return
        await self._hourly_table()
        rows = [(_ts(c.hour), c.route, c.destination, c.counter, c.count) for c in counts]

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO stats_hourly (hour, route, destination, counter, count) VALUES (?,?,?,?,?)"
                " ON CONFLICT (hour, route, destination, counter) DO UPDATE SET count = count + excluded.count",
                rows,
            )

        await self._run(self._tx, work)

    async def read_hourly(self, since: datetime) -> list[HourlyCount]:
        await self._hourly_table()
        start = since.timestamp() // 3600 * 3600
        rows = await self._run(
            self._fetchall,
            "SELECT hour, route, destination, counter, count FROM stats_hourly WHERE hour >= ?"
            " ORDER BY hour, route, destination, counter",
            (start,),
        )
        return [HourlyCount(_dt(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    async def queue_last_errors(self) -> dict[tuple[str, str], tuple[str, datetime]]:
        # SQLite returns the bare columns of the row holding MAX(updated_at) ("bare columns in an aggregate").
        rows = await self._run(
            self._fetchall,
            "SELECT route, destination, last_error, MAX(updated_at) FROM deliveries"
            " WHERE status IN ('pending', 'in_flight', 'dead') AND last_error != '' GROUP BY route, destination",
            (),
        )
        return {(r[0], r[1]): (r[2], _dt(r[3])) for r in rows}
