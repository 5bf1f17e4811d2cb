"""The database goes away under load and comes back: the hub heals by itself.

A PostgreSQL cluster of the test's own (never the shared one) is restarted with
``-m fast`` and ``-m immediate`` and stopped for a while, while a sender keeps
sending ADTs for a few patients. While it is down the hub answers AE and
/healthz says 503; once it is back the hub answers AA again within 30 s without
a restart, and every acknowledged message reaches the receiver, in order per patient.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.hubkit import MllpClient, ack_fields, adt, default_route, mllp_port, running_hub, running_peer, wait_until
from tests.hubkit import write_config as hub_config
from tests.pgcluster import PgCluster

PATIENTS = ("PA", "PB", "PC")


class Sender:
    """Sends numbered ADTs round-robin over patients; keeps what was acknowledged AA, per patient."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.n = 0
        self.acked: dict[str, list[str]] = defaultdict(list)
        self.codes: list[str] = []
        self.stop = False

    async def run(self) -> None:
        client = await MllpClient.connect(self.port)
        try:
            while not self.stop:
                patient = PATIENTS[self.n % len(PATIENTS)]
                control = f"M{self.n:06d}"
                self.n += 1
                code = ack_fields(await client.send(adt(control, patient=patient)))["MSA"][1]
                self.codes.append(code)
                if code == "AA":
                    self.acked[patient].append(control)
                else:
                    await asyncio.sleep(0.05)  # a sender backs off on AE, as a real one does
        finally:
            await client.close()

    async def next_code(self, wanted: str, timeout: float, count: int = 1) -> None:
        """Wait until `count` more answers `wanted` came back."""
        start = len(self.codes)
        await wait_until(lambda: self.codes[start:].count(wanted) >= count, timeout=timeout)


async def _health(port: int) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
        return r.status


@pytest.fixture
async def cluster() -> object:
    pg = PgCluster(free_port())
    await asyncio.to_thread(pg.init)
    await pg.start()
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.destroy)


async def test_postgres_restart_and_stop_under_load_heal_without_a_hub_restart(
    tmp_path: Path, cluster: PgCluster
) -> None:
    async with running_peer() as peer:
        config = hub_config(
            tmp_path,
            peer_port=peer.port,
            store={"kind": "postgres", "dsn": cluster.dsn, "pool_size": 4},
            routes=[default_route(dest={"max_in_flight": 2})],
        )
        async with running_hub(config) as hub:
            sender = Sender(mllp_port(hub))
            sending = asyncio.create_task(sender.run())
            await sender.next_code("AA", timeout=10, count=100)

            for mode in ("fast", "immediate"):
                await cluster.restart(mode)
                await sender.next_code("AA", timeout=30, count=100)

            await cluster.stop("fast")
            await sender.next_code("AE", timeout=10)
            assert await _health(hub.http_port) == 503
            await cluster.start()
            await sender.next_code("AA", timeout=30, count=100)
            await wait_until(lambda: _health_ok(hub.http_port), timeout=30)

            sender.stop = True
            await sending
            acked = sum(len(v) for v in sender.acked.values())
            assert acked > 0 and "AE" in sender.codes

            def received() -> dict[str, list[str]]:
                per: dict[str, list[str]] = defaultdict(list)
                for body in peer.bodies:
                    control = re.search(rb"\|(M\d{6})\|", body)
                    patient = re.search(rb"PID\|1\|\|(P[ABC])\^", body)
                    assert control and patient
                    per[patient.group(1).decode()].append(control.group(1).decode())
                return per

            # Everything acknowledged arrives; per patient, in the order it was acknowledged.
            # (A message may arrive twice after a restart cut the ACK of a delivery; order still holds.)
            await wait_until(lambda: all(set(sender.acked[p]) <= set(received()[p]) for p in PATIENTS), timeout=60)
            for p in PATIENTS:
                got = list(dict.fromkeys(c for c in received()[p] if c in set(sender.acked[p])))
                assert got == sender.acked[p]


async def _health_ok(port: int) -> bool:
    return await _health(port) == 200


async def test_sigterm_ends_the_process_in_bounded_time_with_the_database_gone(
    tmp_path: Path, cluster: PgCluster
) -> None:
    from tests.integration.test_crash_safety import HubProcess

    port = free_port()
    async with running_peer(delay_secs=600) as peer:  # a receiver that never answers: a send stays in flight
        config = hub_config(
            tmp_path,
            peer_port=peer.port,
            store={"kind": "postgres", "dsn": cluster.dsn, "pool_size": 4},
            listener={"listen": f"127.0.0.1:{port}"},
            shutdown_grace_secs=2,
        )
        hub = HubProcess(config, port)
        await hub.start()
        try:
            client = await MllpClient.connect(port)
            assert ack_fields(await client.send(adt("INFLIGHT")))["MSA"][1] == "AA"
            await client.close()
            await cluster.stop("immediate")
            loop = asyncio.get_running_loop()
            started = loop.time()
            code = await hub.terminate()
            # shutdown_grace_secs + 5 at most, whatever the database and the receiver do.
            assert loop.time() - started < 2 + 5 + 1, hub.tail()
            assert code in (0, 1), hub.tail()
        finally:
            await hub.kill()
