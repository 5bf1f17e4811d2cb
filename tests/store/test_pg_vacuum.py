"""The hub keeps its PostgreSQL hot tables vacuumed, whatever the server's autovacuum setting.

Real PostgreSQL, a schema per test. Deliveries are claimed and settled through
the store (each leaves dead row versions behind, as in production); the hub's
maintenance task must VACUUM them away (``vacuum_count`` counts manual VACUUMs
only, never autovacuum's), and only one node at a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from hub.store import NewDelivery
from hub.store.pg_maintenance import VACUUM_LOCK
from hub.store.postgres import PostgresStore
from tests.conftest import drop_pg_schema, free_port, new_pg_schema
from tests.hubkit import MllpClient, adt, default_route, mllp_port, running_hub, running_peer, wait_until, write_config
from tests.test_leases import message

pytestmark = pytest.mark.postgres


async def _stats(dsn: str, schema: str, table: str, *columns: str) -> tuple[int, ...]:
    """`columns` of pg_stat_user_tables for one table as the statistics say now (zeros before its first row)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            f"SELECT {', '.join(columns)} FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
            schema,
            table,
        )
    finally:
        await conn.close()
    return tuple(int(v) for v in row) if row else (0,) * len(columns)


async def _table_stats(dsn: str, schema: str, table: str) -> tuple[int, ...]:
    """(dead row versions, manual VACUUMs) of one table."""
    return await _stats(dsn, schema, table, "n_dead_tup", "vacuum_count")


async def test_the_hub_vacuums_its_hot_tables_once_dead_rows_pile_up(tmp_path: Path) -> None:
    dsn, schema = await new_pg_schema()
    port = free_port()
    store = {"kind": "postgres", "dsn": dsn, "schema": schema, "vacuum_check_secs": 0.2, "vacuum_dead_rows": 50,
             "vacuum_dead_fraction": 0.0}  # fmt: skip
    try:
        async with running_peer(listen=f"127.0.0.1:{port}") as peer:
            config = write_config(tmp_path, peer_port=port, store=store, routes=[default_route()])
            async with running_hub(config) as hub:
                client = await MllpClient.connect(mllp_port(hub))
                for n in range(60):
                    await client.send(adt(f"V{n:03d}", patient=f"P{n % 7}"))
                await client.close()
                await wait_until(lambda: len(peer.bodies) == 60, timeout=30)
                # 60 deliveries, each rewritten by its claim and its outcome: 120 dead row versions, over the
                # threshold of 50; the task must find them in the statistics and vacuum them away.
                await wait_until(lambda: _vacuumed(dsn, schema, "hub_deliveries"), timeout=40, interval=0.2)
                # The messages' rows are written once: their status is read from their deliveries.
                await wait_until(lambda: _writes(dsn, schema, "hub_messages", 60), timeout=40, interval=0.2)
                assert await _writes(dsn, schema, "hub_messages", 60, updates=0)
                assert "vacuum" not in hub.supervisor.unhealthy()
    finally:
        await drop_pg_schema(dsn, schema)


async def _writes(dsn: str, schema: str, table: str, inserts: int, *, updates: int | None = None) -> bool:
    """Whether the statistics show `inserts` rows inserted into `table` (and, if given, `updates` updates)."""
    inserted, updated = await _stats(dsn, schema, table, "n_tup_ins", "n_tup_upd")
    return inserted == inserts and (updates is None or updated == updates)


async def _vacuumed(dsn: str, schema: str, table: str) -> bool:
    dead, vacuums = await _table_stats(dsn, schema, table)
    return vacuums >= 1 and dead < 50


async def test_one_node_vacuums_at_a_time_and_only_over_the_threshold() -> None:
    dsn, schema = await new_pg_schema()
    store = PostgresStore(dsn, schema=schema, pool_size=2)
    await store.open()
    other_node = await asyncpg.connect(dsn)
    try:
        for n in range(20):
            await store.submit(message(f"T{n}", f"P{n}"), [NewDelivery("r", "dpi", f"P{n}")], endpoint="in",
                               dedup_key=None)  # fmt: skip
        claimed = await store.claim("r", "dpi", limit=20, owner="a", lease_secs=60)
        await asyncio.gather(*(
            store.finish(c.delivery.id, owner="a", status="delivered", next_attempt_at=None, error="",
                         outcome="accept", started_at=c.delivery.created_at) for c in claimed
        ))  # fmt: skip
        await wait_until(lambda: _has_dead(dsn, schema), timeout=30, interval=0.2)
        # under the threshold: nothing to do
        assert await store.vacuum_hot_tables(dead_rows=1_000_000, dead_fraction=0.0) == []
        # another node holds the turn: this one skips it
        await other_node.execute("SELECT pg_advisory_lock($1)", VACUUM_LOCK)
        assert await store.vacuum_hot_tables(dead_rows=0, dead_fraction=0.0) == []
        assert (await _table_stats(dsn, schema, "hub_deliveries"))[1] == 0
        await other_node.execute("SELECT pg_advisory_unlock($1)", VACUUM_LOCK)
        done = await store.vacuum_hot_tables(dead_rows=0, dead_fraction=0.0)
        assert "hub_deliveries" in {v.table for v in done}
        assert (await _table_stats(dsn, schema, "hub_deliveries"))[1] == 1
        # where the server runs autovacuum, it starts on the hot tables after a fixed count, not 20 % of them
        options = await other_node.fetchval(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass($1)", f'"{schema}".hub_deliveries'
        )
        assert "autovacuum_vacuum_threshold=10000" in options
        assert "autovacuum_vacuum_scale_factor=0.05" in options
    finally:
        await other_node.close()
        await store.close()
        await drop_pg_schema(dsn, schema)


async def _has_dead(dsn: str, schema: str) -> bool:
    return (await _table_stats(dsn, schema, "hub_deliveries"))[0] > 0


async def test_a_table_that_only_grew_is_analysed_not_vacuumed() -> None:
    """A backlog growing during an outage leaves no dead rows, but the planner's statistics are those of the
    small table it was: past the same threshold of rows written since the last ANALYZE, the task analyses."""
    dsn, schema = await new_pg_schema()
    store = PostgresStore(dsn, schema=schema, pool_size=2)
    await store.open()
    try:
        for n in range(30):
            await store.submit(message(f"G{n}", f"P{n}"), [NewDelivery("r", "dpi", f"P{n}")], endpoint="in",
                               dedup_key=None)  # fmt: skip
        await wait_until(lambda: _changed_since_analyze(dsn, schema, "hub_messages", 30), timeout=30, interval=0.2)
        assert not [v for v in await store.vacuum_hot_tables(dead_rows=100, dead_fraction=0.0)
                    if v.table == "hub_messages"]  # fmt: skip
        done = {v.table: v for v in await store.vacuum_hot_tables(dead_rows=10, dead_fraction=0.0)}
        assert done["hub_messages"].analyzed_only and done["hub_messages"].dead_rows == 0
        assert await _stats(dsn, schema, "hub_messages", "analyze_count", "vacuum_count") == (1, 0)
    finally:
        await store.close()
        await drop_pg_schema(dsn, schema)


async def _changed_since_analyze(dsn: str, schema: str, table: str, rows: int) -> bool:
    return (await _stats(dsn, schema, table, "n_mod_since_analyze"))[0] >= rows
