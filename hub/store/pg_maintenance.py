"""Keeping the PostgreSQL store's hot tables vacuumed, whatever the server's autovacuum does.

Every delivery rewrites its ``hub_deliveries`` row two or three times (the
key's next, claim, outcome) and adds an attempt; PostgreSQL keeps the
old row versions until a VACUUM removes them (PostgreSQL "Routine
Vacuuming", 25.1). Until then every claim steps over the index entries of the
deliveries already claimed or delivered: a drain of a million queued
deliveries fell to less than a third of its rate with 2.5 million dead row
versions, and a plain VACUUM doubled it at once.

Two guards, as both are needed:

* the schema sets per-table autovacuum storage parameters on the hot tables
  (a fixed threshold instead of PostgreSQL's 20 % of the table), used where
  the server runs autovacuum;
* the hub's own maintenance task (:func:`vacuum_hot_tables`, run under the
  runtime's supervisor every ``store.vacuum_check_secs``) reads
  ``pg_stat_user_tables`` and runs ``VACUUM (ANALYZE, SKIP_LOCKED)`` — never
  FULL, which would lock the table — on each hot table whose dead row
  versions passed ``store.vacuum_dead_rows`` + ``store.vacuum_dead_fraction`` x
  its live rows, and ``ANALYZE (SKIP_LOCKED)`` alone on one whose rows written
  since its last ANALYZE passed the same threshold with few dead (a backlog
  that only grew). A plain VACUUM takes a SHARE UPDATE EXCLUSIVE lock, which
  blocks neither reads nor writes (PostgreSQL 13.3.1, "Table-Level Locks"), on a
  connection of its own: ingest and delivery go on meanwhile. One node of a
  cluster at a time (a session advisory lock; the others skip their turn).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

__all__ = ["HOT_TABLES", "VACUUM_LOCK", "Vacuumed", "vacuum_hot_tables"]

#: The tables the hub rewrites per message or delivery, or purges (retention): where dead rows pile up
#: (hub_text_pending is a queue: every row is deleted once its message is indexed).
HOT_TABLES = (
    "hub_deliveries",
    "hub_messages",
    "hub_sent",
    "hub_attempts",
    "hub_message_keys",
    "hub_message_text",
    "hub_text_pending",
)
#: pg_try_advisory_lock key: one node vacuums at a time.
VACUUM_LOCK = 7210044
#: Longest a single VACUUM may run before the task gives up on it (the next turn starts it again).
VACUUM_TIMEOUT_SECS = 3600.0
CLOSE_TIMEOUT_SECS = 3.0

_DEAD_ROWS = """
SELECT t.name, s.n_dead_tup, s.n_live_tup, s.n_mod_since_analyze
FROM unnest($1::text[]) AS t(name) JOIN pg_stat_user_tables s ON s.relid = to_regclass(t.name)
ORDER BY s.n_dead_tup DESC
"""


@dataclass(frozen=True)
class Vacuumed:
    """One table vacuumed, or only analysed: its dead row versions before (as the statistics said), and how
    long it took."""

    table: str
    dead_rows: int
    secs: float
    analyzed_only: bool = False


async def vacuum_hot_tables(
    connect: Callable[[], Awaitable[asyncpg.Connection]], *, dead_rows: int, dead_fraction: float
) -> list[Vacuumed]:
    """VACUUM each hot table over the threshold, on a connection of its own; [] when another node holds the turn.

    Driver errors propagate (the caller maps them); the connection is closed either way, which also
    ends the advisory lock.
    """
    conn = await connect()
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", VACUUM_LOCK):
            return []
        done = []
        for name, dead, live, changed in await conn.fetch(_DEAD_ROWS, list(HOT_TABLES)):
            threshold = dead_rows + dead_fraction * live
            if dead > threshold:
                command = "VACUUM (ANALYZE, SKIP_LOCKED)"
            elif changed > threshold:
                # Rows written but few dead (a backlog growing during an outage): the planner's statistics
                # are still those of the small table it was, which is what autovacuum's analyze threshold
                # is for (PostgreSQL 25.1.6, "Updating Planner Statistics"). Measured: 100,000 deliveries of
                # 100,000 patients queued, then drained at 30-110/s for three minutes (the delivery's statements
                # planned without statistics of the grown table) until a VACUUM's ANALYZE, ~1,300/s after.
                command = "ANALYZE (SKIP_LOCKED)"
            else:
                continue
            started = time.monotonic()
            # SKIP_LOCKED: if autovacuum (or DDL) holds the table now, skip it rather than wait.
            await conn.execute(f"{command} {name}", timeout=VACUUM_TIMEOUT_SECS)
            done.append(Vacuumed(name, int(dead), time.monotonic() - started, analyzed_only=dead <= threshold))
        return done
    finally:
        # Ending the session ends the advisory lock; a server that does not answer is not waited for.
        try:
            await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_SECS)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()
