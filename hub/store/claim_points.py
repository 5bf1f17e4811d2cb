"""Where a node's next claim of a queue starts its walk of the ready index (PostgreSQL store).

Why: PostgreSQL leaves a claimed delivery's entry in the claim index (``hub_deliveries_ready``, ordered by
``next_attempt_at, id``) until a VACUUM removes it (PostgreSQL "Routine Vacuuming", 25.1.2); a scan skips
such entries without reading the table, but still reads their index pages. A claim that walks the index from
its start therefore steps over every delivery claimed since the last VACUUM before reaching the first
claimable one: draining a million queued deliveries, 330 of the 410 buffers a claim of 16 read were those
pages (108,000 dead row versions), and the claim was the most expensive statement of the drain. Since the
number of claims between two VACUUMs grows with the table (its threshold is 5 % of the live rows), the claim
cost grew with the backlog.

So each claim starts where this node's previous claim of the queue stopped: every delivery before that point
was claimed by it, or was not claimable then. What this node itself makes claimable again before that point
moves the point back (:meth:`ClaimPoints.lower`: a key's next delivery, a retry, a new message whose
transaction began before the last claim) or forgets it (:meth:`ClaimPoints.forget`: releases, requeues,
recovered leases); and at least once every ``rescan_secs`` a claim starts from the beginning, for what other
nodes and processes made claimable behind the point. Claims see the same deliveries as before, in the same
order per ordering key (the store's FIFO guards are unchanged); only which key's delivery goes first may
differ, for at most ``rescan_secs``, when another node made it claimable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

__all__ = ["BEGINNING", "ClaimPoints", "Point", "Queue"]

#: (next_attempt_at, delivery id): a position in the claim index of one queue.
Point = tuple[datetime, int]
#: (route, destination)
Queue = tuple[str, str]
#: Before every delivery.
BEGINNING: Point = (datetime(1, 1, 1, tzinfo=UTC), 0)
#: Longest a node goes without a claim from the beginning of a queue.
RESCAN_SECS = 1.0


class ClaimPoints:
    """Per queue, the point where the next claim starts; a claim in progress never moves it past a `lower`."""

    def __init__(self, *, rescan_secs: float = RESCAN_SECS, clock: Callable[[], float] = time.monotonic) -> None:
        self.rescan_secs = rescan_secs
        self._clock = clock
        self._points: dict[Queue, Point] = {}
        self._rescanned: dict[Queue, float] = {}
        self._moves: dict[Queue, int] = {}  # how many times each queue's point was moved back
        self._forgets = 0

    def start(self, queue: Queue) -> tuple[Point, tuple[int, int]]:
        """Where a claim of `queue` starts now, and the token to give :meth:`advance` with what it claimed."""
        now = self._clock()
        point = self._points.get(queue)
        if point is None or now - self._rescanned.get(queue, float("-inf")) >= self.rescan_secs:
            self._rescanned[queue] = now
            point = BEGINNING
        return point, self._token(queue)

    def peek(self, queue: Queue) -> Point:
        """Where the next claim of `queue` would start, were it not its time to rescan (no side effect)."""
        return self._points.get(queue, BEGINNING)

    def advance(self, queue: Queue, token: tuple[int, int], claimed: Iterable[Point]) -> None:
        """After a claim that started with `token`: the next one starts at the last delivery it took.

        Unless the point was moved back meanwhile (what was made claimable then may be behind what it took).
        A claim that took nothing leaves the point where it was.
        """
        last = max(claimed, default=None)
        if last is not None and token == self._token(queue):
            self._points[queue] = last

    def lower(self, queue: Queue, point: Point) -> None:
        """A delivery of `queue` at `point` was made claimable: the next claim starts no later than there."""
        self._moves[queue] = self._moves.get(queue, 0) + 1
        current = self._points.get(queue)
        if current is not None and point < current:
            self._points[queue] = point

    def forget(self) -> None:
        """Deliveries were made claimable anywhere: every queue's next claim starts from the beginning."""
        self._forgets += 1
        self._points.clear()

    def _token(self, queue: Queue) -> tuple[int, int]:
        return self._forgets, self._moves.get(queue, 0)
