"""The clocks a delivery worker schedules with: the manual one moves only when told, wakes in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from hub.clock import Clock, ManualClock, SystemClock


async def test_a_manual_clock_stands_still_until_advanced_and_wakes_sleepers_in_deadline_order() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = ManualClock(start)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, secs: float) -> None:
        await clock.sleep(secs)
        woke.append((name, clock.elapsed))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 5.0), ("early", 1.0), ("tie", 5.0))]
    await asyncio.sleep(0)
    assert clock.sleepers == 3 and clock.next_deadline == clock.monotonic() + 1.0
    await asyncio.sleep(0.01)  # real time passes; the clock does not
    assert woke == [] and clock.now() == start

    assert clock.advance(0.5) == 0
    assert clock.advance_to_next() == pytest.approx(0.5)
    await asyncio.sleep(0)
    assert woke == [("early", 1.0)]
    assert clock.advance(10.0) == 2
    await asyncio.gather(*tasks)
    assert [n for n, _ in woke] == ["early", "late", "tie"]
    assert clock.now() == start + timedelta(seconds=11) and clock.next_deadline is None


async def test_wait_returns_on_the_event_or_on_the_clock_and_leaves_no_sleeper_behind() -> None:
    clock = ManualClock()
    event = asyncio.Event()
    waiting = asyncio.create_task(clock.wait(event, 30.0))
    await asyncio.sleep(0)
    assert clock.sleepers == 1
    event.set()
    assert await waiting is True
    assert clock.sleepers == 0

    event.clear()
    waiting = asyncio.create_task(clock.wait(event, 30.0))
    await asyncio.sleep(0)
    clock.advance(29.9)
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(0.1)
    assert await waiting is False


async def test_a_cancelled_sleeper_is_forgotten_and_the_clock_never_goes_back() -> None:
    clock = ManualClock()
    task = asyncio.create_task(clock.sleep(3.0))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert clock.sleepers == 0 and clock.next_deadline is None
    with pytest.raises(RuntimeError):
        clock.advance_to_next()
    with pytest.raises(ValueError):
        clock.advance(-1.0)
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))


async def test_the_system_clock_is_the_monotonic_one_and_utc() -> None:
    clock: Clock = SystemClock()
    assert clock.monotonic() == pytest.approx(asyncio.get_running_loop().time(), abs=0.05)
    assert clock.now().tzinfo is UTC
    event = asyncio.Event()
    assert await clock.wait(event, 0.01) is False
    event.set()
    assert await clock.wait(event, 10.0) is True
