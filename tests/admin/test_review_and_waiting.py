"""What the operator reads: the review's traits side by side (masked per role), why a delivery waits, and a
mail whose documents went on shown by their outcome."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hub.message import Message
from hub.store import SearchQuery
from tests.admin.adminkit import admin_hub
from tests.hubkit import MllpClient, adt, default_route, mllp_port, running_peer, wait_until
from tests.integration.test_identity_flow import ROUTES as IDENTITY_ROUTES
from tests.integration.test_identity_flow import adt as pam_adt
from tests.integration.test_identity_flow import oru


def _routes_with_two_result_destinations() -> list[dict]:
    routes = copy.deepcopy(IDENTITY_ROUTES)
    results = routes[1]
    results["to"].append({**results["to"][0], "destination": "archive"})
    return routes


async def test_review_detail_waiting_reasons_and_one_review_per_destination(tmp_path: Path) -> None:
    async with running_peer() as archive:
        extra = {
            "registry": {"type": "identity_registry"},
            "archive": {"type": "mllp", "endpoint": f"127.0.0.1:{archive.port}", "ack_timeout_secs": 2},
        }
        routes = _routes_with_two_result_destinations()
        async with admin_hub(tmp_path, routes=routes, endpoints_extra=extra) as (hub, _dpi, apis):
            await _review_checks(hub, apis)


async def _review_checks(hub: Any, apis: dict[str, Any]) -> None:
    store = hub.store
    viewer, operator, admin = apis["viewer"], apis["operator"], apis["admin"]
    client = await MllpClient.connect(mllp_port(hub))
    try:
        await client.send(pam_adt("A1", "A28", vali=False, ins=False))
        await client.send(oru("HELD1"))  # a provisional identity: the result waits for a qualified one

        async def held() -> bool:
            return len(await store.find_deliveries(status="awaiting_identity")) == 2

        await wait_until(held, timeout=20)
        [rec] = await store.search(SearchQuery(control_id="HELD1"))
        trace = await viewer.get(f"/api/messages/{rec.message.id}")
        assert {d["waiting_reason"] for d in trace["deliveries"]} == {
            "awaiting a qualified identity (the registry has it as provisoire): sent when an ADT qualifies it"
        }
        await client.send(pam_adt("A2", "A31", vali=True))

        async def qualified() -> bool:
            record = await store.get_identity("000003@CHU-X")
            return record is not None and record.status == "qualifiee"

        await wait_until(qualified)
        await client.send(oru("TWIN1", given="CAMILLE"))
    finally:
        await client.close()

    async def two_reviews() -> bool:
        return len(await store.list_reviews(state="open")) == 2

    await wait_until(two_reviews, timeout=20)
    listed = (await viewer.get("/api/reviews"))["items"]
    by_destination = {r["destination"]: r["review_id"] for r in listed}
    assert sorted(by_destination) == ["archive", "dpi"] and len({r["message_id"] for r in listed}) == 1
    message_id = listed[0]["message_id"]

    masked = await viewer.get(f"/api/reviews/{by_destination['dpi']}")
    assert masked["masked"] is True and masked["identity_status"] == "qualifiee" and masked["ins_known"]
    rows = {t["trait"]: t for t in masked["traits"]}
    assert rows["first_birth_given_name"]["differs"] and rows["first_birth_given_name"]["message"] == "•••"
    assert not rows["birth_name"]["differs"]
    assert "DOMINIQUE" not in str(masked) and "CAMILLE" not in str(masked)
    assert sorted(w["destination"] for w in masked["waiting"]) == ["archive", "dpi"]
    clear = await operator.get(f"/api/reviews/{by_destination['dpi']}")
    row = {t["trait"]: t for t in clear["traits"]}["first_birth_given_name"]
    assert (row["registry"], row["message"]) == ("DOMINIQUE", "CAMILLE")
    audit = (await admin.get("/api/audit", actor="oscar"))["items"]
    assert [e["action"] for e in audit] == ["view_review"]

    # Each waiting delivery says why.
    trace = await viewer.get(f"/api/messages/{message_id}")
    reasons = {d["destination"]: d["waiting_reason"] for d in trace["deliveries"]}
    assert reasons == {dest: f"waiting behind identity review {rid}" for dest, rid in by_destination.items()}
    assert sorted(r["destination"] for r in trace["reviews"]) == ["archive", "dpi"]
    await hub.pause("results", "dpi", paused=True)
    await operator.post(f"/api/reviews/{by_destination['dpi']}/resolve", {"action": "release"})
    trace = await viewer.get(f"/api/messages/{message_id}")
    reasons = {d["destination"]: d["waiting_reason"] for d in trace["deliveries"]}
    assert reasons["dpi"] == "the queue is paused: sent after resume"


async def test_a_mail_whose_documents_went_on_shows_their_outcome(tmp_path: Path) -> None:
    routes = [default_route(when={"message_type": ["CDA"]})]
    async with admin_hub(tmp_path, routes=routes) as (hub, peer, apis):
        mail = Message.new(b"From: a@b\r\n\r\nhello", content_type="message/rfc822", metadata={"message_type": "mail"})
        await hub.submit("mllp_in", mail)  # no route takes the mail itself
        document = mail.derive(body=adt("DOC1"), content_type="x-application/hl7-v2+er7", message_type="CDA")
        await hub.submit("mllp_in", document)
        await wait_until(lambda: peer.count == 1, timeout=20)

        async def delivered() -> bool:
            rec = await hub.store.get_message(document.id)  # type: ignore[union-attr]
            return rec is not None and rec.status == "delivered"

        await wait_until(delivered)
        [item] = (await apis["viewer"].get("/api/messages", message_type="mail"))["items"]
        assert item["status"] == "unrouted" and item["effective_status"] == "delivered"
        assert item["derived"] == [{"id": document.id, "status": "delivered", "message_type": "CDA"}]
        trace = await apis["viewer"].get(f"/api/messages/{mail.id}")
        assert trace["message"]["effective_status"] == "delivered" and len(trace["message"]["derived"]) == 1
