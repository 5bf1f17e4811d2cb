"""Delivery workers end to end on real sockets: retry with backoff, dead letter, ordering, shutdown."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.clock import ManualClock
from hub.config import RetryPolicy
from hub.delivery import backoff_secs
from hub.runtime import replay
from hub.store import SearchQuery, Store
from tests.hubkit import (
    FAST_RETRY,
    MllpClient,
    ack_fields,
    adt,
    default_route,
    mllp_port,
    running_hub,
    running_peer,
    wait_until,
    write_config,
)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_secs=1, multiplier=2, max_secs=10, jitter=0.2)
    mid = [backoff_secs(policy, n, rand=lambda: 0.5) for n in range(1, 7)]
    assert mid == [1, 2, 4, 8, 10, 10]
    assert backoff_secs(policy, 3, rand=lambda: 0.0) == pytest.approx(4 * 0.8)
    assert backoff_secs(policy, 3, rand=lambda: 1.0) == pytest.approx(4 * 1.2)
    spread = {round(backoff_secs(policy, 2, rand=random.random), 6) for _ in range(50)}
    assert len(spread) > 10 and all(1.6 <= s <= 2.4 for s in spread)


async def _statuses(store: Store, control_id: str) -> list[tuple[str, int, str]]:
    [rec] = await store.search(SearchQuery(control_id=control_id))
    return [(d.status, d.attempts, d.last_error) for d in (await store.deliveries([rec.message.id]))[rec.message.id]]


async def test_end_to_end_fifo_per_patient_parallel_across_patients(tmp_path: Path) -> None:
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        patients = ["PA", "PB", "PC"]
        clients = [await MllpClient.connect(mllp_port(hub)) for _ in patients]

        async def feed(client: MllpClient, patient: str) -> None:
            for i in range(20):
                assert ack_fields(await client.send(adt(f"{patient}-{i:02d}", patient=patient)))["MSA"][1] == "AA"

        await asyncio.gather(*(feed(c, p) for c, p in zip(clients, patients, strict=True)))
        await wait_until(lambda: len(peer.bodies) == 60)
        per_patient: dict[str, list[str]] = defaultdict(list)
        for body in peer.bodies:
            control = body.split(b"|")[9].decode()
            per_patient[control[:2]].append(control)
        assert all(per_patient[p] == [f"{p}-{i:02d}" for i in range(20)] for p in patients)
        recs = await hub.store.search(SearchQuery(limit=100))  # type: ignore[union-attr]
        await wait_until(lambda: hub.undelivered == 0 or None, timeout=5)
        assert {r.status for r in await hub.store.search(SearchQuery(limit=100))} == {"delivered"}  # type: ignore[union-attr]
        assert len(recs) == 60
        for c in clients:
            await c.close()


async def test_retry_until_the_peer_recovers(tmp_path: Path) -> None:
    async with running_peer(ack="AE") as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("RETRY1"))
        store = hub.store
        assert store is not None
        await wait_until(lambda: peer.count >= 2)
        peer.ack = "AA"
        await wait_until(lambda: len(peer.bodies) == 1)

        async def delivered() -> bool:
            return [status for status, _, _ in await _statuses(store, "RETRY1")] == ["delivered"]

        await wait_until(delivered, timeout=5)
        [(status, attempts, _)] = await _statuses(store, "RETRY1")
        assert status == "delivered" and attempts >= 3
        [rec] = await store.search(SearchQuery(control_id="RETRY1"))
        delivery = (await store.deliveries([rec.message.id]))[rec.message.id][0]
        outcomes = [a.outcome for a in await store.attempts(delivery.id)]
        assert outcomes[-1] == "accept" and set(outcomes[:-1]) == {"retry"}
        await client.close()


async def test_a_retry_is_scheduled_on_the_workers_clock_with_the_policys_backoff(tmp_path: Path) -> None:
    """next_attempt_at comes from the worker's clock, and the worker's next wake-up is when it falls due.

    The clock is a day ahead of the store's, which compares next_attempt_at with its own time when it
    claims: nothing is retried while the test looks, so the stored schedule can be read as written.
    """
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    clock = ManualClock(start)
    retry = {"max_attempts": 5, "initial_secs": 0.25, "multiplier": 2, "max_secs": 60, "jitter": 0}
    route = default_route(dest={"retry": retry})
    async with (
        running_peer(ack="AE") as peer,
        running_hub(write_config(tmp_path, peer_port=peer.port, routes=[route]), clock=clock) as hub,
    ):
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("BACKOFF"))

        async def retried_once() -> bool:
            return [(s, n) for s, n, _ in await _statuses(store, "BACKOFF")] == [("pending", 1)]

        await wait_until(retried_once)
        [rec] = await store.search(SearchQuery(control_id="BACKOFF"))
        [delivery] = (await store.deliveries([rec.message.id]))[rec.message.id]
        assert delivery.next_attempt_at == start + timedelta(seconds=0.25)  # the clock has not moved
        [attempt] = await store.attempts(delivery.id)
        assert attempt.started_at == start and attempt.outcome == "retry"
        worker = hub.workers[("adt", "dpi")]
        # Parked until the retry is due on its clock (sooner than its 1 s poll).
        await wait_until(lambda: clock.next_deadline == clock.monotonic() + 0.25 and not worker.in_flight)
        assert peer.count == 1
        await client.close()


async def test_dead_letter_after_the_last_attempt_and_requeue(tmp_path: Path) -> None:
    async with running_peer(ack="AE") as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("GIVEUP"))
        store = hub.store
        assert store is not None

        async def dead() -> bool:
            return (await _statuses(store, "GIVEUP"))[0][0] == "dead"

        await wait_until(dead)
        [(_, attempts, error)] = await _statuses(store, "GIVEUP")
        assert attempts == FAST_RETRY["max_attempts"] and error.startswith("AE")
        assert (await store.search(SearchQuery(control_id="GIVEUP")))[0].status == "failed"
        peer.ack = "AA"
        [d] = await store.find_deliveries(status="dead")
        assert await store.requeue([d.id]) == 1
        hub._wake_all()
        await wait_until(lambda: len(peer.bodies) == 1)
        await wait_until(lambda: _statuses(store, "GIVEUP"))
        await client.close()


async def test_a_dead_letter_holds_the_patients_later_messages_until_requeued(tmp_path: Path) -> None:
    async with running_peer(ack="AR") as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("REFUSED", patient="PX"))
        store = hub.store
        assert store is not None

        async def dead() -> bool:
            return (await _statuses(store, "REFUSED"))[0][0] == "dead"

        await wait_until(dead)
        assert (await _statuses(store, "REFUSED"))[0][1] == 1
        peer.ack = "AA"
        for n in range(3):
            await client.send(adt(f"NEXT{n}", patient="PX"))
        await client.send(adt("OTHER", patient="PY"))
        # Another patient goes on; this patient's later messages wait behind the dead letter.
        await wait_until(lambda: len(peer.bodies) == 1)
        assert b"OTHER" in peer.bodies[0]
        assert [(await _statuses(store, f"NEXT{n}"))[0][0] for n in range(3)] == ["pending"] * 3
        [dead_letter] = await store.find_deliveries(status="dead")
        assert await store.requeue([dead_letter.id]) == 1
        hub._wake_all()
        await wait_until(lambda: len(peer.bodies) == 5)
        order = [next(c for c in ("REFUSED", "NEXT0", "NEXT1", "NEXT2") if c.encode() in b) for b in peer.bodies[1:]]
        assert order == ["REFUSED", "NEXT0", "NEXT1", "NEXT2"]
        await client.close()


async def test_a_discarded_dead_letter_lets_the_patients_later_messages_go(tmp_path: Path) -> None:
    async with running_peer(ack="AR") as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("REFUSED", patient="PX"))
        store = hub.store
        assert store is not None
        await wait_until(lambda: _dead_count(store, 1))
        peer.ack = "AA"
        await client.send(adt("NEXT", patient="PX"))
        [dead_letter] = await store.find_deliveries(status="dead")
        assert await store.discard([dead_letter.id]) == 1
        hub._wake_all()
        await wait_until(lambda: len(peer.bodies) == 1)
        assert b"NEXT" in peer.bodies[0]
        assert (await _statuses(store, "REFUSED"))[0][0] == "discarded"
        await client.close()


async def test_without_hold_behind_dead_later_messages_overtake_the_dead_letter(tmp_path: Path) -> None:
    route = default_route(dest={"hold_behind_dead": False})
    async with (
        running_peer(ack="AR") as peer,
        running_hub(write_config(tmp_path, peer_port=peer.port, routes=[route])) as hub,
    ):
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("REFUSED", patient="PX"))
        store = hub.store
        assert store is not None
        await wait_until(lambda: _dead_count(store, 1))
        peer.ack = "AA"
        await client.send(adt("NEXT", patient="PX"))
        await wait_until(lambda: len(peer.bodies) == 1)
        await client.close()


async def _dead_count(store: Store, n: int) -> bool:
    return len(await store.find_deliveries(status="dead")) == n


async def test_a_step_refusal_dead_letters_with_the_reason(tmp_path: Path) -> None:
    route = default_route(route="results", when={"message_type": ["ORU^R01"]}, steps=["hl7v2_validate"])
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port, routes=[route])) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        # ORU^R01 whose body is an ADT structure: MSH reads fine (AA), the structure is wrong.
        assert ack_fields(await client.send(adt("BADORU", msh9="ORU^R01^ORU_R01")))["MSA"][1] == "AA"
        store = hub.store
        assert store is not None

        async def dead() -> bool:
            rows = await _statuses(store, "BADORU")
            return bool(rows) and rows[0][0] == "dead"

        await wait_until(dead, timeout=20)
        [(_, attempts, error)] = await _statuses(store, "BADORU")
        assert attempts == 1 and "HL7 structure" in error
        assert peer.bodies == []
        await client.close()


async def test_replay_of_a_rejected_message_after_a_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=0)
    async with running_peer() as peer:
        config = write_config(tmp_path, peer_port=peer.port)
        async with running_hub(config) as hub:
            client = await MllpClient.connect(mllp_port(hub))
            assert ack_fields(await client.send(adt("FIXME", msh9="")))["MSA"][1] == "AR"
            store = hub.store
            assert store is not None
            [bad] = await store.search(SearchQuery(status="rejected"))
            # Unchanged, it is refused again (and the new refusal is kept).
            with pytest.raises(Exception, match="MSH-9"):
                await replay(store, hub.settings, bad.message.id)
            result = await hub.replay(bad.message.id, body=adt("FIXME"))
            assert result.deliveries == 1 and not result.duplicate
            await wait_until(lambda: len(peer.bodies) == 1)
            fixed = await store.get_message(result.message_id)
            assert fixed is not None
            assert fixed.message.parent_id == bad.message.id
            assert fixed.message.correlation_id == bad.message.correlation_id
            assert fixed.message.metadata["replay_of"] == bad.message.id
            assert fixed.message.metadata["message_type"] == "ADT^A01"
            await client.close()


async def test_graceful_shutdown_releases_what_is_still_in_flight(tmp_path: Path) -> None:
    async with running_peer(delay_secs=5) as peer:
        config = write_config(tmp_path, peer_port=peer.port, shutdown_grace_secs=0.2, endpoint={"ack_timeout_secs": 30})
        async with running_hub(config) as hub:
            client = await MllpClient.connect(mllp_port(hub))
            await client.send(adt("INFLIGHT"))
            await wait_until(lambda: peer.count == 1)
            store = hub.store
            assert store is not None
            await client.close()
        # The hub is stopped: the delivery went back to pending with its attempt not counted.
        from hub.store.sqlite import SqliteStore

        reopened = SqliteStore(tmp_path / "hub.db")
        await reopened.open()
        assert await _statuses(reopened, "INFLIGHT") == [("pending", 0, "")]
        await reopened.close()


async def test_a_pause_holds_on_every_node_and_across_restarts(tmp_path: Path) -> None:
    """Two hubs on one database (PostgreSQL's use case, shown here on one SQLite file at a time)."""
    async with running_peer() as peer:
        config = write_config(tmp_path, peer_port=peer.port)
        async with running_hub(config) as hub:
            await hub.pause("adt", "dpi", paused=True, by="operator-1")
            client = await MllpClient.connect(mllp_port(hub))
            assert ack_fields(await client.send(adt("WHILE-PAUSED")))["MSA"][1] == "AA"
            # Nothing marks "would have sent": absence is shown over a window far longer than a send takes.
            await asyncio.sleep(0.5)
            assert peer.bodies == []  # queued, not sent
            await client.close()
        async with running_hub(config) as hub:  # the restarted node keeps the operator's decision
            assert hub.workers[("adt", "dpi")].paused
            await asyncio.sleep(0.3)  # absence over a window, as above
            assert peer.bodies == []
            store = hub.store
            assert store is not None
            # Another node resumes it: this one follows within seconds.
            await store.set_paused("adt", "dpi", paused=False, by="operator-2")
            await wait_until(lambda: len(peer.bodies) == 1, timeout=10)


async def test_retention_purges_finished_messages_and_keeps_the_rest(tmp_path: Path) -> None:
    async with running_peer() as peer:
        config = write_config(tmp_path, peer_port=peer.port, retention={"days": 0.3 / 86400, "every_secs": 0.2})
        async with running_hub(config) as hub:
            store = hub.store
            assert store is not None
            client = await MllpClient.connect(mllp_port(hub))
            await client.send(adt("KEEP-NOT"))
            await client.send(adt("BAD", msh9=""))
            await wait_until(lambda: len(peer.bodies) == 1)

            async def purged() -> bool:
                return await store.search(SearchQuery()) == []

            await wait_until(purged, timeout=10)
            peer.ack = "AE"  # this one stays pending, so it is never purged
            await client.send(adt("LIVE"))
            await wait_until(lambda: peer.count >= 2)  # LIVE was tried and answered AE: it stays pending
            await asyncio.sleep(0.4)  # time is the subject: LIVE must grow older than the 0.3 s retention
            await hub.purge()  # a retention pass (the loop runs the same) after it has
            assert [r.message.metadata["control_id"] for r in await store.search(SearchQuery())] == ["LIVE"]
            await client.close()
