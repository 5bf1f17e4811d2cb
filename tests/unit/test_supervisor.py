"""A supervised loop that crashes is restarted with backoff, and /healthz can see it meanwhile."""

from __future__ import annotations

import asyncio

from hub.supervisor import Supervisor
from tests.hubkit import wait_until


async def test_a_crashing_task_is_restarted_and_reported_while_it_waits() -> None:
    sup = Supervisor(initial_backoff=0.2, max_backoff=0.4)
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError("boom")
        await release.wait()

    sup.start("flaky", flaky)
    await wait_until(lambda: sup.unhealthy() == {"flaky": "RuntimeError"})
    await wait_until(lambda: runs == 3)
    assert sup.unhealthy() == {} and sup.states["flaky"].crashes == 2
    release.set()
    await sup.stop()


async def test_cancellation_stops_a_supervised_task_for_good() -> None:
    sup = Supervisor()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = sup.start("forever", forever)
    await started.wait()
    await sup.stop()
    assert task.cancelled() and sup.states["forever"].crashes == 0
