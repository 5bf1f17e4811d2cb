"""Content search on SQLite (FTS5 trigram) and PostgreSQL (pg_trgm): a substring of the payload, case-insensitive,
inside a time window, newest first, limited; purged messages leave the index. The index is written after the
commit by the store's indexer: what is not indexed yet is reported as lag, and indexed soon after."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from hub.content_types import ContentType
from hub.errors import StoreError
from hub.message import Message, utcnow
from hub.store import ContentQuery, Store
from hub.store.base import SEARCHABLE_CHARS, searchable_text
from hub.store.content_index import ContentIndexer, IndexLag
from hub.store.sqlite import SqliteStore
from tests.hubkit import wait_until
from tests.store.test_store_contract import one


def adt(name: str, *, age_hours: float = 0, charset_latin1: bool = False) -> Message:
    text = f"MSH|^~\\&|ADT|HOSP|||20260101||ADT^A08|C{name}|P|2.5\rPID|1||123^^^HOSP||{name}^JEAN\r"
    body = text.encode("latin-1" if charset_latin1 else "utf-8")
    received = utcnow() - timedelta(hours=age_hours)
    return Message.new(body, content_type=ContentType.HL7V2, metadata={"message_type": "ADT^A08"}, received_at=received)


async def indexed(store: Store) -> None:
    """Until the store's indexer has caught up with every commit so far."""

    async def caught_up() -> bool:
        return (await store.content_index_lag()).pending == 0

    await wait_until(caught_up)


def window(hours: float = 1) -> dict[str, object]:
    now = utcnow()
    return {"since": now - timedelta(hours=hours), "until": now + timedelta(minutes=1)}


async def test_finds_a_substring_case_insensitively_within_the_window(store: Store) -> None:
    recent = adt("DUPONT")
    old = adt("DUPONT", age_hours=48)
    other = adt("MARTIN")
    for m in (recent, old, other):
        await store.submit(m, one(), endpoint="mllp_in", dedup_key=None)
    await indexed(store)
    found = await store.search_content(ContentQuery(text="dupon", **window()))  # type: ignore[arg-type]
    assert [r.message.id for r in found] == [recent.id]
    found = await store.search_content(ContentQuery(text="DUPONT^JEAN", **window(72)))  # type: ignore[arg-type]
    assert {r.message.id for r in found} == {recent.id, old.id}
    assert found[0].message.id == recent.id  # newest first
    assert await store.search_content(ContentQuery(text="DURAND", **window(72))) == []  # type: ignore[arg-type]


async def test_limit_quotes_and_latin1_payloads(store: Store) -> None:
    for name in ("LEFÈVRE", "LEFÈVRE", 'O"NEIL%_'):
        await store.submit(adt(name, charset_latin1='"' not in name), one(), endpoint="mllp_in", dedup_key=None)
    await indexed(store)
    found = await store.search_content(ContentQuery(text="lefèvre", limit=1, **window()))  # type: ignore[arg-type]
    assert len(found) == 1
    found = await store.search_content(ContentQuery(text='O"NEIL%_', **window()))  # type: ignore[arg-type]
    assert len(found) == 1
    # LIKE wildcards are literal text, not patterns
    assert await store.search_content(ContentQuery(text="L%V", **window())) == []  # type: ignore[arg-type]


async def test_purged_messages_leave_the_index(store: Store) -> None:
    m = adt("PURGEME", age_hours=30)
    await store.submit(m, [], endpoint="mllp_in", dedup_key=None)  # unrouted: purgeable at once
    await indexed(store)
    assert len(await store.search_content(ContentQuery(text="PURGEME", **window(48)))) == 1  # type: ignore[arg-type]
    assert await store.purge(before=utcnow(), statuses=("unrouted",)) == 1
    assert await store.search_content(ContentQuery(text="PURGEME", **window(48))) == []  # type: ignore[arg-type]


def test_searchable_text_decodes_and_caps() -> None:
    assert searchable_text("DUPONT^Zoé".encode()) == "DUPONT^Zoé"
    assert searchable_text("LEFÈVRE".encode("latin-1")) == "LEFÈVRE"
    assert searchable_text(b"A\x00B") == "A B"
    assert len(searchable_text(b"x" * (SEARCHABLE_CHARS + 10))) == SEARCHABLE_CHARS


async def test_a_search_that_outlasts_its_timeout_is_cancelled_on_its_own_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "hub.db")
    await store.open()
    try:
        await asyncio.gather(
            *(store.submit(adt(f"N{i:05d}"), one(), endpoint="in", dedup_key=None) for i in range(500))
        )
        await indexed(store)
        query = ContentQuery(text="JEAN", limit=1000, timeout_secs=0, **window())  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="content search"):
            await store.search_content(query)
        # the writer was not held: the store goes on taking messages
        await store.submit(adt("AFTER"), one(), endpoint="in", dedup_key=None)
        await indexed(store)
        assert len(await store.search_content(dataclasses.replace(query, timeout_secs=10))) == 501
    finally:
        await store.close()


async def test_indexing_follows_the_commit_and_the_lag_says_what_is_missing(tmp_path: Path) -> None:
    # An indexer that waits an hour after a commit: the message is committed, not yet searchable, and the lag
    # names it; whatever is pending is indexed at the next open (the catch-up after a crash).
    store = SqliteStore(tmp_path / "hub.db", index_delay_secs=3600)
    await store.open()
    try:
        await store._indexer.caught_up.wait()  # the catch-up at start is done: the indexer now waits
        m = adt("LAGGING")
        await store.submit(m, one(), endpoint="in", dedup_key=None)
        lag = await store.content_index_lag()
        assert lag.pending == 1 and lag.oldest_received_at is not None
        assert abs(lag.oldest_received_at - m.received_at) < timedelta(milliseconds=1)
        assert await store.search_content(ContentQuery(text="LAGGING", **window())) == []  # type: ignore[arg-type]
    finally:
        await store.close()
    store = SqliteStore(tmp_path / "hub.db", index_delay_secs=3600)
    await store.open()
    try:
        await indexed(store)
        found = await store.search_content(ContentQuery(text="LAGGING", **window()))  # type: ignore[arg-type]
        assert [r.message.id for r in found] == [m.id]
        assert await store.content_index_lag() == IndexLag(0, None)
    finally:
        await store.close()


async def test_a_message_purged_before_indexing_leaves_no_pending_row(store: Store) -> None:
    store._indexer.delay_secs = 3600  # type: ignore[attr-defined]  # the purge comes before the indexer
    await store._indexer.caught_up.wait()  # type: ignore[attr-defined]
    await store.submit(adt("GONE", age_hours=30), [], endpoint="mllp_in", dedup_key=None)
    assert await store.purge(before=utcnow(), statuses=("unrouted",)) == 1
    assert (await store.content_index_lag()).pending == 0
    assert await store.index_content(100) == 0


async def test_the_indexer_outlives_a_store_outage() -> None:
    calls: list[int] = []

    async def index_batch(limit: int) -> int:
        calls.append(limit)
        if len(calls) == 1:
            raise StoreError("postgres: ConnectionRefusedError")  # the store is down at start
        return 0

    indexer = ContentIndexer(index_batch, delay_secs=0)
    indexer.start()
    try:
        await asyncio.wait_for(indexer.caught_up.wait(), 10)  # tried again after its back-off, and caught up
        indexer.wake()
        await wait_until(lambda: len(calls) >= 3)  # and goes on indexing after each commit
    finally:
        await indexer.close()


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_close_stops_the_indexer_woken_in_the_same_turn(turns: int) -> None:
    # A commit wakes the indexer and close() cancels it `turns` loop turns later (sleep(0): no time passes). On
    # Python 3.11 asyncio.wait_for returned normally when what it awaited finished in the same turn as the cancel
    # (CPython gh-86296): the cancel was lost, the indexer went on, and close() waited for ever.
    async def index_batch(limit: int) -> int:
        return 0

    indexer = ContentIndexer(index_batch, delay_secs=0, sweep_secs=3600)
    indexer.start()
    await indexer.caught_up.wait()  # set just before the indexer waits for a wake-up
    indexer.wake()
    for _ in range(turns):
        await asyncio.sleep(0)
    try:
        async with asyncio.timeout(30):
            await indexer.close()
    except TimeoutError:
        pytest.fail("ContentIndexer.close() did not return: the indexer ignored its cancellation")


@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_a_store_closed_right_after_a_commit_closes(tmp_path: Path, turns: int) -> None:
    # The hang seen once in a loaded full run (test_sqlite_wal_stays_bounded_under_sustained_writes): the last
    # group commit woke the indexer, and the store's close() came in the same turns (the test above).
    store = SqliteStore(tmp_path / "hub.db")
    await store.open()
    await store._indexer.caught_up.wait()  # the indexer now waits for a commit
    await store.submit(adt("LAST"), one(), endpoint="in", dedup_key=None)
    for _ in range(turns):
        await asyncio.sleep(0)
    try:
        async with asyncio.timeout(30):
            await store.close()
    except TimeoutError:
        pytest.fail("SqliteStore.close() did not return after a commit: its content indexer ignored the cancel")
