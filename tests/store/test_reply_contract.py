"""What the destination's peer answered (PeerReply): stored with each attempt, read back in order,
purged by retention with its message. Both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.message import utcnow
from hub.replies import PeerReply
from hub.store import Store
from tests.store.test_store_contract import msg, one

_AE = b"MSH|^~\\&|PEER|PEER|HUB|HUB|20250101120000||ACK^A01^ACK|A1|P|2.5\rMSA|AE|1\x00\xff\r"


async def _attempt(store: Store, delivery_id: int, status: str, reply: PeerReply | None, reached: bool = True) -> None:
    assert await store.finish(
        delivery_id, owner="n1", status=status, next_attempt_at=utcnow() - timedelta(seconds=1),
        error="" if status == "delivered" else "AE", outcome="accept" if status == "delivered" else "retry",
        started_at=utcnow(), count_attempt=reached, reply=reply,
    )  # fmt: skip


async def test_each_attempt_keeps_its_own_reply(store: Store) -> None:
    m = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    refused = PeerReply("hl7v2-ack", "AE\x00", _AE, "x-application/hl7-v2+er7", len(_AE), at)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    await _attempt(store, c.delivery.id, "pending", refused)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    await _attempt(store, c.delivery.id, "pending", None, reached=False)  # unreachable: no attempt, no reply
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    await _attempt(store, c.delivery.id, "pending", None)  # a time-out: an attempt the peer never answered
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    cut = PeerReply.of("http", "201", b"{}" * 100, content_type="application/fhir+json", max_bytes=10)
    await _attempt(store, c.delivery.id, "delivered", cut)
    first, second, third = await store.attempts(c.delivery.id)
    assert [a.number for a in (first, second, third)] == [1, 2, 3]
    assert first.reply is not None and second.reply is None and third.reply is not None
    # The first reply is kept as it came (bytes with NUL and non-UTF-8), not replaced by the retry's.
    assert (first.reply.kind, first.reply.body, first.reply.content_type, first.reply.size) == (
        "hl7v2-ack", _AE, "x-application/hl7-v2+er7", len(_AE))  # fmt: skip
    assert first.reply.summary in ("AE\x00", "AE\ufffd") and not first.reply.truncated  # PostgreSQL text: no NUL
    assert abs((first.reply.received_at - at).total_seconds()) < 0.001
    assert (third.reply.summary, third.reply.body, third.reply.size, third.reply.truncated) == (
        "201", b"{}" * 5, 200, True)  # fmt: skip


async def test_retention_purges_the_replies_with_their_message(store: Store) -> None:
    m = msg()
    await store.submit(m, one(), endpoint="in", dedup_key=None)
    [c] = await store.claim("r", "dpi", limit=1, owner="n1", lease_secs=60)
    await _attempt(store, c.delivery.id, "delivered", PeerReply.of("smtp", "250", b"250 2.0.0 queued"))
    assert (await store.attempts(c.delivery.id))[0].reply is not None
    assert await store.purge(before=utcnow() + timedelta(seconds=1), statuses=("delivered",)) == 1
    assert await store.attempts(c.delivery.id) == []
