"""What a delivery sends (SentPayload): stored with an outcome, carried by later claims, dropped by a
requeue and by retention. Both stores."""

from __future__ import annotations

from datetime import timedelta

from hub.message import Message, utcnow
from hub.store import SentPayload, Store
from tests.store.test_store_contract import msg, one


async def _finish(store: Store, delivery_id: int, status: str, sent: SentPayload | None, reached: bool = True) -> None:
    assert await store.finish(
        delivery_id, owner="n1", status=status, next_attempt_at=utcnow() - timedelta(seconds=1),
        error="" if status == "delivered" else "AE: busy", outcome="accept" if status == "delivered" else "retry",
        started_at=utcnow(), sent=sent, count_attempt=reached,
    )  # fmt: skip


async def test_a_retry_claims_what_the_first_attempt_sent(store: Store) -> None:
    m = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    assert c.sent is None  # first attempt: nothing computed yet
    out = m.derive(body=b"MSH|^~\\&|MAPPED\r\x00\xff", content_type="x-application/hl7-v2+er7", ins="1\x002")
    await _finish(store, c.delivery.id, "pending", SentPayload.of(c.delivery.id, m, out, basis="v3"))
    [again] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    assert again.sent is not None and again.sent.basis == "v3" and again.sent.size == len(out.body)
    rebuilt = again.sent.message(again.message)
    # The very message the first attempt sent: id, bytes, content type, metadata (a NUL kept), lineage.
    assert (rebuilt.id, rebuilt.body, rebuilt.content_type, rebuilt.parent_id) == (
        out.id, out.body, out.content_type, out.parent_id)  # fmt: skip
    assert dict(rebuilt.metadata) == dict(out.metadata) and rebuilt.correlation_id == m.correlation_id
    assert abs((rebuilt.received_at - out.received_at).total_seconds()) < 0.001
    light = (await store.sent_payloads([c.delivery.id], body=False))[c.delivery.id]
    assert light.body == b"" and light.size == len(out.body)  # a changed body, not read


async def test_an_unchanged_body_is_not_stored_twice_and_sizes_read_without_bodies(store: Store) -> None:
    m = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    out = m.derive(stamped="yes")  # metadata only
    await _finish(store, c.delivery.id, "delivered", SentPayload.of(c.delivery.id, m, out))
    full = (await store.sent_payloads([c.delivery.id]))[c.delivery.id]
    assert full.body is None and full.message(m).body == m.body and full.metadata["stamped"] == "yes"
    light = await store.sent_payloads([c.delivery.id, 999999], body=False)
    assert list(light) == [c.delivery.id] and light[c.delivery.id].size == len(m.body)


async def test_unreached_attempt_keeps_the_output_and_a_recompute_replaces_it(store: Store) -> None:
    m = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    first = m.derive(body=b"ONE")
    await _finish(store, c.delivery.id, "pending", SentPayload.of(c.delivery.id, m, first, "-"), reached=False)
    [c2] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    assert c2.delivery.attempts == 1 and c2.sent is not None and c2.sent.message(m).body == b"ONE"
    second = m.derive(body=b"TWO")  # the identity changed: the worker computed it again
    await _finish(store, c.delivery.id, "pending", SentPayload.of(c.delivery.id, m, second, "v1"))
    [c3] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    assert c3.sent is not None and (c3.sent.message(m).body, c3.sent.basis) == (b"TWO", "v1")


async def test_requeue_drops_the_output_of_requeued_deliveries_only(store: Store) -> None:
    a, b = msg("A"), msg("B")
    for m in (a, b):
        await store.submit(m, one(), endpoint="in", dedup_key=None)
    ca, cb = await store.claim("r", "dpi", limit=2, owner="n1", lease_secs=60)
    for c, status in ((ca, "dead"), (cb, "pending")):
        await _finish(store, c.delivery.id, status, SentPayload.of(c.delivery.id, c.message, c.message.derive(x="1")))
    # b is pending (a retry): naming it in a requeue changes nothing, its output stays
    assert await store.requeue([ca.delivery.id, cb.delivery.id]) == 1
    left = await store.sent_payloads([ca.delivery.id, cb.delivery.id])
    assert list(left) == [cb.delivery.id]


async def test_retention_purges_the_output_with_its_message(store: Store) -> None:
    m: Message = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    await _finish(store, c.delivery.id, "delivered", SentPayload.of(c.delivery.id, m, m.derive(body=b"OUT")))
    assert await store.purge(before=utcnow() + timedelta(seconds=1), statuses=("delivered",)) == 1
    assert await store.sent_payloads([c.delivery.id]) == {}
