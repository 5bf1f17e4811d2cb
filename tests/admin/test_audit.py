"""The audit trail's hash chain, on both stores: verified when intact, and every kind of tampering found."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from hub.admin.audit import verify_chain
from hub.store import AuditEvent, Store
from hub.store.base import audit_hash
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SqliteStore
from tests.admin.adminkit import admin_hub


async def _raw(store: Store, sql: str, *args: Any) -> None:
    """Run SQL behind the store's back, as someone with database access would (table `audit` / `hub_audit`)."""
    if isinstance(store, SqliteStore):
        db = sqlite3.connect(store.path, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            db.execute(sql.replace("$1", "?").replace("$2", "?").replace("$3", "?"), args)
        finally:
            db.close()
        return
    assert isinstance(store, PostgresStore)
    conn = await asyncpg.connect(store._dsn, server_settings={"search_path": store._schema or "public"})
    try:
        await conn.execute(re.sub(r"\b(FROM|UPDATE) audit\b", r"\1 hub_audit", sql), *args)
    finally:
        await conn.close()


async def test_intact_chain_verifies_and_tampering_is_found(store: Store) -> None:
    assert (await verify_chain(store)).as_dict() == {
        "ok": True, "checked": 0, "head_id": 0, "head_hash": "0" * 64, "first_bad_id": None, "problem": "",
    }  # fmt: skip
    for i in range(5):
        await store.append_audit(
            AuditEvent(actor=f"user{i}", role="operator", action="replay", message_id=f"m{i}", detail={"n": i})
        )
    report = await verify_chain(store, page=2)  # several pages
    chain = await store.audit_chain()
    assert report.ok and report.checked == 5 and (report.head_id, report.head_hash) == (5, chain[-1].hash)
    second = chain[1]

    # 1. An entry edited in place: its own hash no longer matches.
    await _raw(store, "UPDATE audit SET actor = $1 WHERE id = 2", "someone-else")
    report = await verify_chain(store)
    assert (report.ok, report.first_bad_id, report.checked) == (False, 2, 1) and "altered" in report.problem

    # 2. Edited and re-hashed by someone who knows the scheme: the next entry's link breaks.
    forged = audit_hash(
        second.prev_hash, 2, second.at, "someone-else", second.role, second.action, second.message_id, second.target,
        second.detail, second.outcome,
    )  # fmt: skip
    await _raw(store, "UPDATE audit SET hash = $1 WHERE id = 2", forged)
    report = await verify_chain(store)
    assert (report.ok, report.first_bad_id) == (False, 3) and "prev_hash" in report.problem

    # Put it back: intact again.
    await _raw(store, "UPDATE audit SET actor = $1, hash = $2 WHERE id = 2", second.actor, second.hash)
    assert (await verify_chain(store)).ok

    # 3. An entry removed from the middle.
    await _raw(store, "DELETE FROM audit WHERE id = 4")
    report = await verify_chain(store)
    assert (report.ok, report.first_bad_id, report.problem) == (False, 5, "entry 4 is missing")


async def test_api_verification_reports_a_tampered_trail(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _peer, apis):
        await apis["operator"].post("/api/destinations/dpi/pause")
        await apis["operator"].post("/api/destinations/dpi/resume")
        assert (await apis["admin"].get("/api/audit/verify"))["ok"] is True
        assert hub.store is not None
        await _raw(hub.store, "UPDATE audit SET detail = $1 WHERE id = 1", '{"routes":[]}')
        report = await apis["admin"].get("/api/audit/verify")
        assert report["ok"] is False and report["first_bad_id"] == 1
        await apis["operator"].get("/api/audit/verify", expect=403)
