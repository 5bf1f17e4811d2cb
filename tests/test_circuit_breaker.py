"""A destination that cannot be reached is an outage, not a run of failed attempts.

With the shipped-like policy of three attempts, a receiver that is down for
dozens of probe periods (short timings stand in for a long outage) dead-letters
nothing: attempts stay at zero, the queue says "down since", and when the
receiver comes back everything goes out in order. Attempts count again as soon
as the peer answers, even with an error.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

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


async def _counts(store: Store) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in ("pending", "in_flight", "dead", "delivered"):
        out[status] = len(await store.find_deliveries(status=status, limit=1000))
    return out


async def test_a_long_outage_dead_letters_nothing_and_the_queue_resumes_in_order(tmp_path: Path) -> None:
    port = free_port()
    route = default_route(dest={"probe_max_secs": 0.1, "max_in_flight": 4})
    config = write_config(tmp_path, peer_port=port, routes=[route])
    async with running_hub(config) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        for n in range(6):
            await client.send(adt(f"OUT{n}", patient=f"P{n % 2}"))
        worker = hub.workers[("adt", "dpi")]
        # 40 failed probes: with max_attempts 3, an attempt-counting retry would have dead-lettered them all.
        await wait_until(lambda: worker.probes >= 40, timeout=30)
        assert worker.down_since is not None and "unreachable" in worker.down_reason
        counts = await _counts(store)
        assert counts["dead"] == 0 and counts["delivered"] == 0
        assert all(d.attempts == 0 for d in await store.find_deliveries(status="pending", limit=100))
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{hub.http_port}/metrics") as r:
            text = await r.text()
        assert 'hub_destination_down_seconds{destination="dpi",route="adt"}' in text

        async with running_peer(listen=f"127.0.0.1:{port}") as peer:
            await wait_until(lambda: len(peer.bodies) == 6, timeout=20)
            order = [b.split(b"|")[9].decode() for b in peer.bodies]
            assert [c for c in order if c in ("OUT0", "OUT2", "OUT4")] == ["OUT0", "OUT2", "OUT4"]
            assert [c for c in order if c in ("OUT1", "OUT3", "OUT5")] == ["OUT1", "OUT3", "OUT5"]
            await wait_until(lambda: worker.down_since is None)
        await client.close()


async def test_an_answer_counts_as_an_attempt_and_closes_the_circuit(tmp_path: Path) -> None:
    port = free_port()
    route = default_route(dest={"probe_max_secs": 0.1})
    async with running_hub(write_config(tmp_path, peer_port=port, routes=[route])) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("ANSWERED"))
        worker = hub.workers[("adt", "dpi")]
        await wait_until(lambda: worker.probes >= 3)
        async with running_peer(listen=f"127.0.0.1:{port}", ack="AE"):
            # AE is an answer: attempts count (FAST_RETRY: three), then the dead letter.
            await wait_until(lambda: _dead(store), timeout=20)
            assert worker.down_since is None
            [dead] = await store.find_deliveries(status="dead")
            assert dead.attempts == 3
        await client.close()


async def _dead(store: Store) -> bool:
    return len(await store.find_deliveries(status="dead")) == 1
