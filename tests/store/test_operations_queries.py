"""The store's operations queries, on SQLite and PostgreSQL: hourly totals and each queue's last error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.message import utcnow
from hub.stats import HourlyStats, summarise
from hub.store import Store
from hub.store.base import HourlyCount
from tests.store.test_store_contract import msg, one


async def test_hourly_counts_add_up_across_flushes_and_nodes(store: Store) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    earlier = hour - timedelta(hours=3)
    await store.add_hourly([HourlyCount(hour, "r", "dpi", "delivered", 2), HourlyCount(earlier, "r", "dpi", "dead", 1)])
    await store.add_hourly([HourlyCount(hour, "r", "dpi", "delivered", 3)])  # another node, or a later flush
    rows = await store.read_hourly(hour - timedelta(hours=5))
    assert [(r.hour, r.counter, r.count) for r in rows] == [(earlier, "dead", 1), (hour, "delivered", 5)]
    assert await store.read_hourly(hour + timedelta(minutes=30)) == [HourlyCount(hour, "r", "dpi", "delivered", 5)]

    node = HourlyStats()
    node.add("", "mllp_in", "received")
    node.add("r", "dpi", "delivered")
    assert await node.flush(store) == 2 and node.unflushed() == []
    summary = summarise(await store.read_hourly(hour - timedelta(hours=23)), hours=24)
    assert summary["totals"]["delivered"] == 6 and summary["totals"]["dead"] == 1
    assert summary["totals"]["received"] == 1 and summary["series"]["delivered"][-1] == 6
    assert summary["series"]["dead"][-4] == 1 and len(summary["hours"]) == 24


async def test_queue_last_errors_name_the_newest_error_of_waiting_or_dead_deliveries(store: Store) -> None:
    for i in range(2):
        await store.submit(msg(f"E{i}", patient=f"P{i}@H"), one(), endpoint="in", dedup_key=None)
    claimed = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
    assert len(claimed) == 2
    first, second = claimed
    started = utcnow()
    await store.finish(
        first.delivery.id, owner="n1", status="dead", next_attempt_at=None, error="AR: refused",
        outcome="reject", started_at=started,
    )  # fmt: skip
    await store.finish(
        second.delivery.id, owner="n1", status="pending", next_attempt_at=utcnow() + timedelta(seconds=60),
        error="AE: try later", outcome="retry", started_at=started,
    )  # fmt: skip
    errors = await store.queue_last_errors()
    assert list(errors) == [("r", "dpi")]
    text, at = errors[("r", "dpi")]
    assert text == "AE: try later" and abs((at - utcnow()).total_seconds()) < 30
