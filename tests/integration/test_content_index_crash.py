"""The content index after a crash: a hub SIGKILLed between a message's commit and its indexing indexes the message
when it starts again (both stores).

The hub's indexer is told to let commits gather for an hour (`store.index_delay_secs`), so the kill surely falls
after the ACK (the commit) and before the indexing; the restarted hub, same config, indexes what is pending at
start, without waiting for that delay.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import drop_pg_schema, free_port, new_pg_schema
from tests.hubkit import MllpClient, ack_fields, adt, wait_until, write_config
from tests.integration.test_crash_safety import HubProcess

pytestmark = pytest.mark.slow

# (pending rows, indexed rows) for the message of one control id, read from the store's tables
Probe = Callable[[str], Awaitable[tuple[int, int]]]


def sqlite_probe(path: Path) -> Probe:
    async def probe(control_id: str) -> tuple[int, int]:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            (mid,) = db.execute("SELECT id FROM messages WHERE control_id = ?", (control_id,)).fetchone()
            pending = db.execute("SELECT count(*) FROM text_pending WHERE message_id = ?", (mid,)).fetchone()[0]
            indexed = db.execute("SELECT count(*) FROM message_text WHERE message_id = ?", (mid,)).fetchone()[0]
        finally:
            db.close()
        return pending, indexed

    return probe


def postgres_probe(dsn: str, schema: str) -> Probe:
    async def probe(control_id: str) -> tuple[int, int]:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            mid = await conn.fetchval("SELECT id FROM hub_messages WHERE control_id = $1", control_id)
            pending = await conn.fetchval("SELECT count(*) FROM hub_text_pending WHERE message_id = $1", mid)
            indexed = await conn.fetchval("SELECT count(*) FROM hub_message_text WHERE message_id = $1", mid)
        finally:
            await conn.close()
        return pending, indexed

    return probe


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_message_committed_but_not_indexed_at_a_crash_is_indexed_at_restart(
    tmp_path: Path, kind: str
) -> None:
    schema = dsn = ""
    if kind == "sqlite":
        store = {"kind": "sqlite", "path": str(tmp_path / "hub.db"), "index_delay_secs": 3600}
        probe = sqlite_probe(tmp_path / "hub.db")
    else:
        dsn, schema = await new_pg_schema()
        store = {"kind": "postgres", "dsn": dsn, "schema": schema, "pool_size": 4, "index_delay_secs": 3600}
        probe = postgres_probe(dsn, schema)
    port = free_port()
    config = write_config(
        tmp_path, peer_port=free_port(), store=store, listener={"listen": f"127.0.0.1:{port}"},
        http={"enabled": False}, logging={"level": "warning"},
    )  # fmt: skip
    hub = HubProcess(config, port)
    try:
        await hub.start()
        client = await MllpClient.connect(port)
        try:
            assert ack_fields(await client.send(adt("IDX1")))["MSA"][1] == "AA"
        finally:
            await client.close()
        assert await probe("IDX1") == (1, 0)  # committed (the AA), listed as pending, not indexed
        await hub.kill()
        assert await probe("IDX1") == (1, 0)

        await hub.start()

        async def indexed() -> bool:
            return await probe("IDX1") == (0, 1)

        await wait_until(indexed, timeout=20)
    finally:
        await hub.kill()
        if schema:
            await drop_pg_schema(dsn, schema)
