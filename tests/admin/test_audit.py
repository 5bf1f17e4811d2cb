"""The audit trail's hash chain, on both stores: verified when intact, and every kind of tampering found."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from hub.admin.audit import AuditKeys, export_line, verify_chain, verify_export
from hub.store import AuditEvent, AuditKey, Store
from hub.store.base import AUDIT_GENESIS, audit_hash
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
        "keyed": 0,
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


K1, K2 = AuditKey("k1", b"k1-secret-" * 4), AuditKey("k2", b"k2-secret-" * 4)


async def _rewrite_whole_chain(store: Store, key: AuditKey | None) -> None:
    """What someone with write access to the database can do: recompute every hash after an edit."""
    prev = AUDIT_GENESIS
    for e in await store.audit_chain():
        actor = "someone-else" if e.id == 2 else e.actor
        digest = audit_hash(
            prev, e.id, e.at, actor, e.role, e.action, e.message_id, e.target, e.detail, e.outcome, key=key
        )
        await _raw(store, "UPDATE audit SET actor = $1, prev_hash = $2, hash = $3 WHERE id = " + str(e.id),
                   actor, prev, digest)  # fmt: skip
        prev = digest


async def test_keyed_chain_cannot_be_rewritten_without_the_key_and_survives_rotation(store: Store) -> None:
    keys = AuditKeys(K2, {"k1": K1, "k2": K2})
    # Two entries from before the chain was keyed, then entries under k1, then a rotation to k2.
    for key, n in ((None, 2), (K1, 2), (K2, 2)):
        store.audit_key = key
        for i in range(n):
            await store.append_audit(AuditEvent(actor=f"u{i}", role="operator", action="replay", detail={"i": i}))
    report = await verify_chain(store, keys=keys)
    assert (report.ok, report.checked, report.keyed) == (True, 6, 4)
    # Without the retired key, its entries cannot be checked.
    report = await verify_chain(store, keys=AuditKeys(K2, {"k2": K2}))
    assert (report.ok, report.first_bad_id) == (False, 3) and "unknown audit key 'k1'" in report.problem

    # Rewritten with plain SHA-256 from the start by someone who knows the scheme, not the key: refused.
    original = await store.audit_chain()
    await _rewrite_whole_chain(store, None)
    assert (await verify_chain(store)).ok  # an unkeyed verification would be fooled
    report = await verify_chain(store, keys=keys)
    assert not report.ok and report.problem == "the newest entry is not keyed"
    # ... or with a key of their own under a known id: refused at the first entry they made.
    await _rewrite_whole_chain(store, AuditKey("k2", b"guessed-" * 5))
    report = await verify_chain(store, keys=keys)
    assert (report.ok, report.first_bad_id) == (False, 1) and "altered" in report.problem
    # Back to the original rows: intact.
    for e in original:
        await _raw(store, "UPDATE audit SET actor = $1, prev_hash = $2, hash = $3 WHERE id = " + str(e.id),
                   e.actor, e.prev_hash, e.hash)  # fmt: skip
    assert (await verify_chain(store, keys=keys)).ok
    # An unkeyed entry slipped in after keyed ones is refused too.
    store.audit_key = None
    await store.append_audit(AuditEvent(actor="intruder", role="admin", action="replay"))
    report = await verify_chain(store, keys=keys)
    assert (report.ok, report.first_bad_id) == (False, 7) and "not keyed" in report.problem

    # The export is verified offline with the same keys, entry for entry.
    lines = [export_line(e) for e in await store.audit_chain()]
    assert verify_export(lines, keys).first_bad_id == 7
    assert verify_export(lines[:6], keys).ok
    lines[3] = lines[3].replace('"u1"', '"u9"')
    assert verify_export(lines[:6], keys).first_bad_id == 4

