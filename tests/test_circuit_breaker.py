"""A destination that cannot be reached is an outage, not a run of failed attempts.

The hub's delivery workers run on a :class:`~hub.clock.ManualClock` here: a ten-minute outage is driven
by moving the clock from one scheduled wake-up of the worker to the next, so the test checks when each
probe was due (1 s, doubling, capped at the policy's ``probe_max_secs``) instead of waiting for it.
With the shipped-like policy of three attempts, such an outage dead-letters nothing: attempts stay at
zero, the queue says "down since", and when the receiver comes back everything goes out in order.
Attempts count again as soon as the peer answers, even with an error.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from hub.clock import ManualClock
from hub.delivery import DestinationWorker
from hub.store import Store
from tests.conftest import free_port
from tests.hubkit import (
    MllpClient,
    adt,
    default_route,
    mllp_port,
    running_hub,
    running_peer,
    wait_until,
    write_config,
)

#: The worker's claim loop and its lease renewer, both parked on the clock.
_WORKER_SLEEPERS = 2


def _parked(worker: DestinationWorker, clock: ManualClock) -> bool:
    """The worker has nothing running and waits on the clock: moving the clock is what happens next."""
    return (
        worker.in_flight == 0
        and worker.queued == 0
        and not worker.wake.is_set()
        and clock.sleepers >= _WORKER_SLEEPERS
    )


async def _drive(
    clock: ManualClock,
    worker: DestinationWorker,
    done: Callable[[], bool | Awaitable[bool]],
    *,
    on_step: Callable[[], None] = lambda: None,
    timeout: float = 30.0,
) -> None:
    """Until `done`: whenever the worker is parked, move the clock to its next wake-up (and call `on_step`)."""
    async with asyncio.timeout(timeout):
        while True:
            result = done()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if _parked(worker, clock):
                clock.advance_to_next()
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.001)  # a claim, a refused connection, a commit: real I/O under way
            await wait_until(lambda: _parked(worker, clock), timeout=timeout, interval=0.001)
            on_step()


async def _counts(store: Store) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in ("pending", "in_flight", "dead", "delivered"):
        out[status] = len(await store.find_deliveries(status=status, limit=1000))
    return out


async def test_a_ten_minute_outage_dead_letters_nothing_probes_back_off_and_the_queue_resumes_in_order(
    tmp_path: Path,
) -> None:
    port = free_port()
    route = default_route(dest={"max_in_flight": 4})  # probe_max_secs as shipped (60 s); FAST_RETRY: 3 attempts
    config = write_config(tmp_path, peer_port=port, routes=[route])
    clock = ManualClock()
    async with running_hub(config, clock=clock) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        for n in range(6):
            await client.send(adt(f"OUT{n}", patient=f"P{n % 2}"))  # each stored before its ACK
        worker = hub.workers[("adt", "dpi")]
        await wait_until(lambda: worker.down_since is not None and _parked(worker, clock))
        assert "unreachable" in worker.down_reason

        # Ten minutes of outage, one scheduled wake-up at a time; note when each probe went out.
        probe_times: list[float] = []
        seen = worker.probes

        def note_probe() -> None:
            nonlocal seen
            if worker.probes != seen:
                assert worker.probes == seen + 1, "one probe at a time while the circuit is open"
                probe_times.append(clock.elapsed)
                seen = worker.probes

        await _drive(clock, worker, lambda: clock.elapsed >= 600, on_step=note_probe)

        gaps = [b - a for a, b in itertools.pairwise(probe_times)]
        assert len(probe_times) >= 10, probe_times
        # Each wait doubles the one before, up to the 60 s cap, then stays there.
        assert all(b == min(60.0, 2 * a) for a, b in itertools.pairwise(gaps)), gaps
        assert gaps[-3:] == [60.0, 60.0, 60.0]
        assert probe_times[-1] > 600 - 60

        # With max_attempts 3, an attempt-counting retry would have dead-lettered them all.
        assert worker.down_since is not None
        counts = await _counts(store)
        assert counts == {"pending": 6, "in_flight": 0, "dead": 0, "delivered": 0}
        assert all(d.attempts == 0 for d in await store.find_deliveries(status="pending", limit=100))
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{hub.http_port}/metrics") as r:
            text = await r.text()
        assert 'hub_destination_down_seconds{destination="dpi",route="adt"}' in text

        async with running_peer(listen=f"127.0.0.1:{port}") as peer:
            up_at = clock.elapsed
            await _drive(clock, worker, lambda: len(peer.bodies) == 6)
            assert clock.elapsed - up_at <= 60.0, "the next probe, at most probe_max_secs later, finds it"
            order = [b.split(b"|")[9].decode() for b in peer.bodies]
            assert [c for c in order if c in ("OUT0", "OUT2", "OUT4")] == ["OUT0", "OUT2", "OUT4"]
            assert [c for c in order if c in ("OUT1", "OUT3", "OUT5")] == ["OUT1", "OUT3", "OUT5"]
            await wait_until(lambda: worker.down_since is None)
            await wait_until(lambda: _delivered(store, 6))
            assert all(d.attempts == 1 for d in await store.find_deliveries(status="delivered", limit=100))
        await client.close()


async def test_an_answer_counts_as_an_attempt_and_closes_the_circuit(tmp_path: Path) -> None:
    port = free_port()
    # An hour behind: the retries' next_attempt_at (from this clock) are due at once for the store.
    clock = ManualClock(datetime.now(UTC) - timedelta(hours=1))
    async with running_hub(write_config(tmp_path, peer_port=port), clock=clock) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("ANSWERED"))
        worker = hub.workers[("adt", "dpi")]
        await _drive(clock, worker, lambda: worker.probes >= 3)
        [pending] = await store.find_deliveries(status="pending")
        assert pending.attempts == 0
        async with running_peer(listen=f"127.0.0.1:{port}", ack="AE") as peer:
            # AE is an answer: attempts count (FAST_RETRY: three), then the dead letter.
            await _drive(clock, worker, lambda: _dead(store))
            assert worker.down_since is None
            [dead] = await store.find_deliveries(status="dead")
            assert dead.attempts == 3 and peer.count == 3
        await client.close()


async def _dead(store: Store) -> bool:
    return len(await store.find_deliveries(status="dead")) == 1


async def _delivered(store: Store, n: int) -> bool:
    return len(await store.find_deliveries(status="delivered", limit=100)) == n
