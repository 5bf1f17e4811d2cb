"""Store contract for outages and ordering (both stores): unreached sends, dead letters that hold a key,
orphaned claims, health checks, the bounded commit queue, and SQLite's bounded WAL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from hub.errors import StoreError
from hub.message import utcnow
from hub.store import Store
from hub.store.base import GroupCommitter
from hub.store.sqlite import SqliteStore
from tests.hubkit import wait_until
from tests.store.test_store_contract import msg, one


async def _claim(store: Store, **kw: object) -> list[int]:
    claimed = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60, **kw)  # type: ignore[arg-type]
    return [c.delivery.id for c in claimed]


async def _finish(store: Store, delivery_id: int, status: str, **kw: object) -> bool:
    return await store.finish(
        delivery_id, owner="n1", status=status, next_attempt_at=None, error="e", outcome="retry",
        started_at=utcnow(), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_an_unreached_send_gives_its_attempt_back(store: Store) -> None:
    await store.submit(msg("A"), one(), endpoint="in", dedup_key=None)
    [d] = await _claim(store)
    assert await _finish(store, d, "pending", count_attempt=False)
    [delivery] = await store.find_deliveries()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert await store.attempts(d) == []


async def test_a_dead_letter_holds_its_key_only_when_asked(store: Store) -> None:
    for c in ("A", "B"):
        await store.submit(msg(c, patient="P"), one(key="P"), endpoint="in", dedup_key=None)
    [first] = await _claim(store, hold_behind_dead=True)
    assert await _finish(store, first, "dead")
    assert await _claim(store, hold_behind_dead=True) == []
    second = next(d.id for d in await store.find_deliveries(status="pending"))
    assert await store.dead_letter_ahead(second) == first  # shown in the message's trace
    assert await store.dead_letter_ahead(first) is None
    assert await _claim(store, hold_behind_dead=False) == [second]


async def test_discard_releases_the_key_and_counts_as_failed(store: Store) -> None:
    a = msg("A", patient="P")
    await store.submit(a, one(key="P"), endpoint="in", dedup_key=None)
    await store.submit(msg("B", patient="P"), one(key="P"), endpoint="in", dedup_key=None)
    [first] = await _claim(store, hold_behind_dead=True)
    await _finish(store, first, "dead")
    assert await store.discard([first, 999_999]) == 1
    assert await store.discard([first]) == 0  # only dead deliveries are discarded
    assert len(await _claim(store, hold_behind_dead=True)) == 1
    record = await store.get_message(a.id)
    assert record is not None and record.status == "failed"


async def test_orphaned_claims_are_given_back_except_those_kept(store: Store) -> None:
    for c in ("A", "B", "C"):
        await store.submit(msg(c), one(), endpoint="in", dedup_key=None)
    ids = await _claim(store)
    assert len(ids) == 3
    assert await store.release_orphans("r", "dpi", owner="other", keep=[]) == 0
    assert await store.release_orphans("r", "dpi", owner="n1", keep=ids[:1]) == 2
    pending = await store.find_deliveries(status="pending")
    assert sorted(d.id for d in pending) == ids[1:] and all(d.attempts == 0 for d in pending)


async def test_ping_answers_while_open(store: Store) -> None:
    await store.ping()


async def test_the_commit_queue_is_bounded() -> None:
    gate = asyncio.Event()

    async def slow(batch: list[int]) -> list[int]:
        await gate.wait()
        return batch

    committer: GroupCommitter[int, int] = GroupCommitter(slow, max_batch=1, max_pending=2)
    first = asyncio.create_task(committer.submit(1))  # taken by the writer, waiting on the gate
    await asyncio.sleep(0)  # one turn of the loop (no time): the task runs up to the gate
    queued = [asyncio.create_task(committer.submit(n)) for n in (2, 3)]
    await asyncio.sleep(0)  # one turn of the loop: both are queued
    with pytest.raises(StoreError, match="commit queue full"):
        await committer.submit(4)
    gate.set()
    assert await first == 1 and [await q for q in queued] == [2, 3]
    await committer.close(timeout=1)


async def test_sqlite_wal_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    limit = 256 * 1024
    store = SqliteStore(tmp_path / "hub.db", wal_limit_bytes=limit)
    store.checkpoint_secs = 0.05
    await store.open()
    wal = tmp_path / "hub.db-wal"
    largest = 0
    try:
        for round_ in range(120):  # ~12 MB of WAL frames written with no pause between batches
            await asyncio.gather(
                *(
                    store.submit(msg(f"W{round_}-{i}"), one(), endpoint="in", dedup_key=None)
                    for i in range(50)
                )
            )
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    finally:
        await store.close()
    # Bounded: the limit plus what the checkpoint periods let through (about 1.3 MB here on a quiet machine,
    # more when the machine is loaded), never the whole history (12 MB without the TRUNCATE checkpoints).
    assert largest < 24 * limit


async def test_sqlite_truncate_checkpoint_gives_way_to_a_reader_and_retries(tmp_path: Path) -> None:
    # A reader of an old snapshot (a content search, on its own connection) keeps the WAL from being emptied. The
    # TRUNCATE checkpoint, which holds the store thread, waits for it only briefly and tries again each round:
    # commits go on meanwhile, and the WAL is emptied once the reader is gone.
    store = SqliteStore(tmp_path / "hub.db", wal_limit_bytes=64 * 1024)
    store.checkpoint_secs = 0.02
    await store.open()
    tries: list[None] = []
    truncate = store._truncate_wal

    def counted() -> None:
        tries.append(None)
        truncate()

    store._truncate_wal = counted  # type: ignore[method-assign]
    wal = tmp_path / "hub.db-wal"
    reader = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # its snapshot now holds the WAL
        for round_ in range(20):
            await asyncio.gather(
                *(store.submit(msg(f"R{round_}-{i}"), one(), endpoint="in", dedup_key=None) for i in range(20))
            )
        await wait_until(lambda: len(tries) >= 3, timeout=60)  # it tried, gave way, and tried again
        await store.submit(msg("DURING"), one(), endpoint="in", dedup_key=None)  # the writer is not held
        assert wal.stat().st_size > store.wal_limit_bytes
        reader.execute("COMMIT")
        await wait_until(lambda: wal.stat().st_size == 0, timeout=60)  # TRUNCATE: emptied at the next round
    finally:
        reader.close()
        await store.close()
