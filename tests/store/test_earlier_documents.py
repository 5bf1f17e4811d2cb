"""hub.documents: the versions the hub delivered of a document set, read back from either store."""

from __future__ import annotations

from hub.content_types import ContentType
from hub.documents import DocumentVersion, sent_versions
from hub.message import Message, utcnow
from hub.store import NewDelivery, SearchQuery, Store


def oru(control_id: str, patient: str = "IPP1@LAB") -> Message:
    meta = {"control_id": control_id, "message_type": "ORU^R01", "patient_key": patient}
    return Message.new(b"MSH|^~\\&|LAB|LAB\r", content_type=ContentType.HL7V2, metadata=meta)


async def deliver(store: Store, message: Message, status: str, **output: str) -> None:
    """Submit, claim and finish one delivery the way a delivery worker records its steps' output."""
    await store.submit(message, [NewDelivery(route="lab", destination="dmp")], endpoint="mllp_in", dedup_key=None)
    [claimed] = await store.claim("lab", "dmp", limit=1, owner="t", lease_secs=30)
    assert claimed.message.id == message.id
    await store.finish(
        claimed.delivery.id, owner="t", status=status, next_attempt_at=None, error="", outcome="accept",
        started_at=utcnow(), output_metadata=output,
    )  # fmt: skip


async def test_the_newest_delivered_version_of_each_set_sent_before_the_message(store: Store) -> None:
    v1, v2, refused, other_set = oru("A1"), oru("A2"), oru("A3"), oru("B1", patient="IPP2@LAB")
    await deliver(store, v1, "delivered", set_id="2.9.2.1", unique_id="2.9.1.1", version_number="1")
    await deliver(store, v2, "delivered", set_id="2.9.2.1", unique_id="2.9.1.2", version_number="2")
    await deliver(store, refused, "dead", set_id="2.9.2.1", unique_id="2.9.1.3", version_number="3")
    await deliver(store, other_set, "delivered", set_id="2.9.2.7", unique_id="2.9.1.7", version_number="1")
    # The setId a delivery recorded is an indexed business key.
    assert {r.message.id for r in await store.search(SearchQuery(set_id="2.9.2.1"))} == {v1.id, v2.id, refused.id}
    correction = oru("A4")
    await store.submit(correction, [], endpoint="mllp_in", dedup_key=None)
    found = await sent_versions(store, ["2.9.2.1", "2.9.2.7", "2.9.2.404"], before=correction)
    assert found == {"2.9.2.1": DocumentVersion("2.9.1.2", 2), "2.9.2.7": DocumentVersion("2.9.1.7", 1)}
    # Only messages received before it count: the first version has no history.
    assert await sent_versions(store, ["2.9.2.1"], before=v1) == {}
