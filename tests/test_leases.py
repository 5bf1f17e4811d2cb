"""Leases: renewed while a delivery runs, never sent once lost, taken over from a dead worker.

Two delivery workers (two nodes, owners ``a`` and ``b``) share one store. Each
sends to its own MLLP receiver, so the test sees which node sent what. Node
``b``'s lease recovery runs as the runtime's does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from adapters.mllp.outbound import MllpOutbound, MllpOutboundConfig
from hub.config import DestinationPolicy
from hub.content_types import ContentType
from hub.delivery import DestinationWorker
from hub.errors import StoreError
from hub.message import Message
from hub.pipeline import Pipeline
from hub.store import IdentityRecord, NewDelivery, SearchQuery, Store
from mappings.hl7v2 import read_header
from tests.hubkit import adt, recover_once_expired, running_peer, wait_until

LEASE = 1.0


def message(control_id: str, patient: str) -> Message:
    body = adt(control_id, patient=patient)
    _, header = read_header(body)
    return Message.new(body, content_type=ContentType.HL7V2, metadata={**header.metadata(), "patient_key": patient})


class CutOffStore:
    """The store as one node sees it; `cut` simulates a network cut between that node and the database."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.cut = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise StoreError("postgres: ConnectionResetError")
            return await attr(*args, **kwargs)

        return call


def worker(store: Any, owner: str, port: int, lookup: Any = None, **policy: Any) -> DestinationWorker:
    return DestinationWorker(
        store=store,
        route="r",
        policy=DestinationPolicy(**{"destination": "dpi", "ordering_key": "patient_key", "max_in_flight": 2, **policy}),
        adapter=MllpOutbound("dpi", MllpOutboundConfig(endpoint=f"127.0.0.1:{port}", ack_timeout_secs=30)),
        pipeline=Pipeline([]),
        owner=owner,
        lease_secs=LEASE,
        poll_secs=0.1,
        identity_lookup=lookup,
    )


@contextlib.asynccontextmanager
async def running(*workers: DestinationWorker, recover: Store) -> AsyncIterator[list[int]]:
    """Start the workers and a lease recovery loop (as `Hub._recover_leases`); yields the recovered counts."""
    recovered: list[int] = []

    async def recovery() -> None:
        while True:
            await asyncio.sleep(LEASE / 4)  # a periodic loop, as the hub's own: its period is the subject
            if n := await recover.recover_leases():
                recovered.append(n)
                for w in workers:
                    w.wake.set()

    for w in workers:
        w.start()
    task = asyncio.create_task(recovery())
    try:
        yield recovered
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for w in workers:
            await w.stop(1.0)
            await w.adapter.stop()  # type: ignore[attr-defined]


async def deliveries_of(store: Store, control_id: str) -> list[tuple[str, int]]:
    [rec] = await store.search(SearchQuery(control_id=control_id))
    return [(d.status, d.attempts) for d in (await store.deliveries([rec.message.id]))[rec.message.id]]


async def settled(store: Store, control_id: str) -> bool:
    return all(status != "in_flight" for status, _ in await deliveries_of(store, control_id))


async def test_renew_extends_only_the_owners_live_leases(store: Store) -> None:
    for i in range(2):
        await store.submit(message(f"R{i}", f"P{i}"), [NewDelivery("r", "dpi")], endpoint="in", dedup_key=None)
    claimed = await store.claim("r", "dpi", limit=2, owner="a", lease_secs=0.2)
    ids = [c.delivery.id for c in claimed]
    assert await store.renew(ids, owner="b", lease_secs=60) == set()
    assert await store.renew(ids[:1], owner="a", lease_secs=60) == {ids[0]}
    assert await recover_once_expired(store) == 1  # only the one not renewed
    assert await store.renew(ids, owner="a", lease_secs=60) == {ids[0]}  # the other was taken back


async def test_a_long_send_keeps_its_lease(store: Store) -> None:
    # The receiver answers after 2.5 leases: without renewal node b would take the delivery back and send it too.
    async with running_peer(delay_secs=2.5 * LEASE) as slow, running_peer() as other:
        await store.submit(message("LONG", "P1"), [NewDelivery("r", "dpi", "P1")], endpoint="in", dedup_key=None)
        a = worker(store, "a", slow.port)
        async with running(a, recover=store) as recovered:
            await wait_until(lambda: slow.count == 1)  # node a is sending
            b = worker(store, "b", other.port)
            async with running(b, recover=store):
                await wait_until(lambda: len(slow.bodies) == 1, timeout=10)  # answered, 2.5 leases later
                await wait_until(lambda: settled(store, "LONG"), timeout=5)
                assert await deliveries_of(store, "LONG") == [("delivered", 1)]
                assert other.count == 0 and not recovered


async def test_a_node_cut_off_from_the_store_never_sends_what_it_lost(store: Store) -> None:
    gate = asyncio.Event()

    async def slow_lookup(key: str) -> IdentityRecord:
        await gate.wait()  # node a is held up before its send (a slow step, a paused process)
        return IdentityRecord(key, "HOSP", key, "qualifiee", ins="1800175123456")

    async def lookup(key: str) -> IdentityRecord:
        return IdentityRecord(key, "HOSP", key, "qualifiee", ins="1800175123456")

    async with running_peer() as peer_a, running_peer() as peer_b:
        await store.submit(message("CUT", "P1"), [NewDelivery("r", "dpi", "P1")], endpoint="in", dedup_key=None)
        seen_by_a = CutOffStore(store)
        a = worker(seen_by_a, "a", peer_a.port, require_qualified_ins=True, lookup=slow_lookup)
        b = worker(store, "b", peer_b.port, require_qualified_ins=True, lookup=lookup)
        b.paused = True  # node a claims first; otherwise, under load, node b may win the first claim
        async with running(a, b, recover=store) as recovered:
            await wait_until(lambda: len(a.held_leases) == 1)
            seen_by_a.cut = True  # node a can no longer renew: its lease runs out, node b takes over
            b.paused = False
            await wait_until(lambda: len(peer_b.bodies) == 1, timeout=5 * LEASE)
            assert recovered == [1]
            gate.set()
            await wait_until(lambda: a.in_flight == 0)
            await wait_until(lambda: settled(store, "CUT"), timeout=5)
            assert peer_a.count == 0  # the stale send never happened
            assert await deliveries_of(store, "CUT") == [("delivered", 2)]


async def test_a_lease_taken_back_is_forgotten_at_the_next_renewal(store: Store) -> None:
    gate = asyncio.Event()

    async def slow_lookup(key: str) -> IdentityRecord:
        await gate.wait()
        return IdentityRecord(key, "HOSP", key, "qualifiee", ins="1800175123456")

    async with running_peer() as peer_a:
        await store.submit(message("GONE", "P1"), [NewDelivery("r", "dpi", "P1")], endpoint="in", dedup_key=None)
        a = worker(store, "a", peer_a.port, require_qualified_ins=True, lookup=slow_lookup)
        async with running(a, recover=store):
            await wait_until(lambda: len(a.held_leases) == 1)
            # node a's lease is given back behind its back (its earlier incarnation restarted, an operator)
            [held] = a.held_leases
            a.paused = True  # so that node a does not claim it again itself
            assert await store.release([held], owner="a") == 1
            [c] = await store.claim("r", "dpi", limit=1, owner="b", lease_secs=60)
            await wait_until(lambda: not a.held_leases, timeout=3 * LEASE)  # the renewal said: not yours
            gate.set()
            await wait_until(lambda: a.in_flight == 0)
            assert peer_a.count == 0
            assert c.delivery.id == held
