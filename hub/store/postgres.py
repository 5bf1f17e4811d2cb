"""PostgreSQL store (asyncpg): production, and several hub processes sharing one database.

* Group commit: each batch of concurrent submissions is one transaction made
  of two statements over ``unnest`` arrays, so its cost hardly grows with the
  batch size.
* Claims take ``FOR UPDATE SKIP LOCKED`` so that nodes never wait on each
  other; ordering keys are honoured across nodes because the NOT EXISTS test
  sees the other nodes' committed claims (status ``in_flight``).
* New work is announced with ``NOTIFY hub_work`` so idle workers on every
  node wake at once instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

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
from hub.store.claim_points import ClaimPoints
from hub.store.content_index import LAG_COUNT_CAP, ContentIndexer, IndexLag
from hub.store.pg_maintenance import Vacuumed, vacuum_hot_tables
from hub.store.rows import (
    ATTEMPT_SELECT,
    AUDIT_SELECT,
    DELIVERY_COLUMNS,
    DELIVERY_SELECT,
    IDENTITY_SELECT,
    MESSAGE_COLUMNS,
    REVIEW_SELECT,
    SENT_COLUMNS,
    RowMapper,
    reply_values,
    select_list,
)

#: A connection checked out of the pool (a proxy of `asyncpg.Connection`), and either kind.
_PoolConnection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
_AnyConnection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | _PoolConnection"

__all__ = ["PostgresStore"]

_CHANNEL = "hub_work"

MIGRATIONS: list[str] = [
    """
    CREATE TABLE hub_messages (
        id text PRIMARY KEY,
        parent_id text,
        correlation_id text NOT NULL,
        endpoint text NOT NULL,
        content_type text NOT NULL,
        body bytea NOT NULL,
        metadata jsonb NOT NULL,
        status text NOT NULL,
        reason text NOT NULL DEFAULT '',
        received_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        control_id text,
        sending_app text,
        sending_facility text,
        message_type text,
        patient_key text,
        dedup_key text
    );
    CREATE UNIQUE INDEX hub_messages_dedup ON hub_messages (dedup_key) WHERE dedup_key IS NOT NULL;
    CREATE INDEX hub_messages_received ON hub_messages (received_at);
    CREATE INDEX hub_messages_control ON hub_messages (control_id);
    CREATE INDEX hub_messages_sender ON hub_messages (sending_app, sending_facility, control_id);
    CREATE INDEX hub_messages_patient ON hub_messages (patient_key, received_at);
    CREATE INDEX hub_messages_status ON hub_messages (status, received_at);
    CREATE INDEX hub_messages_type ON hub_messages (message_type, received_at);
    CREATE INDEX hub_messages_correlation ON hub_messages (correlation_id);
    CREATE TABLE hub_deliveries (
        id bigserial PRIMARY KEY,
        message_id text NOT NULL REFERENCES hub_messages (id),
        route text NOT NULL,
        destination text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        next_attempt_at timestamptz NOT NULL,
        ordering_key text,
        lease_owner text,
        lease_expires_at timestamptz,
        last_error text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX hub_deliveries_message ON hub_deliveries (message_id);
    CREATE INDEX hub_deliveries_due ON hub_deliveries (route, destination, next_attempt_at, id)
        WHERE status = 'pending';
    CREATE INDEX hub_deliveries_order ON hub_deliveries (route, destination, ordering_key, id)
        WHERE status IN ('pending', 'in_flight');
    CREATE INDEX hub_deliveries_leases ON hub_deliveries (lease_expires_at) WHERE status = 'in_flight';
    CREATE INDEX hub_deliveries_status ON hub_deliveries (status, destination);
    CREATE TABLE hub_attempts (
        delivery_id bigint NOT NULL REFERENCES hub_deliveries (id),
        number integer NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        outcome text NOT NULL,
        error text NOT NULL DEFAULT '',
        PRIMARY KEY (delivery_id, number)
    );
    """,
    """
    DROP INDEX hub_deliveries_order;
    CREATE INDEX hub_deliveries_order ON hub_deliveries (route, destination, ordering_key, id)
        WHERE status IN ('pending', 'in_flight', 'awaiting_identity', 'identity_review');
    CREATE INDEX hub_deliveries_held ON hub_deliveries (message_id)
        WHERE status IN ('awaiting_identity', 'identity_review');
    ALTER TABLE hub_deliveries ADD COLUMN identity_override boolean NOT NULL DEFAULT false;
    CREATE TABLE hub_identities (
        patient_key text PRIMARY KEY,
        authority text NOT NULL,
        local_id text NOT NULL,
        status text NOT NULL,
        ins text,
        ins_oid text,
        attributes text NOT NULL DEFAULT '',
        traits jsonb NOT NULL DEFAULT '{}',
        merged_into text,
        version integer NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX hub_identities_ins ON hub_identities (ins);
    CREATE INDEX hub_identities_status ON hub_identities (status);
    CREATE INDEX hub_identities_merged ON hub_identities (merged_into) WHERE merged_into IS NOT NULL;
    CREATE TABLE hub_identity_history (
        id bigserial PRIMARY KEY,
        patient_key text NOT NULL,
        at timestamptz NOT NULL,
        event text NOT NULL,
        message_id text,
        status text NOT NULL,
        ins text,
        note text NOT NULL DEFAULT ''
    );
    CREATE INDEX hub_identity_history_key ON hub_identity_history (patient_key, id);
    CREATE TABLE hub_reviews (
        id bigserial PRIMARY KEY,
        delivery_id bigint NOT NULL REFERENCES hub_deliveries (id),
        message_id text NOT NULL,
        patient_key text NOT NULL DEFAULT '',
        reason text NOT NULL,
        state text NOT NULL,
        created_at timestamptz NOT NULL,
        resolved_at timestamptz,
        resolved_by text NOT NULL DEFAULT ''
    );
    CREATE INDEX hub_reviews_state ON hub_reviews (state, id);
    """,
    # 3: what the steps added to the metadata, per delivery
    "ALTER TABLE hub_deliveries ADD COLUMN output_metadata jsonb NOT NULL DEFAULT '{}'",
    # 4: business keys that are not columns (INS, document uniqueId), and the hash-chained audit trail
    # (detail is text, not jsonb: it is hashed exactly as stored)
    """
    CREATE TABLE hub_message_keys (
        name text NOT NULL,
        value text NOT NULL,
        message_id text NOT NULL,
        PRIMARY KEY (name, value, message_id)
    );
    CREATE TABLE hub_audit (
        id bigint PRIMARY KEY,
        at timestamptz NOT NULL,
        actor text NOT NULL,
        role text NOT NULL,
        action text NOT NULL,
        message_id text,
        target text NOT NULL DEFAULT '',
        detail text NOT NULL DEFAULT '{}',
        outcome text NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL
    );
    CREATE INDEX hub_audit_message ON hub_audit (message_id, id) WHERE message_id IS NOT NULL;
    CREATE INDEX hub_audit_actor ON hub_audit (actor, id);
    """,
    # 5: paused queues, shared by every node and kept across restarts
    """
    CREATE TABLE hub_queue_state (
        route text NOT NULL,
        destination text NOT NULL,
        paused boolean NOT NULL,
        changed_by text NOT NULL DEFAULT '',
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (route, destination)
    );
    """,
    # 6: a delivery queued behind an earlier one of its ordering key is `waiting` and out of the claim index,
    # so that claiming costs the same whatever the backlog (see claim)
    """
    ALTER TABLE hub_deliveries ADD COLUMN waiting boolean NOT NULL DEFAULT false;
    UPDATE hub_deliveries c SET waiting = true WHERE c.status = 'pending' AND c.ordering_key IS NOT NULL
        AND EXISTS (SELECT 1 FROM hub_deliveries e WHERE e.route = c.route AND e.destination = c.destination
        AND e.ordering_key = c.ordering_key AND e.id < c.id
        AND e.status IN ('pending', 'in_flight', 'awaiting_identity', 'identity_review'));
    DROP INDEX hub_deliveries_due;
    CREATE INDEX hub_deliveries_ready ON hub_deliveries (route, destination, next_attempt_at, id)
        WHERE status = 'pending' AND NOT waiting;
    CREATE INDEX hub_deliveries_dead_keys ON hub_deliveries (route, destination, ordering_key, id)
        WHERE status = 'dead';
    """,
    # 7: what each delivery sends: its steps' output, computed once and resent by retries (body NULL: the
    # inbound body unchanged). A table of its own keeps the deliveries rows, rewritten by every claim, small.
    # (metadata is JSON text, not jsonb: it is read back exactly, NUL escapes included)
    """
    CREATE TABLE hub_sent (
        delivery_id bigint PRIMARY KEY,
        sent_id text NOT NULL,
        parent_id text,
        content_type text NOT NULL,
        body bytea,
        metadata text NOT NULL,
        size integer NOT NULL,
        basis text NOT NULL DEFAULT '',
        computed_at timestamptz NOT NULL
    );
    """,
    # 8: content search: the decoded text of each payload (its first SEARCHABLE_CHARS) under a GIN trigram
    # index, so that ILIKE '%text%' is an index lookup (PostgreSQL F.35 pg_trgm, "Index Support"). The
    # operator class is named in the extension's own schema (the hub's schema may not be on its search path).
    # Without the extension (no privilege to create it) search still works, as a scan of the time window.
    f"""
    CREATE TABLE hub_message_text (message_id text PRIMARY KEY, body text NOT NULL);
    CREATE FUNCTION pg_temp.hub_text(b bytea) RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        RETURN left(convert_from(b, 'UTF8'), {SEARCHABLE_CHARS});
    EXCEPTION WHEN others THEN
        RETURN left(encode(b, 'escape'), {SEARCHABLE_CHARS});
    END $$;
    INSERT INTO hub_message_text (message_id, body) SELECT id, pg_temp.hub_text(body) FROM hub_messages;
    DO $$
    DECLARE nsp text;
    BEGIN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
            RAISE NOTICE 'pg_trgm unavailable: content search scans its time window';
        END;
        SELECT n.nspname INTO nsp FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname = 'pg_trgm';
        IF nsp IS NOT NULL THEN
            EXECUTE format('CREATE INDEX hub_message_text_trgm ON hub_message_text USING gin (body %I.gin_trgm_ops)',
                nsp);
        END IF;
    END $$;
    """,
    # 9: the content index is written after the commit (hub/store/content_index.py): a submit only lists its
    # message here, in its own transaction, and an indexer (on any node) takes the rows off once indexed
    "CREATE TABLE hub_text_pending (message_id text PRIMARY KEY)",
    # 10: named leases for work one node does for the cluster (alert evaluation), with the holder's state
    """
    CREATE TABLE hub_leases (
        name text PRIMARY KEY,
        owner text NOT NULL,
        expires_at timestamptz NOT NULL,
        state text NOT NULL DEFAULT ''
    );
    """,
    # 11: autovacuum on the hot tables after a fixed number of dead rows, not PostgreSQL's 20 % of the table
    # (with a deep backlog that is hundreds of thousands of dead index entries in every claim's way); used
    # where the server runs autovacuum; the hub's own task covers the others (hub/store/pg_maintenance.py)
    "".join(
        f"ALTER TABLE {t} SET (autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_scale_factor = 0.05,"
        " autovacuum_analyze_threshold = 10000, autovacuum_analyze_scale_factor = 0.05);"
        for t in ("hub_deliveries", "hub_messages", "hub_sent")
    ),
    # 12: what the destination's peer answered to each attempt (hub/replies.py), its bytes cut to a bound;
    # reply_kind NULL: no reply. Columns of the attempt it answers: written by the same INSERT.
    """
    ALTER TABLE hub_attempts ADD COLUMN reply_kind text, ADD COLUMN reply_summary text,
        ADD COLUMN reply_content_type text, ADD COLUMN reply bytea, ADD COLUMN reply_size integer,
        ADD COLUMN reply_at timestamptz;
    """,
    # 13: a routed message's status is read from its deliveries, no longer written into its row by every
    # outcome (see _MESSAGE_FROM): the status index keeps only what ingest writes for good (rejected,
    # unrouted). The deliveries' status index leaves out the delivered ones (most rows, never looked up by
    # that index: the queues count the others), so an outcome no longer adds an entry to it.
    """
    DROP INDEX hub_messages_status;
    CREATE INDEX hub_messages_status ON hub_messages (status, received_at) WHERE status IN ('rejected', 'unrouted');
    DROP INDEX hub_deliveries_status;
    CREATE INDEX hub_deliveries_status ON hub_deliveries (status, destination) WHERE status <> 'delivered';
    """,
]

_BLOCKING_SQL = ", ".join(f"'{s}'" for s in BLOCKING_STATUSES)
#: One transaction-scoped advisory lock per ordering key, taken (in a statement of its own, so that the
#: next statements' snapshot sees what the previous holder committed) by whoever decides that a delivery
#: waits (submit) or stops waiting (finish): without it, a submit and a finish of the same key running
#: side by side could each miss the other's row and leave a delivery waiting behind nothing.
_KEY_LOCK = "hashtextextended({r} || chr(31) || {d} || chr(31) || {k}, 0)"
_LOCK_KEYS = f"""
SELECT count(pg_advisory_xact_lock(h)) FROM (
    SELECT DISTINCT {_KEY_LOCK.format(r="r", d="d", k="k")} AS h
    FROM unnest($1::text[], $2::text[], $3::text[]) AS u(r, d, k) WHERE k IS NOT NULL ORDER BY h
) s
"""
_LOCK_KEYS_OF = f"""
SELECT count(pg_advisory_xact_lock(h)) FROM (
    SELECT DISTINCT {_KEY_LOCK.format(r="route", d="destination", k="ordering_key")} AS h
    FROM hub_deliveries WHERE id = ANY($1::bigint[]) AND ordering_key IS NOT NULL ORDER BY h
) s
"""

#: Each settled delivery's key: its first blocking delivery stops waiting (an index probe per key).
_PROMOTE_NEXT = f"""
UPDATE hub_deliveries n SET waiting = false FROM (
    SELECT (SELECT x.id FROM hub_deliveries x WHERE x.route = d.route AND x.destination = d.destination
            AND x.ordering_key = d.ordering_key AND x.status IN ({_BLOCKING_SQL}) ORDER BY x.id LIMIT 1) AS id
    FROM hub_deliveries d WHERE d.id = ANY($1::bigint[]) AND d.ordering_key IS NOT NULL
) first WHERE n.id = first.id AND n.waiting
RETURNING n.route, n.destination, n.next_attempt_at, n.id
"""
#: 'in_flight' once per id of the array {ids}, to compare each row's status with: a constant `status =
#: 'in_flight'` led the planner to walk the status index over every entry left by deliveries in flight
#: since the last VACUUM (300-800 buffers for a batch of 20 in a drain), instead of one primary-key probe
#: per delivery; a column of the unnest is opaque to it.
_IN_FLIGHT_EACH = "array_fill('in_flight'::text, ARRAY[cardinality({ids}::bigint[])])"
#: A batch of outcomes in one statement after its locks (one round trip, one snapshot): the deliveries'
#: new states (`f`), their attempts (`a`: only the counted ones are given, numbered by `f`) and each settled
#: delivery's next of its key no longer waiting (`p`). In one snapshot the later parts still read `f`'s
#: rows as they were (in flight), so `p` skips them by id. The message's row is not written: its status
#: is read from its deliveries (`_MESSAGE_FROM`). Returns `f`'s rows, then the promoted ones (kind 'p').
_RECORD_OUTCOMES = f"""
WITH f AS (
    UPDATE hub_deliveries d SET status = u.status, next_attempt_at = coalesce(u.next_at, now()),
        last_error = u.error, lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
        output_metadata = coalesce(u.output::jsonb, d.output_metadata), attempts = d.attempts - u.uncounted
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::int[],
        {_IN_FLIGHT_EACH.format(ids="$1")}) AS u(id, owner, status, next_at, error, output, uncounted, was)
    WHERE d.id = u.id AND d.status = u.was AND d.lease_owner = u.owner
    RETURNING d.id, d.message_id, d.attempts, d.route, d.destination, d.ordering_key, d.status, d.next_attempt_at
), a AS (
    INSERT INTO hub_attempts ({ATTEMPT_SELECT})
    SELECT u.id, f.attempts, u.started_at, now(), u.outcome, u.error, u.rk, u.rs, u.rc, u.rb, u.rn, u.ra
    FROM unnest($8::bigint[], $9::timestamptz[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::bytea[], $16::int[], $17::timestamptz[])
        AS u(id, started_at, outcome, error, rk, rs, rc, rb, rn, ra)
        JOIN f ON f.id = u.id
    ON CONFLICT (delivery_id, number) DO UPDATE SET started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, error = EXCLUDED.error,
        reply_kind = EXCLUDED.reply_kind, reply_summary = EXCLUDED.reply_summary,
        reply_content_type = EXCLUDED.reply_content_type, reply = EXCLUDED.reply,
        reply_size = EXCLUDED.reply_size, reply_at = EXCLUDED.reply_at
), p AS (
    UPDATE hub_deliveries n SET waiting = false FROM (
        SELECT (SELECT x.id FROM hub_deliveries x WHERE x.route = f.route AND x.destination = f.destination
                AND x.ordering_key = f.ordering_key AND x.status IN ({_BLOCKING_SQL}) AND x.id <> f.id
                ORDER BY x.id LIMIT 1) AS id
        FROM f WHERE f.ordering_key IS NOT NULL AND f.status NOT IN ({_BLOCKING_SQL})
    ) first WHERE n.id = first.id AND n.waiting
    RETURNING n.id, n.route, n.destination, n.next_attempt_at
)
SELECT 'f' AS kind, id, message_id, attempts, route, destination, status, next_attempt_at FROM f
UNION ALL
SELECT 'p', id, NULL, NULL, route, destination, NULL, next_attempt_at FROM p
"""

_AUDIT_LOCK = 7210043  # pg_advisory_xact_lock key: one audit append at a time across nodes
_INSERT_KEYS = (
    "INSERT INTO hub_message_keys (name, value, message_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
    " ON CONFLICT DO NOTHING"
)

_ROWS = RowMapper()

#: One statement, one round trip: take up to $3 due deliveries with their messages. Only the first delivery
#: of each ordering key is not `waiting`, so the walk of hub_deliveries_ready meets claimable rows at once,
#: however deep the backlog behind them; the NOT EXISTS test still guards FIFO on its own (an index probe).
#: A claim lost in a crash only gives the delivery back to pending (it is sent at least once either way),
#: so its commit does not wait for the WAL flush (set_config(..., true): this transaction only;
#: PostgreSQL "Asynchronous Commit"). The walk starts at ($6, $7), where this node's previous claim of the queue
#: stopped (hub/store/claim_points.py: not over the index entries of everything claimed since the last VACUUM).
_CLAIM_TEMPLATE = f"""
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true) AS v),
claimed AS (
    UPDATE hub_deliveries d SET status = 'in_flight', attempts = d.attempts + 1, lease_owner = $4,
        lease_expires_at = now() + make_interval(secs => $5), updated_at = now()
    WHERE (SELECT v FROM async_commit) IS NOT NULL AND d.id IN (
        SELECT c.id FROM hub_deliveries c
        WHERE c.route = $1 AND c.destination = $2 AND c.status = 'pending' AND NOT c.waiting
          AND c.next_attempt_at <= now() AND (c.next_attempt_at, c.id) >= ($6::timestamptz, $7::bigint)
          AND (c.ordering_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM hub_deliveries e WHERE e.route = c.route
              AND e.destination = c.destination AND e.ordering_key = c.ordering_key
              AND e.status IN ({_BLOCKING_SQL}) AND e.id < c.id)){{hold}}
        ORDER BY c.next_attempt_at, c.id LIMIT $3
        FOR UPDATE SKIP LOCKED)
    RETURNING {select_list(DELIVERY_COLUMNS, prefix="d.")}
)
SELECT claimed.*, {select_list(MESSAGE_COLUMNS, prefix="m.")}, {select_list(SENT_COLUMNS, prefix="s.")}
FROM claimed JOIN hub_messages m ON m.id = claimed.message_id
    LEFT JOIN hub_sent s ON s.delivery_id = claimed.id  -- what an earlier attempt sent, resent as is
"""
#: With hold_behind_dead, a dead letter also holds the later deliveries of its key (a probe of the
#: dead-letter index; the lists are literal so that the planner can use the partial indexes).
_CLAIM = _CLAIM_TEMPLATE.format(hold="")
_CLAIM_HOLD = _CLAIM_TEMPLATE.format(
    hold=" AND NOT EXISTS (SELECT 1 FROM hub_deliveries x WHERE x.route = c.route AND x.destination = c.destination"
    " AND x.ordering_key = c.ordering_key AND x.status = 'dead' AND x.id < c.id)"
)
#: The claim of a worker with an ordering key and hold_behind_dead (the default), for benchmarks to measure.
CLAIM_SQL = _CLAIM_HOLD

_SUBMIT_BATCH = f"""
WITH m AS (
    INSERT INTO hub_messages (id, parent_id, correlation_id, endpoint, content_type, body, metadata, status, reason,
        received_at, updated_at, control_id, sending_app, sending_facility, message_type, patient_key, dedup_key)
    SELECT id, parent_id, correlation_id, endpoint, content_type, body, metadata::jsonb, status, reason,
        received_at, now(), control_id, sending_app, sending_facility, message_type, patient_key, dedup_key
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[], $8::text[],
        $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[])
        AS t(id, parent_id, correlation_id, endpoint, content_type, body, metadata, status, reason, received_at,
             control_id, sending_app, sending_facility, message_type, patient_key, dedup_key)
    ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
    RETURNING id
), d AS (
    INSERT INTO hub_deliveries (message_id, route, destination, status, max_attempts, next_attempt_at,
        ordering_key, created_at, updated_at, waiting)
    SELECT u.m, u.r, u.d, 'pending', u.a, now(), u.k, now(), now(),
        -- behind an earlier delivery of its key: in this batch, or stored (the order index, one probe)
        u.k IS NOT NULL AND (u.rank > 1 OR EXISTS (SELECT 1 FROM hub_deliveries e WHERE e.route = u.r
            AND e.destination = u.d AND e.ordering_key = u.k AND e.status IN ({_BLOCKING_SQL})))
    FROM (
        SELECT x.*, row_number() OVER (PARTITION BY x.r, x.d, x.k ORDER BY x.n) AS rank
        FROM unnest($17::text[], $18::text[], $19::text[], $20::int[], $21::text[])
            WITH ORDINALITY AS x(m, r, d, a, k, n)
        WHERE x.m IN (SELECT id FROM m)
    ) u
    ORDER BY u.n
    RETURNING 1
), k AS (
    INSERT INTO hub_message_keys (name, value, message_id)
    SELECT u.name, u.value, u.message_id
    FROM unnest($22::text[], $23::text[], $24::text[]) AS u(name, value, message_id)
    WHERE u.message_id IN (SELECT id FROM m)
    ON CONFLICT DO NOTHING
), x AS (
    INSERT INTO hub_text_pending (message_id) SELECT id FROM m
)
SELECT m.id, CASE WHEN EXISTS (SELECT 1 FROM d) THEN pg_notify('{_CHANNEL}', '') END, now() FROM m
"""

#: A routed message's status, folded from its deliveries' statuses (read through their message_id index).
_MESSAGE_STATUS = """CASE
          WHEN bool_or(d.status IN ('pending', 'in_flight')) THEN 'pending'
          WHEN bool_or(d.status = 'awaiting_identity') THEN 'awaiting_identity'
          WHEN bool_or(d.status = 'identity_review') THEN 'identity_review'
          WHEN bool_or(d.status IN ('dead', 'discarded')) THEN 'failed'
          ELSE 'delivered' END"""
#: Statuses the message row keeps as written at ingest: no delivery ever changes them.
_INGEST_STATUSES = (MessageStatus.REJECTED, MessageStatus.UNROUTED)
_INGEST_STATUS_SQL = ", ".join(f"'{s}'" for s in _INGEST_STATUSES)
#: The messages with their status and last change as their deliveries give them (`s`). Why not a column kept
#: up to date by each outcome: that row is wide (the body) with nine indexes and the status changes no
#: index-free column, so each outcome wrote a new version of it and of every index entry (~0.06 ms of the
#: database's CPU per delivered message, measured), then VACUUM had to clean them (2-4 s a pass at a
#: million rows). The message row is now written once; rejected and unrouted keep the status written then.
_MESSAGE_FROM = f"""hub_messages m LEFT JOIN LATERAL (
    SELECT {_MESSAGE_STATUS} AS status, max(d.updated_at) AS updated_at
    FROM hub_deliveries d WHERE d.message_id = m.id AND m.status NOT IN ({_INGEST_STATUS_SQL})
) s ON true"""
_MESSAGE_STATUS_OF_M = f"CASE WHEN m.status IN ({_INGEST_STATUS_SQL}) THEN m.status ELSE s.status END"
_MESSAGE_COLS = select_list(
    MESSAGE_COLUMNS, prefix="m.",
    replace={"status": _MESSAGE_STATUS_OF_M, "updated_at": "greatest(m.updated_at, s.updated_at)"},
)  # fmt: skip
#: The deliveries' statuses that a message's status needs one of (the driving index of a search by status).
_DELIVERY_STATUSES_OF: dict[str, list[str]] = {
    MessageStatus.PENDING: [DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT],
    MessageStatus.AWAITING_IDENTITY: [DeliveryStatus.AWAITING_IDENTITY],
    MessageStatus.IDENTITY_REVIEW: [DeliveryStatus.IDENTITY_REVIEW],
    MessageStatus.FAILED: [DeliveryStatus.DEAD, DeliveryStatus.DISCARDED],
}


async def _keep_session(conn: _AnyConnection) -> None:
    """A pooled connection goes back as it is: the store leaves no session state behind (its advisory
    locks are transaction-scoped, it never LISTENs, SETs or opens cursors on pooled connections), so
    asyncpg's default reset would only cost a round trip per store call."""


def _text(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: replace it rather than lose the whole batch."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


#: Where the claim's row (a delivery, its message, what an earlier attempt sent) changes table.
_CLAIM_MESSAGE_AT = len(DELIVERY_COLUMNS)
_CLAIM_SENT_AT = _CLAIM_MESSAGE_AT + len(MESSAGE_COLUMNS)
_SENT_UPSERT = """
    INSERT INTO hub_sent (delivery_id, sent_id, parent_id, content_type, body, metadata, size, basis, computed_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (delivery_id) DO UPDATE SET sent_id = EXCLUDED.sent_id, parent_id = EXCLUDED.parent_id,
        content_type = EXCLUDED.content_type, body = EXCLUDED.body, metadata = EXCLUDED.metadata,
        size = EXCLUDED.size, basis = EXCLUDED.basis, computed_at = EXCLUDED.computed_at
"""


def _claimed(row: asyncpg.Record) -> Claimed:
    """A row of the claim statement: the delivery's, its message's and its stored SentPayload's columns."""
    sent = row[_CLAIM_SENT_AT:]
    return Claimed(
        _ROWS.delivery(row[:_CLAIM_MESSAGE_AT]),
        _ROWS.message_record(row[_CLAIM_MESSAGE_AT:_CLAIM_SENT_AT]).message,
        None if sent[0] is None else _ROWS.sent(sent),
    )


#: Without bodies: ``b""`` stands for a stored body, NULL stays NULL (the inbound body unchanged).
_SENT_NO_BODY = {"body": "CASE WHEN body IS NULL THEN NULL ELSE ''::bytea END"}


async def _sent_rows(conn: _AnyConnection, ids: list[int], *, body: bool = True) -> dict[int, SentPayload]:
    cols = select_list(SENT_COLUMNS, replace=None if body else _SENT_NO_BODY)
    rows = await conn.fetch(f"SELECT {cols} FROM hub_sent WHERE delivery_id = ANY($1::bigint[])", ids)
    return {r[0]: _ROWS.sent(r) for r in rows}


def _key_columns(items: list[tuple[str, list[tuple[str, str]]]]) -> list[list[str]]:
    """(message id, keys) pairs as three unnest arrays: names, values, message ids."""
    cols: list[list[str]] = [[], [], []]
    for message_id, keys in items:
        for name, value in keys:
            cols[0].append(name)
            cols[1].append(_text(value))
            cols[2].append(message_id)
    return cols


# Every error the driver can raise: server errors, connection loss, client-side protocol state
# (asyncpg's InternalClientError is not a PostgresError) and time-outs. All become StoreError.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
_CONNECT_TIMEOUT = 10.0
_DEAD_AHEAD = DEAD_LETTER_AHEAD_SQL
_CLOSE_TIMEOUT = 3.0

_Submission = tuple[Message, list[NewDelivery], str, str | None, str, str]


class PostgresStore:
    """The Store protocol on PostgreSQL (tables prefixed ``hub_``)."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        pool_size: int = 8,
        max_batch: int = 512,
        writers: int = 2,
        max_pending: int = 20_000,
        index_delay_secs: float = 0.05,
    ) -> None:
        self._dsn = dsn
        self._indexer = ContentIndexer(self.index_content, delay_secs=index_delay_secs)
        self._settings = {"search_path": schema} if schema else {}
        self._schema = schema
        self._pool_size = pool_size
        self._max_batch = max_batch
        self._writers = writers
        self.audit_key: AuditKey | None = None  # set by the hub: HMAC-keys the audit chain
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._work = asyncio.Event()
        self._committer: GroupCommitter[_Submission, SubmitResult] | None = None
        self._finisher: GroupCommitter[OutcomeRecord, bool] | None = None
        self._writer_slots: list[asyncpg.Connection | None] = []
        self._max_pending = max_pending
        self._claim_points = ClaimPoints()

    @contextlib.asynccontextmanager
    async def _writer(self) -> AsyncIterator[asyncpg.Connection]:
        """One of the group commit's own connections, (re)opened on first use after a loss.

        A slot whose connection broke (server restart, failover, network cut, a driver fault) is
        emptied, and the next batch opens a fresh connection: the store heals without a restart.
        """
        if self._pool is None:
            raise StoreError("store is not open")
        conn = self._writer_slots.pop() if self._writer_slots else None
        healthy = False
        try:
            if conn is None or conn.is_closed():
                conn = await self._connect()
            yield conn
            healthy = True
        except DRIVER_ERRORS as exc:
            # A server-side error on a live connection (a constraint, a cancelled statement) leaves the
            # connection usable; anything else (closed, protocol or client state) does not.
            healthy = isinstance(exc, asyncpg.PostgresError) and conn is not None and not conn.is_closed()
            raise StoreError(f"postgres: {type(exc).__name__}") from None
        finally:
            if not healthy and conn is not None and not conn.is_closed():
                conn.terminate()  # cancelled mid-statement or broken: never reuse it
            self._writer_slots.append(conn if healthy else None)

    async def _connect(self) -> asyncpg.Connection:
        """A connection outside the pool (group commit, LISTEN), errors mapped to StoreError."""
        try:
            return await asyncpg.connect(
                self._dsn, timeout=_CONNECT_TIMEOUT, command_timeout=60, server_settings=self._settings
            )
        except DRIVER_ERRORS as exc:
            raise StoreError(f"postgres: cannot connect ({type(exc).__name__})") from None

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[_PoolConnection]:
        # The pool reconnects a closed connection on acquire, so a server restart costs the statements
        # that were running, not the pool.
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            async with self._pool.acquire(timeout=_CONNECT_TIMEOUT) as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise StoreError(f"postgres: {type(exc).__name__}") from None

    async def open(self) -> None:
        try:
            if self._schema:
                first = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
                try:
                    await first.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                finally:
                    await first.close()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=2,
                max_size=self._pool_size,
                command_timeout=60,
                server_settings=self._settings,
                reset=_keep_session,
            )
        except DRIVER_ERRORS as exc:
            raise StoreError(f"postgres: cannot connect ({type(exc).__name__})") from None
        async with self._conn() as conn, conn.transaction():
            # One migrator at a time across nodes.
            await conn.execute("SELECT pg_advisory_xact_lock(7210042)")
            await conn.execute("CREATE TABLE IF NOT EXISTS hub_schema (version integer NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM hub_schema") or 0
            for number, sql in enumerate(MIGRATIONS, start=1):
                if number > version:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO hub_schema (version) VALUES ($1)", number)
        await self._listen()
        # The group commit writes on connections of its own, held for the store's life: no pool
        # acquire/reset round trip per batch.
        self._writer_slots = [await self._connect() for _ in range(self._writers)]
        self._committer = GroupCommitter(
            self._flush, max_batch=self._max_batch, writers=self._writers, max_pending=self._max_pending
        )
        self._finisher = GroupCommitter(self._finish_batch, max_batch=self._max_batch)
        self._indexer.start()

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection; new work is announced on it (and polled for meanwhile)."""
        conn = await self._connect()
        try:
            await conn.add_listener(_CHANNEL, lambda *_: self._work.set())
        except DRIVER_ERRORS as exc:
            conn.terminate()
            raise StoreError(f"postgres: cannot listen ({type(exc).__name__})") from None
        self._listener = conn

    async def close(self) -> None:
        """Close within bounded time, even with the server gone (connections are then terminated)."""
        await self._indexer.close()
        if self._finisher:
            await self._finisher.close(timeout=_CLOSE_TIMEOUT)
        if self._committer:
            await self._committer.close(timeout=_CLOSE_TIMEOUT)
        conns = [c for c in (*self._writer_slots, self._listener) if c is not None]
        self._writer_slots.clear()
        for conn in conns:
            try:
                await asyncio.wait_for(conn.close(), _CLOSE_TIMEOUT)
            except DRIVER_ERRORS:
                conn.terminate()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), _CLOSE_TIMEOUT)
            except DRIVER_ERRORS:
                self._pool.terminate()

    async def vacuum_hot_tables(self, *, dead_rows: int, dead_fraction: float) -> list[Vacuumed]:
        """VACUUM the hot tables with too many dead rows, one node at a time (see hub/store/pg_maintenance.py)."""
        if self._pool is None:
            raise StoreError("store is not open")

        async def connect() -> asyncpg.Connection:
            return await asyncpg.connect(
                self._dsn, timeout=_CONNECT_TIMEOUT, command_timeout=60, server_settings=self._settings
            )

        try:
            return await vacuum_hot_tables(connect, dead_rows=dead_rows, dead_fraction=dead_fraction)
        except DRIVER_ERRORS as exc:
            raise StoreError(f"postgres: vacuum failed ({type(exc).__name__})") from None

    async def ping(self) -> None:
        """Raise StoreError unless the database answers now (for /healthz)."""
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1", timeout=_CONNECT_TIMEOUT)

    async def schema_version(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT max(version) FROM hub_schema"))

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
        cols: list[list[Any]] = [[] for _ in range(17)]
        for message, _deliveries, endpoint, dedup_key, status, reason in batch:
            md = message.metadata
            for i, v in enumerate(
                (
                    message.id,
                    message.parent_id,
                    message.correlation_id,
                    endpoint,
                    message.content_type,
                    message.body,
                    dump_metadata({k: _text(v) for k, v in md.items()}),
                    status,
                    reason,
                    message.received_at,
                    md.get("control_id"),
                    md.get("sending_app"),
                    md.get("sending_facility"),
                    md.get("message_type"),
                    md.get("patient_key"),
                    dedup_key,
                )
            ):
                cols[i].append(_text(v))
        d_cols: list[list[Any]] = [[] for _ in range(5)]
        for message, deliveries, *_ in batch:
            for d in deliveries:
                for i, dv in enumerate((message.id, d.route, d.destination, d.max_attempts, d.ordering_key)):
                    d_cols[i].append(dv)
        async with self._writer() as conn:
            # One statement, so one round trip and its own transaction: the messages, then the
            # deliveries of those actually inserted (not the duplicates), then the wake-up for
            # every node (NOTIFY is sent at commit; PostgreSQL folds identical ones).
            # Business keys (INS, document id) ride in the same statement; the arrays are empty for most
            # inbound messages (an MLLP ADT carries neither), which costs nothing.
            keyed = [(m.id, keys) for m, *_ in batch if (keys := business_keys(m.metadata))]
            if any(k is not None for k in d_cols[4]):
                async with conn.transaction():
                    await conn.execute(_LOCK_KEYS, d_cols[1], d_cols[2], d_cols[4])
                    rows = await conn.fetch(_SUBMIT_BATCH, *cols[:16], *d_cols, *_key_columns(keyed))
            else:
                rows = await conn.fetch(_SUBMIT_BATCH, *cols[:16], *d_cols, *_key_columns(keyed))
            inserted = {r[0] for r in rows}
            if rows:
                # Deliveries stored at this transaction's time, which may be before where the last claim stopped.
                for queue in set(zip(d_cols[1], d_cols[2], strict=True)):
                    self._claim_points.lower(queue, (rows[0][2], 0))
            missing = [b[3] for b in batch if b[0].id not in inserted]
            existing: dict[str, str] = {}
            if missing:
                existing = {
                    r[0]: r[1]
                    for r in await conn.fetch(
                        "SELECT dedup_key, id FROM hub_messages WHERE dedup_key = ANY($1::text[])", missing
                    )
                }
        self._indexer.wake()
        results = []
        for message, deliveries, _e, dedup_key, *_ in batch:
            if message.id in inserted:
                results.append(SubmitResult(message.id, False, len(deliveries)))
            else:
                results.append(SubmitResult(existing.get(dedup_key or "", message.id), True, 0))
        return results

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
        queue = (route, destination)
        start, token = self._claim_points.start(queue)
        async with self._conn() as conn:
            rows = await conn.fetch(
                _CLAIM_HOLD if hold_behind_dead else _CLAIM, route, destination, limit, owner, float(lease_secs), *start
            )
        out = [_claimed(r) for r in rows]
        self._claim_points.advance(queue, token, ((c.delivery.next_attempt_at, c.delivery.id) for c in out))
        out.sort(key=lambda c: (c.delivery.next_attempt_at, c.delivery.id))
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
            OutcomeRecord(delivery_id, owner, status, next_attempt_at, _text(error), outcome, started_at,
                          _text(review), output_metadata, count_attempt, sent, reply)
        )  # fmt: skip

    async def _finish_batch(self, batch: list[OutcomeRecord]) -> list[bool]:
        """Outcomes recorded together (group commit): one transaction, a few set-wise statements, one WAL flush."""
        ids = [f.delivery_id for f in batch]
        outputs = [
            json.dumps({k: _text(v) for k, v in f.output_metadata.items()}) if f.output_metadata is not None else None
            for f in batch
        ]
        settled = [f.delivery_id for f in batch if f.status not in BLOCKING_STATUSES]
        async with self._conn() as conn, conn.transaction():
            if settled:
                await conn.execute(_LOCK_KEYS_OF, settled)
            # not counted: the destination was not reached, no attempt to record (the message stays pending)
            done = [f for f in batch if f.count_attempt]
            replies = [[_text(v) for v in reply_values(f.reply)] for f in done]
            rows = await conn.fetch(
                _RECORD_OUTCOMES, ids, [f.owner for f in batch], [f.status for f in batch],
                [f.next_attempt_at for f in batch], [f.error for f in batch], outputs,
                [0 if f.count_attempt else 1 for f in batch],
                [f.delivery_id for f in done], [f.started_at for f in done], [f.outcome for f in done],
                [f.error for f in done], *([r[i] for r in replies] for i in range(6)),
            )  # fmt: skip
            kept = {r["id"]: r for r in rows if r["kind"] == "f"}
            if not kept:
                return [False] * len(batch)
            # back in the queue: retries, and each settled delivery's next of its key
            ready = [(r["route"], r["destination"], r["next_attempt_at"], r["id"]) for r in rows
                     if r["kind"] == "p" or r["status"] == DeliveryStatus.PENDING]  # fmt: skip
            sent = [(f.delivery_id, f.sent) for f in batch if f.sent is not None and f.delivery_id in kept]
            if sent:
                await conn.executemany(_SENT_UPSERT, [
                    (i, p.sent_id, p.parent_id, p.content_type, p.body, dump_metadata(p.metadata), p.size, p.basis,
                     p.computed_at) for i, p in sent
                ])  # fmt: skip
            done = [f for f in done if f.delivery_id in kept]
            keyed = [
                (kept[f.delivery_id]["message_id"], keys)
                for f in done
                if f.output_metadata and (keys := business_keys(f.output_metadata))
            ]
            if keyed:
                await conn.execute(_INSERT_KEYS, *_key_columns(keyed))
            for f in done:
                if f.status == DeliveryStatus.IDENTITY_REVIEW:
                    await conn.execute(
                        "INSERT INTO hub_reviews (delivery_id, message_id, patient_key, reason, state, created_at)"
                        " SELECT $1, id, coalesce(patient_key, ''), $3, 'open', now() FROM hub_messages WHERE id = $2",
                        f.delivery_id, kept[f.delivery_id]["message_id"], f.review or f.error,
                    )  # fmt: skip
            if any(f.status == DeliveryStatus.PENDING for f in done):
                await conn.execute(f"NOTIFY {_CHANNEL}")
        for route, destination, at, delivery_id in ready:  # committed: the next claims start no later
            self._claim_points.lower((route, destination), (at, delivery_id))
        return [f.delivery_id in kept for f in batch]

    async def renew(self, delivery_ids: list[int], *, owner: str, lease_secs: float) -> set[int]:
        if not delivery_ids:
            return set()
        async with self._conn() as conn:
            rows = await conn.fetch(
                "UPDATE hub_deliveries d SET lease_expires_at = now() + make_interval(secs => $3)"
                f" FROM unnest($1::bigint[], {_IN_FLIGHT_EACH.format(ids='$1')}) AS u(id, was)"
                " WHERE d.id = u.id AND d.status = u.was AND d.lease_owner = $2 RETURNING d.id",
                delivery_ids,
                owner,
                float(lease_secs),
            )
        return {r[0] for r in rows}

    def _made_claimable(self, count: int) -> int:
        """After a commit that made `count` deliveries claimable anywhere in their queues: the next claims start
        from the beginning (hub/store/claim_points.py). Returns `count`."""
        if count:
            self._claim_points.forget()
        return count

    async def release(self, delivery_ids: list[int], *, owner: str) -> int:
        if not delivery_ids:
            return 0
        async with self._conn() as conn:
            result = await conn.execute(
                "UPDATE hub_deliveries SET status = 'pending', attempts = greatest(attempts - 1, 0),"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
                " WHERE status = 'in_flight' AND lease_owner = $1 AND id = ANY($2::bigint[])",
                owner,
                delivery_ids,
            )
        return self._made_claimable(int(result.split()[-1]))

    async def recover_leases(self, *, owner: str | None = None) -> int:
        async with self._conn() as conn:
            result = await conn.execute(
                "UPDATE hub_deliveries SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = now() WHERE status = 'in_flight' AND (lease_expires_at < now()"
                " OR lease_owner = $1)",
                owner,
            )
            count = int(result.split()[-1])
            if count:
                await conn.execute(f"NOTIFY {_CHANNEL}")
        return self._made_claimable(count)

    async def requeue(self, delivery_ids: list[int]) -> int:
        if not delivery_ids:
            return 0
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE hub_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),"
                " last_error = '', updated_at = now() WHERE id = ANY($1::bigint[])"
                " AND status IN ('dead', 'delivered') RETURNING id, message_id",
                delivery_ids,
            )
            # the next attempt runs today's steps (see Store.requeue)
            await conn.execute("DELETE FROM hub_sent WHERE delivery_id = ANY($1::bigint[])", [r[0] for r in rows])
            await conn.execute(f"NOTIFY {_CHANNEL}")
        return self._made_claimable(len(rows))

    async def release_orphans(self, route: str, destination: str, *, owner: str, keep: list[int]) -> int:
        async with self._conn() as conn:
            result = await conn.execute(
                "UPDATE hub_deliveries SET status = 'pending', attempts = greatest(attempts - 1, 0),"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
                " WHERE route = $1 AND destination = $2 AND status = 'in_flight' AND lease_owner = $3"
                " AND NOT (id = ANY($4::bigint[]))",
                route, destination, owner, keep,
            )  # fmt: skip
        return self._made_claimable(int(result.split()[-1]))

    async def dead_letter_ahead(self, delivery_id: int) -> int | None:
        async with self._conn() as conn:
            return await conn.fetchval(_DEAD_AHEAD.format(t="hub_deliveries", p="$1"), delivery_id)  # type: ignore[no-any-return]

    async def discard(self, delivery_ids: list[int]) -> int:
        if not delivery_ids:
            return 0
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE hub_deliveries SET status = 'discarded', updated_at = now()"
                " WHERE id = ANY($1::bigint[]) AND status = 'dead' RETURNING message_id",
                delivery_ids,
            )
            await conn.execute(f"NOTIFY {_CHANNEL}")
        return self._made_claimable(len(rows))  # what the dead letter held behind it

    async def release_held(self, patient_keys: list[str]) -> int:
        if not patient_keys:
            return 0
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE hub_deliveries d SET status = 'pending', next_attempt_at = now(), updated_at = now()"
                " FROM hub_messages m WHERE m.id = d.message_id AND d.status = 'awaiting_identity'"
                " AND m.patient_key = ANY($1::text[]) RETURNING d.message_id",
                patient_keys,
            )
            if rows:
                await conn.execute(f"NOTIFY {_CHANNEL}")
        return self._made_claimable(len(rows))

    # -- identity registry --------------------------------------------------------------------------
    async def get_identity(self, patient_key: str) -> IdentityRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {IDENTITY_SELECT} FROM hub_identities WHERE patient_key = $1", patient_key
            )
        return _ROWS.identity(row) if row else None

    async def save_identity(
        self, record: IdentityRecord, *, event: str, message_id: str | None, note: str = ""
    ) -> IdentityRecord:
        async with self._conn() as conn, conn.transaction():
            stored = await conn.fetchval(
                "SELECT version FROM hub_identities WHERE patient_key = $1 FOR UPDATE", record.patient_key
            )
            if (stored or 0) != record.version:
                raise StoreError("identity changed meanwhile (version conflict)")
            values = (
                record.patient_key,
                record.authority,
                record.local_id,
                record.status,
                record.ins,
                record.ins_oid,
                ",".join(record.attributes),
                json.dumps(dict(record.traits)),
                record.merged_into,
                record.version + 1,
            )
            try:
                updated_at = await conn.fetchval(
                    "INSERT INTO hub_identities (patient_key, authority, local_id, status, ins, ins_oid, attributes,"
                    " traits, merged_into, version, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8::jsonb,$9,$10,now())"
                    " ON CONFLICT (patient_key) DO UPDATE SET authority = EXCLUDED.authority,"
                    " local_id = EXCLUDED.local_id, status = EXCLUDED.status, ins = EXCLUDED.ins,"
                    " ins_oid = EXCLUDED.ins_oid, attributes = EXCLUDED.attributes, traits = EXCLUDED.traits,"
                    " merged_into = EXCLUDED.merged_into, version = EXCLUDED.version, updated_at = now()"
                    " RETURNING updated_at",
                    *values,
                )
            except asyncpg.UniqueViolationError:
                raise StoreError("identity changed meanwhile (version conflict)") from None
            await conn.execute(
                "INSERT INTO hub_identity_history (patient_key, at, event, message_id, status, ins, note)"
                " VALUES ($1, now(), $2, $3, $4, $5, $6)",
                record.patient_key,
                event,
                message_id,
                record.status,
                record.ins,
                note,
            )
        return dataclasses.replace(record, version=record.version + 1, updated_at=updated_at)

    async def list_identities(self, *, status: str | None = None, limit: int = 1000) -> list[IdentityRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {IDENTITY_SELECT} FROM hub_identities WHERE ($1::text IS NULL OR status = $1)"
                " ORDER BY patient_key LIMIT $2",
                status,
                limit,
            )
        return [_ROWS.identity(r) for r in rows]

    async def identities_by_ins(self, ins: str) -> list[IdentityRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {IDENTITY_SELECT} FROM hub_identities WHERE ins = $1 ORDER BY patient_key", ins
            )
        return [_ROWS.identity(r) for r in rows]

    async def identities_merged_into(self, patient_key: str) -> list[IdentityRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {IDENTITY_SELECT} FROM hub_identities WHERE merged_into = $1 ORDER BY patient_key", patient_key
            )
        return [_ROWS.identity(r) for r in rows]

    async def identity_history(self, patient_key: str) -> list[IdentityEvent]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT patient_key, at, event, message_id, status, ins, note"
                " FROM hub_identity_history WHERE patient_key = $1 ORDER BY id",
                patient_key,
            )
        return [IdentityEvent(*r) for r in rows]

    async def list_reviews(self, *, state: str | None = None, limit: int = 1000) -> list[Review]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {REVIEW_SELECT} FROM hub_reviews WHERE ($1::text IS NULL OR state = $1) ORDER BY id LIMIT $2",
                state,
                limit,
            )
        return [_ROWS.review(r) for r in rows]

    async def resolve_review(self, review_id: int, *, action: str, by: str) -> Review | None:
        if action not in ("release", "discard"):
            raise ValueError("action must be release or discard")
        state = ReviewState.RELEASED if action == "release" else ReviewState.DISCARDED
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE hub_reviews SET state = $2, resolved_at = now(), resolved_by = $3"
                f" WHERE id = $1 AND state = 'open' RETURNING {REVIEW_SELECT}",
                review_id,
                state,
                by,
            )
            if row is None:
                return None
            review = _ROWS.review(row)
            if action == "release":
                await conn.execute(
                    "UPDATE hub_deliveries SET status = 'pending', identity_override = true, next_attempt_at = now(),"
                    " updated_at = now() WHERE id = $1 AND status = 'identity_review'",
                    review.delivery_id,
                )
                await conn.execute(f"NOTIFY {_CHANNEL}")
            else:
                await conn.execute(_LOCK_KEYS_OF, [review.delivery_id])
                await conn.execute(
                    "UPDATE hub_deliveries SET status = 'dead', last_error = 'discarded in identity review',"
                    " updated_at = now() WHERE id = $1 AND status = 'identity_review'",
                    review.delivery_id,
                )
                await conn.execute(_PROMOTE_NEXT, [review.delivery_id])
                await conn.execute(f"NOTIFY {_CHANNEL}")
        self._made_claimable(1)
        return review

    async def purge(self, *, before: datetime, statuses: tuple[str, ...], batch: int = 1000) -> int:
        async with self._conn() as conn, conn.transaction():
            ids = [r[0] for r in await conn.fetch(
                f"SELECT m.id FROM {_MESSAGE_FROM} WHERE m.received_at < $1"
                f" AND {_MESSAGE_STATUS_OF_M} = ANY($2::text[])"
                " ORDER BY m.received_at LIMIT $3 FOR UPDATE OF m SKIP LOCKED", before, list(statuses), batch,
            )]  # fmt: skip
            if not ids:
                return 0
            deliveries = "SELECT id FROM hub_deliveries WHERE message_id = ANY($1::text[])"
            await conn.execute(f"DELETE FROM hub_attempts WHERE delivery_id IN ({deliveries})", ids)
            await conn.execute(f"DELETE FROM hub_reviews WHERE delivery_id IN ({deliveries})", ids)
            await conn.execute(f"DELETE FROM hub_sent WHERE delivery_id IN ({deliveries})", ids)
            await conn.execute("DELETE FROM hub_deliveries WHERE message_id = ANY($1::text[])", ids)
            await conn.execute("DELETE FROM hub_message_keys WHERE message_id = ANY($1::text[])", ids)
            await conn.execute("DELETE FROM hub_message_text WHERE message_id = ANY($1::text[])", ids)
            await conn.execute("DELETE FROM hub_text_pending WHERE message_id = ANY($1::text[])", ids)
            await conn.execute("DELETE FROM hub_messages WHERE id = ANY($1::text[])", ids)
        return len(ids)

    async def set_paused(self, route: str, destination: str, *, paused: bool, by: str = "") -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO hub_queue_state (route, destination, paused, changed_by, updated_at)"
                " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (route, destination) DO UPDATE SET"
                " paused = EXCLUDED.paused, changed_by = EXCLUDED.changed_by, updated_at = now()",
                route, destination, paused, by,
            )  # fmt: skip
            await conn.execute(f"NOTIFY {_CHANNEL}")

    async def queue_pauses(self) -> dict[tuple[str, str], bool]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT route, destination, paused FROM hub_queue_state")
        return {(r[0], r[1]): bool(r[2]) for r in rows}

    # -- reads --------------------------------------------------------------------------------------
    async def next_due(self, route: str, destination: str) -> datetime | None:
        # From where this node's next claim starts, for the reason claims do (hub/store/claim_points.py): from
        # the start of the index, this ran over the entries of everything claimed since the last VACUUM, after
        # every claim that left room (at a million queued, a third of a core). What lies before the point was
        # claimed or is held by its key, due already either way; what other nodes put back there is seen at
        # the worker's next poll.
        async with self._conn() as conn:
            value: datetime | None = await conn.fetchval(
                "SELECT min(next_attempt_at) FROM hub_deliveries WHERE route = $1 AND destination = $2"
                " AND status = 'pending' AND NOT waiting AND (next_attempt_at, id) >= ($3::timestamptz, $4::bigint)",
                route,
                destination,
                *self._claim_points.peek((route, destination)),
            )
        return value

    async def undelivered_count(self, *, cap: int | None = None) -> int:
        async with self._conn() as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM (SELECT 1 FROM hub_deliveries WHERE status IN ('pending', 'in_flight')"
                    " LIMIT $1) s",
                    cap,
                )
            )

    async def get_message(self, message_id: str) -> MessageRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_MESSAGE_COLS} FROM {_MESSAGE_FROM} WHERE m.id = $1", message_id)
        return _ROWS.message_record(row) if row else None

    async def search(self, query: SearchQuery) -> list[MessageRecord]:
        where, args = [], []
        for col, op, value in query.filters():
            args.append(value)
            if col != "status":
                where.append(f"m.{col} {op} ${len(args)}")
            elif value in _INGEST_STATUSES:
                where.append(f"m.status = ${len(args)}")  # the partial index of the statuses kept from ingest
            else:
                where.append(f"m.status NOT IN ({_INGEST_STATUS_SQL}) AND s.status = ${len(args)}")
                if driving := _DELIVERY_STATUSES_OF.get(value):
                    # the few messages with such a delivery, through the deliveries' status index, rather
                    # than every message's deliveries folded in turn (delivered: most are, the newest first)
                    args.append(driving)
                    where.append(f"m.id IN (SELECT message_id FROM hub_deliveries WHERE status = ANY(${len(args)}))")
        for name, value in query.key_filters():
            args += [name, value]
            n = len(args)
            keyed = f"m.id IN (SELECT message_id FROM hub_message_keys WHERE name = ${n - 1} AND value = ${n})"
            if name == "ins":
                keyed = f"({keyed} OR m.patient_key IN (SELECT patient_key FROM hub_identities WHERE ins = ${n}))"
            where.append(keyed)
        sql = f"SELECT {_MESSAGE_COLS} FROM {_MESSAGE_FROM}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(query.limit)
        sql += f" ORDER BY m.id DESC LIMIT ${len(args)}"
        async with self._conn() as conn:
            return [_ROWS.message_record(r) for r in await conn.fetch(sql, *args)]

    async def index_content(self, limit: int) -> int:
        """Write the searchable text of up to `limit` messages awaiting indexing; returns how many it took.

        SKIP LOCKED: nodes sharing the store index side by side, each its own rows; a node that dies mid-batch
        leaves its rows pending (its transaction rolls back) for the others or its next start.
        """
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT p.message_id, substring(m.body FROM 1 FOR $2) FROM hub_text_pending p"
                " LEFT JOIN hub_messages m ON m.id = p.message_id ORDER BY p.message_id LIMIT $1"
                " FOR UPDATE OF p SKIP LOCKED",
                limit, SEARCHABLE_CHARS * 4,
            )  # fmt: skip
            if not rows:
                return 0
            found = [(r[0], bytes(r[1])) for r in rows if r[1] is not None]
            texts = await asyncio.to_thread(lambda: [searchable_text(body) for _, body in found])
            await conn.execute(
                "INSERT INTO hub_message_text (message_id, body) SELECT * FROM unnest($1::text[], $2::text[])"
                " ON CONFLICT (message_id) DO NOTHING",
                [mid for mid, _ in found], texts,
            )  # fmt: skip
            await conn.execute("DELETE FROM hub_text_pending WHERE message_id = ANY($1::text[])", [r[0] for r in rows])
        return len(rows)

    async def take_lease(self, name: str, *, owner: str, secs: float) -> str | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "INSERT INTO hub_leases (name, owner, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))"
                " ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at"
                " WHERE hub_leases.owner = EXCLUDED.owner OR hub_leases.expires_at < now() RETURNING state",
                name, owner, float(secs),
            )  # fmt: skip
        return None if row is None else str(row[0])

    async def save_lease_state(self, name: str, *, owner: str, state: str) -> bool:
        async with self._conn() as conn:
            done = await conn.execute(
                "UPDATE hub_leases SET state = $3 WHERE name = $1 AND owner = $2", name, owner, state
            )
        return done != "UPDATE 0"

    async def release_lease(self, name: str, *, owner: str) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE hub_leases SET expires_at = now() WHERE name = $1 AND owner = $2", name, owner)

    async def content_index_lag(self) -> IndexLag:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT count(*), min(m.received_at) FROM (SELECT message_id FROM hub_text_pending LIMIT $1) p"
                " JOIN hub_messages m ON m.id = p.message_id",
                LAG_COUNT_CAP,
            )
        assert row is not None  # an aggregate without GROUP BY returns exactly one row
        return IndexLag(int(row[0]), row[1])

    async def search_content(self, query: ContentQuery) -> list[MessageRecord]:
        # LIKE's wildcards and escape character are literal in the searched text.
        pattern = "%" + query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with self._conn() as conn, conn.transaction():
            # This transaction only: a broad search is cancelled by the server, not left to hold a connection.
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(query.timeout_secs * 1000))}")
            rows = await conn.fetch(
                f"SELECT {_MESSAGE_COLS} FROM hub_message_text t JOIN {_MESSAGE_FROM} ON m.id = t.message_id"
                " WHERE t.body ILIKE $1 AND m.received_at >= $2 AND m.received_at < $3"
                " ORDER BY m.received_at DESC, m.id DESC LIMIT $4",
                pattern, query.since, query.until, query.limit,
            )  # fmt: skip
        return [_ROWS.message_record(r) for r in rows]

    async def deliveries(self, message_ids: list[str]) -> dict[str, list[Delivery]]:
        out: dict[str, list[Delivery]] = {m: [] for m in message_ids}
        if not message_ids:
            return out
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {DELIVERY_SELECT} FROM hub_deliveries WHERE message_id = ANY($1::text[]) ORDER BY id",
                message_ids,
            )
        for r in rows:
            out[r[1]].append(_ROWS.delivery(r))
        return out

    async def sent_payloads(self, delivery_ids: list[int], *, body: bool = True) -> dict[int, SentPayload]:
        if not delivery_ids:
            return {}
        async with self._conn() as conn:
            return await _sent_rows(conn, list(delivery_ids), body=body)

    async def find_deliveries(
        self, *, status: str | None = None, destination: str | None = None, limit: int = 1000, after_id: int = 0
    ) -> list[Delivery]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {DELIVERY_SELECT} FROM hub_deliveries WHERE ($1::text IS NULL OR status = $1)"
                " AND ($2::text IS NULL OR destination = $2) AND id > $4 ORDER BY id LIMIT $3",
                status,
                destination,
                limit,
                after_id,
            )
        return [_ROWS.delivery(r) for r in rows]

    async def queue_stats(self) -> list[QueueStats]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT route, destination, status, count(*), min(created_at),"
                " sum(CASE WHEN attempts > 0 THEN 1 ELSE 0 END) FROM hub_deliveries"
                " WHERE status IN ('pending', 'in_flight', 'awaiting_identity', 'identity_review', 'dead')"
                " GROUP BY route, destination, status"
            )
        return fold_queue_stats(tuple(r) for r in rows)

    async def append_audit(self, event: AuditEvent) -> AuditRecord:
        detail = _text(canonical_detail(event.detail))
        async with self._conn() as conn, conn.transaction():
            # One appender at a time across nodes, so that the chain stays a line.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
            last = await conn.fetchrow("SELECT id, hash FROM hub_audit ORDER BY id DESC LIMIT 1")
            number, prev = (last["id"] + 1, last["hash"]) if last else (1, AUDIT_GENESIS)
            fields = (
                number, utcnow(), _text(event.actor), event.role, event.action, event.message_id,
                _text(event.target), detail, event.outcome,
            )  # fmt: skip
            digest = audit_hash(prev, *fields, key=self.audit_key)
            await conn.execute(
                f"INSERT INTO hub_audit ({AUDIT_SELECT}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                *fields,
                prev,
                digest,
            )
        return _ROWS.audit((*fields, prev, digest))

    async def list_audit(
        self, *, before_id: int | None = None, message_id: str | None = None, actor: str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:  # fmt: skip
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {AUDIT_SELECT} FROM hub_audit WHERE ($1::bigint IS NULL OR id < $1)"
                " AND ($2::text IS NULL OR message_id = $2) AND ($3::text IS NULL OR actor = $3)"
                " ORDER BY id DESC LIMIT $4",
                before_id,
                message_id,
                actor,
                limit,
            )
        return [_ROWS.audit(r) for r in rows]

    async def audit_chain(self, *, after_id: int = 0, limit: int = 1000) -> list[AuditRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {AUDIT_SELECT} FROM hub_audit WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit
            )
        return [_ROWS.audit(r) for r in rows]

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {ATTEMPT_SELECT} FROM hub_attempts WHERE delivery_id = $1 ORDER BY number", delivery_id
            )
        return [_ROWS.attempt(r) for r in rows]

    async def wait_for_work(self, timeout: float) -> None:
        if self._listener is None or self._listener.is_closed():
            self._listener = None
            await self._listen()  # StoreError while the server is away; the caller backs off
            self._work.set()  # announcements were missed while it was closed
        self._work.clear()
        # asyncio.timeout, not wait_for: on Python 3.11 a notification in the same turn as a cancel made wait_for
        # return normally and swallow the cancel (CPython gh-86296), and the caller's loop never stopped.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._work.wait()

    # -- operations: hourly totals and last errors ----------------------------------------------------
    # Created on first use (IF NOT EXISTS, under an advisory lock so that nodes starting together agree)
    # rather than by a numbered migration: it holds only derived figures.
    _HOURLY_DDL = (
        "CREATE TABLE IF NOT EXISTS hub_stats_hourly (hour timestamptz NOT NULL, route text NOT NULL,"
        " destination text NOT NULL, counter text NOT NULL, count bigint NOT NULL,"
        " PRIMARY KEY (hour, route, destination, counter))"
    )

    async def _hourly_table(self) -> None:
        if getattr(self, "_hourly_ready", False):
            return
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7210044)")
            await conn.execute(self._HOURLY_DDL)
        self._hourly_ready = True

    async def add_hourly(self, counts: Sequence[HourlyCount]) -> None:
        if not counts:
            return
        await self._hourly_table()
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO hub_stats_hourly (hour, route, destination, counter, count)"
                " SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[])"
                " ON CONFLICT (hour, route, destination, counter)"
                " DO UPDATE SET count = hub_stats_hourly.count + excluded.count",
                [c.hour for c in counts], [c.route for c in counts], [c.destination for c in counts],
                [c.counter for c in counts], [c.count for c in counts],
            )  # fmt: skip

    async def read_hourly(self, since: datetime) -> list[HourlyCount]:
        await self._hourly_table()
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT hour, route, destination, counter, count FROM hub_stats_hourly"
                " WHERE hour >= date_trunc('hour', $1::timestamptz) ORDER BY hour, route, destination, counter",
                since,
            )
        return [HourlyCount(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    async def queue_last_errors(self) -> dict[tuple[str, str], tuple[str, datetime]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT ON (route, destination) route, destination, last_error, updated_at"
                " FROM hub_deliveries WHERE status IN ('pending', 'in_flight', 'dead') AND last_error <> ''"
                " ORDER BY route, destination, updated_at DESC"
            )
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}
