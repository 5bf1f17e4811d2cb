"""The web console in a real browser: Debian's chromium driven by playwright, against a running hub.

Log in with a token, read the dashboard, search, open a trace, read HL7 v2
segment by segment and CDA / FHIR pretty-printed, replay, requeue a dead
letter, release an identity review, check what a viewer may not see, verify
the audit trail. Screenshots go to ``$HUB_SCREENSHOT_DIR`` (default: the
test's temporary folder), never into the repository.

Without chromium or playwright the test is skipped with the reason (``make
test`` installs both when it can), except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hub.message import Message
from tests.admin.adminkit import TOKENS, admin_hub
from tests.hubkit import MllpClient, adt, default_route, mllp_port, wait_until
from tests.integration.test_identity_flow import ROUTES as IDENTITY_ROUTES
from tests.integration.test_identity_flow import adt as pam_adt
from tests.integration.test_identity_flow import oru

CDA = (Path(__file__).resolve().parent.parent / "data" / "cda" / "minimal_header.xml").read_bytes()
FHIR = json.dumps(
    {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]}
).encode()


def _pictures(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


async def test_console_login_search_trace_replay_and_operations(tmp_path: Path, browser: Any, shots: Path) -> None:
    routes = [default_route(), *IDENTITY_ROUTES]
    registry = {"registry": {"type": "identity_registry"}}
    async with admin_hub(tmp_path / "hub", routes=routes, endpoints_extra=registry) as (hub, peer, apis):
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("WEB1", patient="000777"))
        await client.send(pam_adt("A1", "A28", vali=False, ins=False))
        await client.send(pam_adt("A2", "A31", vali=True))

        async def qualified() -> bool:
            record = await store.get_identity("000003@CHU-X")
            return record is not None and record.status == "qualifiee"

        await wait_until(qualified)
        await client.send(oru("O1", given="CAMILLE"))  # traits disagree: identity review
        cda = Message.new(CDA, content_type="application/cda+xml", metadata={"control_id": "CDA1"})
        fhir = Message.new(FHIR, content_type="application/fhir+json", metadata={"control_id": "FHIR1"})
        await hub.submit("mllp_in", cda)
        await hub.submit("mllp_in", fhir)

        async def settled() -> bool:
            return peer.count >= 1 and len(await store.list_reviews(state="open")) == 1

        await wait_until(settled)

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status == 404 else None)
        base = apis["operator"].base

        # Log in with the operator's token: the dashboard.
        await page.goto(base + "/")
        await page.fill("#token", TOKENS["operator"])
        await page.click("#login-button")
        await page.wait_for_selector("text=Queues")
        await page.wait_for_selector("td:has-text('dpi')")
        assert "oscar" in await page.inner_text("#who")
        await page.screenshot(path=str(shots / "1-dashboard.png"), full_page=True)

        # Search by IPP, open the trace.
        await page.click("nav >> text=Messages")
        await page.fill("#f-ipp", "000777")
        await page.click("#search-button")
        await page.wait_for_selector("#results td:has-text('WEB1')")
        await page.screenshot(path=str(shots / "2-search.png"), full_page=True)
        await page.click("#results td:has-text('WEB1')")
        await page.wait_for_selector("#deliveries .delivery[data-destination='dpi']")
        assert "delivered" in await page.inner_text("#deliveries")

        # The HL7 v2 payload, segment by segment.
        await page.click("#show-payload")
        await page.wait_for_selector("table.hl7")
        segments = await page.eval_on_selector_all("table.hl7 tr.seg", "rows => rows.map(r => r.dataset.segment)")
        assert segments == ["MSH", "EVN", "PID", "PV1"]
        assert (await page.inner_text("tr[data-segment='PID'] .field[title='PID-3']")).startswith("000777^")
        assert await page.inner_text("tr[data-segment='MSH'] .field[title='MSH-9']") == "ADT^A01^ADT_A01"
        await page.screenshot(path=str(shots / "3-trace-hl7.png"), full_page=True)

        # Replay it: a confirmation first; the DPI already has it, so it is unticked until chosen.
        original = page.url.rsplit("/", 1)[1]
        await page.click("#replay")
        await page.wait_for_selector("#confirm input[value='dpi']")
        assert not await page.is_checked("#confirm input[value='dpi']")
        await page.click("#confirm-cancel")
        assert await page.query_selector("#confirm") is None and await page.query_selector("#replayed-link") is None
        await page.click("#replay")
        await page.check("#confirm input[value='dpi']")
        await page.click("#confirm-ok")
        await page.wait_for_selector("#replayed-link")
        new_id = await page.inner_text("#replayed-link")
        replayed = await store.get_message(new_id)
        assert replayed is not None and replayed.message.parent_id == original
        await page.screenshot(path=str(shots / "4-replayed.png"), full_page=True)

        # CDA and FHIR, pretty-printed.
        await page.goto(f"{base}/#/messages/{cda.id}")
        await page.click("#show-payload")
        await page.wait_for_selector("pre.xml .xml-tag")
        xml = await page.inner_text("pre.xml")
        assert xml.startswith("<ClinicalDocument") and "\n  <realmCode" in xml
        await page.screenshot(path=str(shots / "5-trace-cda.png"), full_page=True)
        await page.goto(f"{base}/#/messages/{fhir.id}")
        await page.click("#show-payload")
        await page.wait_for_selector("pre.json")
        assert '\n  "resourceType": "Bundle"' in await page.inner_text("pre.json")

        # A dead letter, requeued from the console.
        peer.ack = "AR"
        await client.send(adt("WEB-DEAD", patient="000888"))

        async def dead() -> bool:
            return len(await store.find_deliveries(status="dead")) == 1

        await wait_until(dead)
        peer.ack = "AA"
        await page.click("nav >> text=Dead letters")
        await page.wait_for_selector("td:has-text('AR')")
        await page.screenshot(path=str(shots / "6-dead.png"), full_page=True)
        await page.click("#requeue-all")
        await page.wait_for_selector("#confirm-title:has-text('Requeue 1 dead delivery?')")
        await page.click("#confirm-ok")
        await page.wait_for_selector("text=No dead letter.")

        async def redelivered() -> bool:
            return not await store.find_deliveries(status="dead") and peer.count >= 3

        await wait_until(redelivered)

        # The identity review: release it.
        await page.click("nav >> text=Identity review")
        await page.wait_for_selector("button[data-action='release']")
        await page.screenshot(path=str(shots / "7-review.png"), full_page=True)
        # One row per message; "Compare" puts the registry's traits beside the message's.
        assert await page.eval_on_selector_all("tr[data-message]", "rows => rows.length") == 1
        await page.click("button[data-action='compare']")
        await page.wait_for_selector("#trait-comparison tr[data-trait='first_birth_given_name'].attention-alert")
        row = await page.inner_text("#trait-comparison tr[data-trait='first_birth_given_name']")
        assert "DOMINIQUE" in row and "CAMILLE" in row
        assert "results → dpi" in await page.inner_text("#trait-comparison")
        await page.click("button[data-action='release']")
        await page.click("#confirm-ok")
        await page.wait_for_selector("text=No review waiting.")
        [review] = await store.list_reviews(state="released")
        assert review.resolved_by == "oscar"

        # The released result's trace: what ins_stamp made of it (the 'after' view), the INS in PID-3.
        await wait_until(lambda: peer.count >= 4)
        await page.goto(f"{base}/#/messages/{review.message_id}")
        await page.click("#deliveries button[data-output]")
        await page.wait_for_selector(".output table.hl7")
        pid3 = await page.inner_text(".output tr[data-segment='PID'] .field[title='PID-3']")
        assert "^INS" in pid3 and "ins_stamped" in await page.inner_text(".output")
        await page.screenshot(path=str(shots / "7b-after-steps.png"), full_page=True)
        # What was actually sent: the stored bytes, the same INS in PID-3.
        await page.click("#deliveries button[data-sent]")
        await page.wait_for_selector(".output >> text=resent as is by every retry")
        sent_pid3 = await page.inner_text(".output .sent-body tr[data-segment='PID'] .field[title='PID-3']")
        assert sent_pid3 == pid3
        # Beside it, what the receiver answered to the attempt: its ACK, segment by segment.
        await page.wait_for_selector(".output .replies .reply h4 >> text=hl7v2-ack AA")
        assert await page.query_selector(".output .replies .reply tr[data-segment='MSA']") is not None

        # A viewer sees the trace but neither payload nor actions, and no audit page.
        await page.click("#logout")
        await page.fill("#token", TOKENS["viewer"])
        await page.click("#login-button")
        await page.wait_for_selector("text=Queues")
        await page.goto(f"{base}/#/messages/{original}")
        await page.wait_for_selector("text=Your role sees metadata only")
        assert await page.query_selector("#show-payload") is None and await page.query_selector("#replay") is None
        assert not await page.is_visible("nav a[data-page='audit']")

        # An admin verifies the audit trail.
        await page.click("#logout")
        await page.fill("#token", TOKENS["admin"])
        await page.click("#login-button")
        await page.wait_for_selector("text=Queues")
        await page.click("nav >> text=Audit")
        await page.click("#verify")
        await page.wait_for_selector("#verify-result .status.ok")
        audit_text = await page.inner_text("main")
        assert "view_payload" in audit_text and "resolve_review" in audit_text and "requeue" in audit_text
        assert "view_review" in audit_text
        await page.screenshot(path=str(shots / "8-audit.png"), full_page=True)
        await client.close()
    assert errors == []
    assert len(_pictures(shots)) >= 8
