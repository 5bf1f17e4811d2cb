"""Claiming ahead: a worker holds deliveries for its next free send slots, and never sits on them.

A worker (owner ``a``) sends to a real MLLP receiver that answers slowly, so
that its local queue fills; these tests check that the queue keeps each
patient's order, that what it holds is renewed like any lease, and that it is
given back to the store (attempt uncounted, claimable by any node at once)
when the circuit opens, when the queue is paused and on shutdown.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from hub.store import Delivery, NewDelivery, Store
from tests.conftest import free_port
from tests.hubkit import running_peer, wait_until
from tests.test_leases import LEASE, message, running, worker


async def _submit(store: Store, patients: int, per_patient: int) -> None:
    for n in range(per_patient):
        for p in range(patients):
            await store.submit(
                message(f"M{p:02d}-{n:03d}", f"P{p}"), [NewDelivery("r", "dpi", f"P{p}")], endpoint="in", dedup_key=None
            )


async def _by_id(store: Store) -> dict[int, Delivery]:
    return {d.id: d for d in await store.find_deliveries(limit=1000)}


async def _none_in_flight(store: Store) -> bool:
    return not await store.find_deliveries(status="in_flight")


async def test_claimed_ahead_within_bounds_and_each_patient_keeps_its_order(store: Store) -> None:
    await _submit(store, patients=6, per_patient=5)
    async with running_peer(delay_secs=0.05) as peer:
        a = worker(store, "a", peer.port)  # max_in_flight 2, so up to 2 more claimed ahead
        most_queued = most_held = 0

        async def watch() -> None:
            nonlocal most_queued, most_held
            while True:
                most_queued = max(most_queued, a.queued)
                most_held = max(most_held, len(a.held_leases))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        async with running(a, recover=store) as recovered:
            await wait_until(lambda: len(peer.bodies) == 30, timeout=30)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert most_queued >= 1, "the worker never claimed ahead of its free slots"
    assert most_queued <= a.prefetch == 2
    assert most_held <= 4 * 2  # everything held stays bounded
    sent: dict[str, list[str]] = defaultdict(list)
    for body in peer.bodies:
        control_id = body.split(b"|")[9].decode()
        sent[control_id.split("-")[0]].append(control_id)
    assert len({c for cs in sent.values() for c in cs}) == 30  # no duplicate
    for patient, control_ids in sent.items():
        assert control_ids == sorted(control_ids), f"{patient} out of order"
    assert not recovered


async def test_what_is_queued_keeps_its_lease_while_it_waits(store: Store) -> None:
    # One send at a time, answered after 1.5 leases: the delivery queued behind it waits that long,
    # and the lease recovery would take it back (and count a lost lease) if it were not renewed.
    await _submit(store, patients=2, per_patient=1)
    async with running_peer(delay_secs=1.5 * LEASE) as peer:
        a = worker(store, "a", peer.port, max_in_flight=1)
        async with running(a, recover=store) as recovered:
            await wait_until(lambda: a.queued == 1)
            await wait_until(lambda: len(peer.bodies) == 2, timeout=10)
            await wait_until(lambda: _none_in_flight(store))
        assert not recovered
        assert [(d.status, d.attempts) for d in (await _by_id(store)).values()] == [("delivered", 1)] * 2


async def test_queued_deliveries_go_back_to_the_store_when_the_circuit_opens(store: Store) -> None:
    await _submit(store, patients=6, per_patient=1)
    a = worker(store, "a", free_port())  # nothing listens there: connection refused
    a.probe_first_secs = 60.0  # no probe during the test
    async with running(a, recover=store):
        # The first claim takes 2 to send and 2 ahead; both sends are refused, the circuit opens,
        # and the 2 queued go back to the store rather than wait for the destination.
        await wait_until(lambda: a.down_since is not None and a.given_back == 2, timeout=10)
        assert a.queued == 0
        await wait_until(lambda: not a.held_leases)  # the refused sends' outcomes are recorded
        await wait_until(lambda: _none_in_flight(store), timeout=5)
        rows = await _by_id(store)
        assert [(d.status, d.attempts) for d in rows.values()] == [("pending", 0)] * 6  # no attempt counted
        # and nothing stuck: another node takes them all at once
        taken = await store.claim("r", "dpi", limit=10, owner="b", lease_secs=60)
        assert {c.delivery.id for c in taken} == set(rows)


async def test_a_pause_gives_back_what_was_queued(store: Store) -> None:
    await _submit(store, patients=4, per_patient=1)
    async with running_peer(delay_secs=0.5) as peer:
        a = worker(store, "a", peer.port, max_in_flight=1)
        async with running(a, recover=store):
            await wait_until(lambda: a.queued == 1)
            [queued] = a.queued_ids
            a.paused = True
            a.wake.set()
            await wait_until(lambda: a.queued == 0)
            await wait_until(lambda: _status(store, queued, "pending"))
            await wait_until(lambda: _none_in_flight(store), timeout=5)  # the send under way ended
            count = peer.count
            taken = await store.claim("r", "dpi", limit=10, owner="b", lease_secs=60)
            assert queued in {c.delivery.id for c in taken}
            assert (await _by_id(store))[queued].attempts == 1  # b's claim: a's was given back
            assert peer.count == count == 1  # paused: a sent nothing more


async def test_shutdown_gives_back_what_was_queued(store: Store) -> None:
    await _submit(store, patients=3, per_patient=1)
    async with running_peer(delay_secs=0.5) as peer:
        a = worker(store, "a", peer.port, max_in_flight=1)
        a.start()
        try:
            await wait_until(lambda: a.queued == 1)
            [queued] = a.queued_ids
        finally:
            await a.stop(5.0)  # the send under way finishes within the grace period
            await a.adapter.stop()  # type: ignore[attr-defined]
        rows = await _by_id(store)
        assert [d.status for d in rows.values()].count("delivered") == 1
        assert rows[queued].status == "pending" and rows[queued].attempts == 0
        assert not await store.find_deliveries(status="in_flight")
        assert peer.count == 1


async def _status(store: Store, delivery_id: int, status: str) -> bool:
    return (await _by_id(store))[delivery_id].status == status
