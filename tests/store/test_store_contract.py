"""One contract, two stores: every test runs against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from datetime import timedelta

import pytest

from hub.content_types import ContentType
from hub.errors import StoreError
from hub.message import Message, utcnow
from hub.store import AuditEvent, IdentityRecord, NewDelivery, SearchQuery, Store
from tests.hubkit import recover_once_expired


def msg(control_id: str = "C1", patient: str = "P1@HOSP", **extra: str) -> Message:
    meta = {
        "control_id": control_id,
        "sending_app": "LAB",
        "sending_facility": "HOSP",
        "message_type": "ORU^R01",
        "patient_key": patient,
        **extra,
    }
    return Message.new(b"MSH|^~\\&|LAB|HOSP\r", content_type=ContentType.HL7V2, metadata=meta)


def one(dest: str = "dpi", key: str | None = None, attempts: int = 3) -> list[NewDelivery]:
    return [NewDelivery(route="r", destination=dest, ordering_key=key, max_attempts=attempts)]


async def test_schema_is_migrated(store: Store) -> None:
    # PostgreSQL's eleventh migration only sets storage parameters (autovacuum), which SQLite has no use for;
    # its thirteenth narrows two indexes to what its reads of a message's status need (SQLite writes it)
    assert await store.schema_version() == (13 if type(store).__name__ == "PostgresStore" else 11)


async def test_submit_then_read_back(store: Store) -> None:
    m = msg()
    result = await store.submit(m, one(), endpoint="mllp_in", dedup_key="LAB|HOSP|C1")
    assert (result.message_id, result.duplicate, result.deliveries) == (m.id, False, 1)
    rec = await store.get_message(m.id)
    assert rec is not None
    assert rec.message.body == m.body
    assert dict(rec.message.metadata) == dict(m.metadata)
    assert rec.status == "pending"
    assert rec.endpoint == "mllp_in"
    assert abs((rec.message.received_at - m.received_at).total_seconds()) < 0.001
    deliveries = (await store.deliveries([m.id]))[m.id]
    assert [(d.destination, d.status, d.attempts) for d in deliveries] == [("dpi", "pending", 0)]


async def test_duplicate_dedup_key_is_not_routed_twice(store: Store) -> None:
    first = msg()
    await store.submit(first, one(), endpoint="in", dedup_key="K")
    again = await store.submit(msg(), one(), endpoint="in", dedup_key="K")
    assert again.duplicate and again.message_id == first.id and again.deliveries == 0
    assert len(await store.find_deliveries()) == 1


async def test_concurrent_submissions_are_group_committed_and_all_kept(store: Store) -> None:
    messages = [msg(control_id=f"C{i}") for i in range(200)]
    results = await asyncio.gather(
        *(store.submit(m, one(), endpoint="in", dedup_key=f"K{i}") for i, m in enumerate(messages))
    )
    assert [r.message_id for r in results] == [m.id for m in messages]
    assert await store.undelivered_count() == 200
    assert await store.undelivered_count(cap=50) == 50
    # Duplicates inside one batch: only the first is kept.
    dupes = await asyncio.gather(*(store.submit(msg(), one(), endpoint="in", dedup_key="SAME") for _ in range(5)))
    assert sum(not r.duplicate for r in dupes) == 1
    assert len({r.message_id for r in dupes}) == 1


async def test_rejected_and_unrouted_messages_are_stored(store: Store) -> None:
    bad = msg(control_id="BAD")
    await store.store_rejected(bad, endpoint="in", reason="MSH-9 message type is empty")
    lonely = msg(control_id="LONE")
    await store.submit(lonely, [], endpoint="in", dedup_key=None)
    rec = await store.get_message(bad.id)
    assert rec is not None and rec.status == "rejected" and rec.reason == "MSH-9 message type is empty"
    assert (await store.get_message(lonely.id)).status == "unrouted"  # type: ignore[union-attr]


async def test_claim_lease_and_outcomes(store: Store) -> None:
    m = msg()
    await store.submit(m, one(attempts=2), endpoint="in", dedup_key=None)
    claimed = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
    assert len(claimed) == 1 and claimed[0].message.body == m.body
    d = claimed[0].delivery
    assert d.status == "in_flight" and d.attempts == 1
    # Nothing else is due while it is in flight.
    assert await store.claim("r", "dpi", limit=10, owner="n2", lease_secs=60) == []
    # Another owner cannot finish it.
    assert not await store.finish(
        d.id,
        owner="n2",
        status="delivered",
        next_attempt_at=None,
        error="",
        outcome="accept",
        started_at=utcnow(),
    )
    retry_at = utcnow() + timedelta(seconds=30)
    assert await store.finish(
        d.id,
        owner="n1",
        status="pending",
        next_attempt_at=retry_at,
        error="AE: busy",
        outcome="retry",
        started_at=utcnow(),
        output_metadata={"ins_stamped": "true"},
    )
    assert await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60) == []  # not due yet
    due = await store.next_due("r", "dpi")
    assert due is not None and abs((due - retry_at).total_seconds()) < 0.01
    [dl] = (await store.deliveries([m.id]))[m.id]
    assert (dl.status, dl.attempts, dl.last_error) == ("pending", 1, "AE: busy")
    assert dl.output_metadata == {"ins_stamped": "true"}
    attempts = await store.attempts(d.id)
    assert [(a.number, a.outcome, a.error) for a in attempts] == [(1, "retry", "AE: busy")]


async def test_dead_letter_and_requeue(store: Store) -> None:
    m = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    await store.finish(
        c.delivery.id,
        owner="n1",
        status="dead",
        next_attempt_at=None,
        error="AR: bad",
        outcome="reject",
        started_at=utcnow(),
    )
    assert (await store.get_message(m.id)).status == "failed"  # type: ignore[union-attr]
    dead = await store.find_deliveries(status="dead")
    assert [d.id for d in dead] == [c.delivery.id]
    assert await store.requeue([c.delivery.id]) == 1
    [again] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    assert again.delivery.attempts == 1
    await store.finish(
        again.delivery.id,
        owner="n1",
        status="delivered",
        next_attempt_at=None,
        error="",
        outcome="accept",
        started_at=utcnow(),
    )
    assert (await store.get_message(m.id)).status == "delivered"  # type: ignore[union-attr]
    assert await store.undelivered_count() == 0


async def test_fifo_per_ordering_key_and_parallel_across_keys(store: Store) -> None:
    a1, a2, b1 = msg("A1", patient="A"), msg("A2", patient="A"), msg("B1", patient="B")
    for m in (a1, a2, b1):
        await store.submit(m, one(key=m.metadata["patient_key"]), endpoint="in", dedup_key=None)
    first = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
    assert sorted(c.message.id for c in first) == sorted([a1.id, b1.id])  # A2 waits behind A1
    by_id = {c.message.id: c.delivery.id for c in first}
    # A1 scheduled for retry still holds A2 back.
    await store.finish(
        by_id[a1.id],
        owner="n1",
        status="pending",
        next_attempt_at=utcnow(),
        error="x",
        outcome="retry",
        started_at=utcnow(),
    )
    second = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
    assert [c.message.id for c in second] == [a1.id]
    # A1 dead does not block A2 forever.
    await store.finish(
        second[0].delivery.id,
        owner="n1",
        status="dead",
        next_attempt_at=None,
        error="x",
        outcome="reject",
        started_at=utcnow(),
    )
    third = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
    assert [c.message.id for c in third] == [a2.id]


async def test_deliveries_queued_behind_their_key_are_not_due_and_come_out_in_order(store: Store) -> None:
    head = msg("A0", patient="A")
    await store.submit(head, one(key="A"), endpoint="in", dedup_key=None)
    behind = [msg(f"A{i}", patient="A") for i in range(1, 31)]
    # submitted together: one group commit holds several deliveries of the same key
    await asyncio.gather(*(store.submit(m, one(key="A"), endpoint="in", dedup_key=None) for m in behind))
    other = msg("B0", patient="B")
    await store.submit(other, one(key="B"), endpoint="in", dedup_key=None)
    first = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
    assert sorted(c.message.id for c in first) == sorted([head.id, other.id])
    by_id = {c.message.id: c.delivery.id for c in first}
    await store.finish(by_id[other.id], owner="n1", status="delivered", next_attempt_at=None, error="",
                       outcome="accept", started_at=utcnow())  # fmt: skip
    retry_at = utcnow() + timedelta(seconds=0.5)
    await store.finish(by_id[head.id], owner="n1", status="pending", next_attempt_at=retry_at, error="AE",
                       outcome="retry", started_at=utcnow())  # fmt: skip
    # the thirty behind A0 are not due while A0 waits for its retry: the next due time is A0's
    assert await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60) == []
    due = await store.next_due("r", "dpi")
    assert due is not None and abs((due - retry_at).total_seconds()) < 0.01
    order: list[str] = []
    while not order:  # until A0's retry is due
        got = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
        order += [c.message.id for c in got]
        if not got:
            await asyncio.sleep(0.05)  # polling the store's own clock: A0's retry time is the subject
    # then each of the others, one at a time, in the order received, whether the one before was
    # delivered or dead-lettered
    delivery = by_id[head.id]
    for n in range(len(behind) + 1):
        await store.finish(delivery, owner="n1", status="dead" if n % 3 == 1 else "delivered",
                           next_attempt_at=None, error="", outcome="accept", started_at=utcnow())  # fmt: skip
        got = await store.claim("r", "dpi", limit=10, owner="n1", lease_secs=60)
        assert len(got) == (1 if n < len(behind) else 0)
        order += [c.message.id for c in got]
        delivery = got[0].delivery.id if got else 0
    assert order == [head.id] + [m.id for m in behind]
    assert await store.undelivered_count() == 0


async def test_unordered_deliveries_claim_in_parallel_and_respect_limit(store: Store) -> None:
    for i in range(5):
        await store.submit(msg(f"C{i}"), one(), endpoint="in", dedup_key=None)
    got = await store.claim("r", "dpi", limit=3, owner="n1", lease_secs=60)
    assert len(got) == 3
    rest = await store.claim("r", "dpi", limit=10, owner="n2", lease_secs=60)
    assert len(rest) == 2
    assert not {c.delivery.id for c in got} & {c.delivery.id for c in rest}


async def test_queues_are_separate_per_route_and_destination(store: Store) -> None:
    m = msg()
    await store.submit(
        m,
        [NewDelivery("r", "a"), NewDelivery("r", "b"), NewDelivery("s", "a")],
        endpoint="in",
        dedup_key=None,
    )
    assert len(await store.claim("r", "a", limit=10, owner="n", lease_secs=60)) == 1
    assert len(await store.claim("r", "b", limit=10, owner="n", lease_secs=60)) == 1
    assert len(await store.claim("s", "a", limit=10, owner="n", lease_secs=60)) == 1
    assert await store.claim("r", "a", limit=10, owner="n", lease_secs=60) == []


async def test_expired_leases_and_restarted_owner_are_recovered(store: Store) -> None:
    for i in range(2):
        await store.submit(msg(f"C{i}"), one(), endpoint="in", dedup_key=None)
    [short] = await store.claim("r", "dpi", limit=1, owner="dead-node", lease_secs=0.05)
    [long] = await store.claim("r", "dpi", limit=1, owner="me", lease_secs=600)
    assert await recover_once_expired(store) == 1  # only the expired one
    assert await store.recover_leases(owner="me") == 1  # our own, after a restart
    again = await store.claim("r", "dpi", limit=10, owner="me", lease_secs=60)
    assert sorted(c.delivery.id for c in again) == sorted([short.delivery.id, long.delivery.id])
    assert all(c.delivery.attempts == 2 for c in again)


async def test_what_an_outcome_puts_back_before_the_last_claim_is_claimed_next(store: Store) -> None:
    # A claim may start where the previous one stopped (PostgreSQL: hub/store/claim_points.py); a key's next
    # delivery and a retry due now sit before that point in the claim's order, and must come out at once.
    a1, a2, b, c = msg("A1", patient="A"), msg("A2", patient="A"), msg("B", patient="B"), msg("C", patient="C")
    for m, key in ((a1, "A"), (a2, "A"), (b, "B"), (c, "C")):
        await store.submit(m, one(key=key), endpoint="in", dedup_key=None)
    first = {x.message.id: x.delivery for x in await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)}
    assert set(first) == {a1.id, b.id, c.id}  # A2 waits behind A1
    await store.finish(first[a1.id].id, owner="n", status="delivered", next_attempt_at=None, error="",
                       outcome="accept", started_at=utcnow())  # fmt: skip
    await store.finish(first[b.id].id, owner="n", status="pending", next_attempt_at=utcnow() - timedelta(hours=1),
                       error="AE", outcome="retry", started_at=utcnow())  # fmt: skip
    again = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    assert sorted(x.message.id for x in again) == sorted([a2.id, b.id])


async def test_release_gives_back_without_counting_the_attempt(store: Store) -> None:
    await store.submit(msg(), one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n", lease_secs=60)
    assert await store.release([c.delivery.id], owner="other") == 0
    assert await store.release([c.delivery.id], owner="n") == 1
    [again] = await store.claim("r", "dpi", limit=1, owner="n", lease_secs=60)
    assert again.delivery.attempts == 1


async def test_search_by_business_keys(store: Store) -> None:
    t0 = utcnow()
    ms = [msg("C1", patient="P1"), msg("C2", patient="P2"), msg("C3", patient="P1", sending_app="OTHER")]
    for m in ms:
        await store.submit(m, one(), endpoint="in", dedup_key=None)
    bad = msg("C4", patient="P1")
    await store.store_rejected(bad, endpoint="in", reason="r")

    async def ids(**kw: object) -> list[str]:
        return [r.message.id for r in await store.search(SearchQuery(**kw))]  # type: ignore[arg-type]

    assert await ids(control_id="C2") == [ms[1].id]
    assert await ids(patient_key="P1") == [bad.id, ms[2].id, ms[0].id]  # newest first
    assert await ids(sending_app="OTHER") == [ms[2].id]
    assert await ids(sending_app="LAB", sending_facility="HOSP", control_id="C1") == [ms[0].id]
    assert await ids(status="rejected") == [bad.id]
    assert await ids(message_id=ms[1].id) == [ms[1].id]
    assert await ids(message_type="ORU^R01", limit=2) == [bad.id, ms[2].id]
    assert await ids(before_id=ms[2].id) == [ms[1].id, ms[0].id]
    assert len(await ids(since=t0)) == 4
    assert await ids(until=t0) == []


# -- identity registry and holds -----------------------------------------------------------------------


def identity(key: str = "P1@HOSP", status: str = "provisoire", version: int = 0, **kw: object) -> IdentityRecord:
    local, _, authority = key.partition("@")
    return IdentityRecord(patient_key=key, authority=authority, local_id=local, status=status, version=version, **kw)  # type: ignore[arg-type]


async def test_identity_registry_keeps_versions_and_history(store: Store) -> None:
    assert await store.get_identity("P1@HOSP") is None
    first = await store.save_identity(identity(traits={"birth_name": "X"}), event="A28", message_id="m1")
    assert first.version == 1 and first.updated_at is not None
    got = await store.get_identity("P1@HOSP")
    assert got is not None and got.status == "provisoire" and dict(got.traits) == {"birth_name": "X"}
    second = await store.save_identity(
        dataclasses.replace(
            got, status="qualifiee", ins="279035121518989", ins_oid="1.2.250.1.213.1.4.10", attributes=("HOMA",)
        ),
        event="A31",
        message_id="m2",
        note="qualified",
    )
    assert second.version == 2
    with pytest.raises(StoreError, match="version conflict"):
        await store.save_identity(got, event="A31", message_id="m3")  # stale version
    with pytest.raises(StoreError, match="version conflict"):
        await store.save_identity(identity(), event="A28", message_id="m4")  # "new" but exists
    stored = await store.get_identity("P1@HOSP")
    assert stored is not None and (stored.status, stored.ins, stored.attributes) == (
        "qualifiee",
        "279035121518989",
        ("HOMA",),
    )
    assert [r.patient_key for r in await store.identities_by_ins("279035121518989")] == ["P1@HOSP"]
    assert [r.patient_key for r in await store.list_identities(status="qualifiee")] == ["P1@HOSP"]
    history = await store.identity_history("P1@HOSP")
    assert [(h.event, h.message_id, h.status, h.note) for h in history] == [
        ("A28", "m1", "provisoire", ""),
        ("A31", "m2", "qualifiee", "qualified"),
    ]
    assert "279035121518989" not in repr(stored)


async def test_held_deliveries_block_their_key_and_are_released_in_order(store: Store) -> None:
    first, second = msg("H1", patient="PQ@HOSP"), msg("H2", patient="PQ@HOSP")
    other = msg("O1", patient="PR@HOSP")
    for m in (first, second, other):
        await store.submit(m, one(key=m.metadata["patient_key"]), endpoint="in", dedup_key=None)
    claimed = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    assert sorted(c.message.id for c in claimed) == sorted([first.id, other.id])
    held = next(c for c in claimed if c.message.id == first.id)
    assert await store.finish(
        held.delivery.id,
        owner="n",
        status="awaiting_identity",
        next_attempt_at=None,
        error="patient identity not qualified",
        outcome="hold",
        started_at=utcnow(),
    )
    assert (await store.get_message(first.id)).status == "awaiting_identity"  # type: ignore[union-attr]
    # The held one still holds back the patient's next message.
    assert await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60) == []
    assert await store.release_held(["NOBODY@HOSP"]) == 0
    assert await store.release_held(["PQ@HOSP"]) == 1
    again = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    assert [c.message.id for c in again] == [first.id]
    assert (await store.get_message(first.id)).status == "pending"  # type: ignore[union-attr]


async def test_identity_review_is_opened_and_resolved(store: Store) -> None:
    a, b = msg("R1", patient="PT@HOSP"), msg("R2", patient="PT@HOSP")
    for m in (a, b):
        await store.submit(m, one(key="PT@HOSP"), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    await store.finish(
        c.delivery.id,
        owner="n",
        status="identity_review",
        next_attempt_at=None,
        error="identity review",
        outcome="hold",
        started_at=utcnow(),
        review="traits disagree: birth_date",
    )
    assert (await store.get_message(a.id)).status == "identity_review"  # type: ignore[union-attr]
    [review] = await store.list_reviews(state="open")
    assert (review.delivery_id, review.message_id, review.patient_key, review.reason) == (
        c.delivery.id,
        a.id,
        "PT@HOSP",
        "traits disagree: birth_date",
    )
    assert await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60) == []  # b waits behind a
    released = await store.resolve_review(review.id, action="release", by="operator-1")
    assert released is not None and released.state == "released" and released.resolved_by == "operator-1"
    assert await store.resolve_review(review.id, action="discard", by="x") is None  # no longer open
    [again] = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    assert again.message.id == a.id and again.delivery.identity_override
    await store.finish(
        again.delivery.id,
        owner="n",
        status="identity_review",
        next_attempt_at=None,
        error="x",
        outcome="hold",
        started_at=utcnow(),
        review="again",
    )
    [second] = await store.list_reviews(state="open")
    await store.resolve_review(second.id, action="discard", by="operator-2")
    assert (await store.get_message(a.id)).status == "failed"  # type: ignore[union-attr]
    [dead] = await store.find_deliveries(status="dead")
    assert dead.last_error == "discarded in identity review"
    [nxt] = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    assert nxt.message.id == b.id and not nxt.delivery.identity_override


async def test_one_unwritable_message_does_not_cost_its_batch(store: Store) -> None:
    good = [msg(f"G{i}") for i in range(20)]
    nul = msg("N\x00UL", sending_app="A\x00B")
    results = await asyncio.gather(
        *(
            store.submit(m, one(), endpoint="in", dedup_key=m.metadata["control_id"])
            for m in [*good[:10], nul, *good[10:]]
        ),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) for r in results[:10] + results[11:])
    assert len(await store.search(SearchQuery(limit=100))) >= 20
    # The NUL-bearing one is kept too, its body intact (text columns cleaned where the database needs it).
    assert not isinstance(results[10], BaseException)
    rec = await store.get_message(nul.id)
    assert rec is not None and rec.message.body == nul.body


# -- business keys, queue statistics, audit trail ------------------------------------------------------


async def test_search_by_ins_ipp_document_and_correlation(store: Store) -> None:
    ins = "279035121518989"
    inbound = msg("K1", patient="000001@HOSP", ins=ins, unique_id="1.2.3.4^DOC1")  # e.g. a FHIR or CDA intake
    stamped = msg("K2", patient="000002@HOSP")  # its INS is only known once a delivery's steps stamp it
    other = msg("K3", patient="000001@OTHER")
    near = msg("K4", patient="0000011@HOSP")  # a longer IPP with the same prefix is not the same patient
    for m in (inbound, stamped, other, near):
        await store.submit(m, one(), endpoint="in", dedup_key=None)
    claimed = {c.message.id: c for c in await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)}
    await store.finish(
        claimed[stamped.id].delivery.id, owner="n", status="delivered", next_attempt_at=None, error="",
        outcome="accept", started_at=utcnow(), output_metadata={"ins": ins, "unique_id": "1.2.3.4^DOC2"},
    )  # fmt: skip

    async def ids(**kw: object) -> list[str]:
        return [r.message.id for r in await store.search(SearchQuery(**kw))]  # type: ignore[arg-type]

    assert await ids(ins=ins) == [stamped.id, inbound.id]
    assert await ids(document_id="1.2.3.4^DOC1") == [inbound.id]
    assert await ids(document_id="1.2.3.4^DOC2") == [stamped.id]
    assert await ids(ins=ins, control_id="K1") == [inbound.id]
    assert await ids(ipp="000001") == [other.id, inbound.id]
    assert await ids(ins="000000000000000") == []
    # The registry maps another local identity to the INS: its messages are found too.
    await store.save_identity(
        identity("0000011@HOSP", status="qualifiee", ins=ins, ins_oid="1.2.250.1.213.1.4.10"), event="A31",
        message_id=None,
    )  # fmt: skip
    assert await ids(ins=ins) == [near.id, stamped.id, inbound.id]
    assert await ids(correlation_id=inbound.correlation_id) == [inbound.id]


async def test_find_deliveries_pages_by_id(store: Store) -> None:
    for i in range(5):
        await store.submit(msg(f"F{i}"), one(), endpoint="in", dedup_key=None)
    first = await store.find_deliveries(status="pending", limit=2)
    rest = await store.find_deliveries(status="pending", limit=10, after_id=first[-1].id)
    assert len(first) == 2 and len(rest) == 3 and rest[0].id > first[-1].id


async def test_queue_stats_count_what_waits(store: Store) -> None:
    t0 = utcnow()
    for i in range(4):
        await store.submit(msg(f"Q{i}"), [NewDelivery("r", "dpi"), NewDelivery("r", "dmp")], endpoint="in",
                           dedup_key=None)  # fmt: skip
    claimed = await store.claim("r", "dpi", limit=3, owner="n", lease_secs=60)
    outcomes = [("dead", None, "AR"), ("pending", utcnow() + timedelta(seconds=60), "AE"), (None, None, "")]
    for c, (status, at, error) in zip(claimed, outcomes, strict=True):
        if status:
            await store.finish(c.delivery.id, owner="n", status=status, next_attempt_at=at, error=error,
                               outcome="retry", started_at=utcnow())  # fmt: skip
    stats = {(q.route, q.destination): q for q in await store.queue_stats()}
    dpi, dmp = stats[("r", "dpi")], stats[("r", "dmp")]
    assert (dpi.pending, dpi.retrying, dpi.in_flight, dpi.held, dpi.dead) == (2, 1, 1, 0, 1)
    assert (dmp.pending, dmp.in_flight, dmp.dead) == (4, 0, 0)
    assert dmp.oldest_at is not None and abs((dmp.oldest_at - t0).total_seconds()) < 5


async def test_audit_trail_is_hash_chained(store: Store) -> None:
    assert await store.audit_chain() == []
    first = await store.append_audit(AuditEvent(actor="alice", role="operator", action="view_payload",
                                                message_id="m1"))  # fmt: skip
    second = await store.append_audit(
        AuditEvent(actor="bob", role="admin", action="requeue", target="dpi", detail={"delivery_ids": [3, 1]})
    )
    entries = await asyncio.gather(
        *(store.append_audit(AuditEvent(actor=f"u{i}", role="viewer", action="search")) for i in range(5))
    )
    assert first.id == 1 and first.prev_hash == "0" * 64 and second.prev_hash == first.hash
    chain = await store.audit_chain()
    assert [e.id for e in chain] == list(range(1, 8))
    assert sorted(e.id for e in entries) == list(range(3, 8))
    for before, entry in itertools.pairwise(chain):
        assert entry.prev_hash == before.hash
    assert all(e.hash == e.expected_hash() for e in chain)
    assert chain[1].as_dict()["detail"] == {"delivery_ids": [3, 1]} and chain[1] == second
    assert [e.id for e in await store.list_audit(limit=2)] == [7, 6]
    assert [e.id for e in await store.list_audit(before_id=3)] == [2, 1]
    assert [e.id for e in await store.list_audit(message_id="m1")] == [1]
    assert [e.id for e in await store.list_audit(actor="bob")] == [2]
    assert [e.id for e in await store.audit_chain(after_id=5, limit=1)] == [6]


async def test_acknowledgements_are_found_by_the_message_they_answer(store: Store) -> None:
    original = msg("ORIG")
    await store.submit(original, one(), endpoint="in", dedup_key=None)
    mdn = msg("MDN", ack_for_message_id=original.correlation_id, ack_kind="mdn")
    await store.submit(mdn, [], endpoint="smtp", dedup_key=None)
    await store.submit(msg("OTHER", ack_for_message_id="someone-else"), [], endpoint="smtp", dedup_key=None)
    found = await store.search(SearchQuery(ack_for=original.correlation_id))
    assert [r.message.id for r in found] == [mdn.id]


async def test_queue_pauses_are_stored_for_every_node(store: Store) -> None:
    assert await store.queue_pauses() == {}
    await store.set_paused("r", "dpi", paused=True, by="alice")
    await store.set_paused("r", "dmp", paused=True, by="alice")
    await store.set_paused("r", "dmp", paused=False, by="bob")
    assert await store.queue_pauses() == {("r", "dpi"): True, ("r", "dmp"): False}


async def test_purge_removes_old_finished_messages_batch_by_batch(store: Store) -> None:
    old = [msg(f"OLD{i}") for i in range(5)]
    for m in old:
        await store.submit(m, one(), endpoint="in", dedup_key=None)
    claimed = await store.claim("r", "dpi", limit=10, owner="n", lease_secs=60)
    for c in claimed[:4]:
        await store.finish(c.delivery.id, owner="n", status="delivered", next_attempt_at=None, error="",
                           outcome="accept", started_at=utcnow())  # fmt: skip
    await store.finish(claimed[4].delivery.id, owner="n", status="dead", next_attempt_at=None, error="x",
                       outcome="reject", started_at=utcnow())  # fmt: skip
    await store.store_rejected(msg("BAD"), endpoint="in", reason="r")
    pending = msg("STILL-PENDING")
    await store.submit(pending, one(), endpoint="in", dedup_key=None)
    cutoff = utcnow() + timedelta(seconds=1)
    statuses = ("delivered", "rejected", "unrouted")
    assert await store.purge(before=cutoff, statuses=statuses, batch=3) == 3
    assert await store.purge(before=cutoff, statuses=statuses, batch=3) == 2
    assert await store.purge(before=cutoff, statuses=statuses, batch=3) == 0
    left = {r.message.metadata["control_id"]: r.status for r in await store.search(SearchQuery(limit=50))}
    assert left == {"OLD4": "failed", "STILL-PENDING": "pending"}  # dead letters and live work stay
    assert await store.purge(before=utcnow() - timedelta(days=1), statuses=("failed",)) == 0  # too recent
    assert await store.purge(before=cutoff, statuses=("failed",)) == 1
    assert [d.status for d in await store.find_deliveries()] == ["pending"]


async def test_search_by_each_message_status(store: Store) -> None:
    """A message's status as its deliveries make it, found by a search on it (PostgreSQL folds it from the
    deliveries when read, SQLite keeps it in the message's row: the same answers)."""
    finished = {"DELIV": "delivered", "DEAD": "dead", "HELD": "awaiting_identity"}
    for control_id in [*finished, "QUEUED"]:
        await store.submit(msg(control_id), one(), endpoint="in", dedup_key=None)
    both = msg("HALF")  # one delivery done, the other still queued: pending
    await store.submit(both, [*one(), *one("dmp")], endpoint="in", dedup_key=None)
    await store.submit(msg("NOWHERE"), [], endpoint="in", dedup_key=None)
    await store.store_rejected(msg("BAD"), endpoint="in", reason="r")
    claimed = {c.message.metadata["control_id"]: c for c in await store.claim("r", "dpi", limit=10, owner="n",
                                                                              lease_secs=60)}  # fmt: skip
    for control_id, status in [*finished.items(), ("HALF", "delivered")]:
        await store.finish(claimed[control_id].delivery.id, owner="n", status=status, next_attempt_at=None,
                           error="", outcome="accept", started_at=utcnow())  # fmt: skip
    found = {}
    for status in ("pending", "delivered", "failed", "awaiting_identity", "identity_review", "rejected", "unrouted"):
        found[status] = sorted(r.message.metadata["control_id"] for r in await store.search(SearchQuery(status=status)))
        assert all(r.status == status for r in await store.search(SearchQuery(status=status)))
    assert found == {
        "pending": ["HALF", "QUEUED"], "delivered": ["DELIV"], "failed": ["DEAD"], "awaiting_identity": ["HELD"],
        "identity_review": [], "rejected": ["BAD"], "unrouted": ["NOWHERE"],
    }  # fmt: skip
    assert [r.status for r in await store.search(SearchQuery(control_id="DELIV", status="delivered"))] == ["delivered"]
    assert await store.search(SearchQuery(control_id="DELIV", status="pending")) == []
