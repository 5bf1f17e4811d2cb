"""Hourly totals that survive restarts: counted in memory, added to the store every few seconds.

Per (route, destination) and hour (UTC): ``received`` (deliveries routed),
``delivered``, ``failed`` (attempts that will be retried), ``dead``; per
listener (route ``""``): ``received`` and ``rejected``. Each node adds its own
counts (the store sums them), so the figures are the cluster's. A flush that
fails keeps its counts for the next one: a store outage delays the figures,
it does not lose them (unless the process ends during the outage).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from hub.store import OperationsStore
from hub.store.base import HourlyCount

__all__ = ["COUNTERS", "HourlyStats", "summarise"]

COUNTERS = ("received", "delivered", "failed", "dead", "rejected")


class HourlyStats:
    """Counts since the last flush, attributed at flush time to the hour the period started in.

    Counting is one dict update (measured: about 0.2 µs; no clock read per message); a period is at most one
    flush interval long, so a count lands at most that late into the next hour.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}
        self._since = time.time()

    def add(self, route: str, destination: str, counter: str, n: int = 1) -> None:
        key = (route, destination, counter)
        self._counts[key] = self._counts.get(key, 0) + n

    def unflushed(self) -> list[HourlyCount]:
        """What this node counted since its last flush (added to the stored figures when showing them)."""
        hour = _hour(self._since)
        return [HourlyCount(hour, k[0], k[1], k[2], n) for k, n in self._counts.items()]

    async def flush(self, store: OperationsStore) -> int:
        """Add what was counted since the last flush to the store; returns how many rows. Raises StoreError."""
        rows = self.unflushed()
        counts, self._counts, since, self._since = self._counts, {}, self._since, time.time()
        try:
            await store.add_hourly(rows)
        except BaseException:
            for key, n in counts.items():  # kept for the next flush
                self._counts[key] = self._counts.get(key, 0) + n
            self._since = since
            raise
        return len(rows)


def _hour(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp // 3600 * 3600, UTC)


def summarise(rows: list[HourlyCount], *, hours: int, now: datetime | None = None) -> dict[str, Any]:
    """Totals, a per-hour series for each counter (oldest first, `hours` long) and per-queue totals."""
    end = (now or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0)
    slots = [end - timedelta(hours=hours - 1 - i) for i in range(hours)]
    index = {slot: i for i, slot in enumerate(slots)}
    series = {c: [0] * hours for c in COUNTERS}
    totals = dict.fromkeys(COUNTERS, 0)
    queues: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        i = index.get(r.hour.astimezone(UTC))
        if i is None or r.counter not in series:
            continue
        queue = queues.setdefault((r.route, r.destination), dict.fromkeys(COUNTERS, 0))
        queue[r.counter] += r.count
        # A listener's `received` counts messages, a queue's counts deliveries: the totals take messages.
        if r.counter == "received" and r.route:
            continue
        series[r.counter][i] += r.count
        totals[r.counter] += r.count
    return {
        "hours": [s.isoformat() for s in slots],
        "series": series,
        "totals": totals,
        "queues": [{"route": k[0], "destination": k[1], **v} for k, v in sorted(queues.items())],
    }
