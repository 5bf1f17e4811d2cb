"""The clock a delivery worker schedules with: probes, retry backoff, polling, lease ages.

Production uses :class:`SystemClock` (the event loop's clock and the wall clock, read directly: nothing
added on the hot path). Tests use :class:`ManualClock`, whose time moves only when the test calls
:meth:`ManualClock.advance`, so a ten-minute outage with probe backoff takes milliseconds and the test
can assert when each probe was due instead of waiting for it.

Timeouts that bound a shutdown (a grace period) are not schedules: they stay on the real clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Time as a worker reads it, and waits on it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for delays and ages, never shown)."""
        ...

    def now(self) -> datetime:
        """Timezone-aware UTC wall time (for timestamps the store keeps, e.g. ``next_attempt_at``)."""
        ...

    async def sleep(self, secs: float) -> None:
        """Wait `secs` seconds of this clock (a non-positive delay yields to the loop once)."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` seconds of this clock have passed; True if it was set."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` (the base of the event loop's timers, asyncio's and uvloop's),
    and UTC wall time."""

    #: The C function itself, not a wrapper: reading the clock costs what it did before there was one.
    monotonic = staticmethod(time.monotonic)

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, secs: float) -> None:
        await asyncio.sleep(max(0.0, secs))

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True


class ManualClock:
    """A clock for tests: it stands still until :meth:`advance` moves it.

    Sleepers whose time has come are woken by `advance`, earliest deadline first (ties in the order they
    started sleeping); what they do next runs when the test yields to the event loop (typically while
    awaiting some state). :attr:`next_deadline` tells when the earliest sleeper wants to wake, so a test
    can step from one scheduled wake-up to the next and check how they are spaced.
    """

    def __init__(self, start: datetime | None = None, *, monotonic_start: float = 1000.0) -> None:
        self._wall0 = start if start is not None else datetime.now(UTC)
        if self._wall0.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._mono0 = monotonic_start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._elapsed)

    @property
    def elapsed(self) -> float:
        """Seconds advanced since the clock was made."""
        return self._elapsed

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    @property
    def next_deadline(self) -> float | None:
        """The monotonic time the earliest sleeper wakes at, or None when nobody waits on the clock."""
        self._forget_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def advance(self, secs: float) -> int:
        """Move time forward by `secs` and wake every sleeper whose deadline is now reached; how many woke."""
        if secs < 0:
            raise ValueError("a clock does not go back")
        self._elapsed += secs
        now = self.monotonic()
        woken = 0
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
                woken += 1
        return woken

    def advance_to_next(self) -> float:
        """Advance to the earliest sleeper's deadline (wake it, and any due with it); the seconds advanced."""
        deadline = self.next_deadline
        if deadline is None:
            raise RuntimeError("nobody is waiting on the clock")
        step = max(0.0, deadline - self.monotonic())
        self.advance(step)
        return step

    async def sleep(self, secs: float) -> None:
        if secs <= 0:
            await asyncio.sleep(0)
            return
        future = self._sleep_future(secs)
        try:
            await future
        finally:
            future.cancel()  # a cancelled sleeper leaves the heap on the next look

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if timeout <= 0:
            await asyncio.sleep(0)
            return event.is_set()
        future = self._sleep_future(timeout)
        waiter = asyncio.ensure_future(event.wait())
        either: list[asyncio.Future[Any]] = [future, waiter]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            future.cancel()
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        return event.is_set()

    def _sleep_future(self, secs: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.monotonic() + secs, next(self._order), future))
        return future

    def _forget_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
