"""The admin API on a running hub with real sockets: roles, search, traces, replay, dead letters, pause, reviews."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp

from hub.admin.api import OPERATIONS
from hub.admin.openapi import build_document
from hub.content_types import ContentType
from hub.logs import configure
from hub.message import Message
from tests.admin.adminkit import PASSWORD, TOKENS, admin_hub, admin_section
from tests.hubkit import FAST_RETRY, MllpClient, adt, default_route, mllp_port, wait_until
from tests.integration.test_identity_flow import ROUTES as IDENTITY_ROUTES
from tests.integration.test_identity_flow import adt as pam_adt
from tests.integration.test_identity_flow import oru

INS = "279035121518989"  # the ANS test patient, INS-NIR test root


async def _send(hub: Any, *bodies: bytes) -> list[bytes]:
    client = await MllpClient.connect(mllp_port(hub))
    try:
        return [await client.send(b) for b in bodies]
    finally:
        await client.close()


async def _delivered(hub: Any, count: int) -> None:
    async def done() -> bool:
        return len(await hub.store.find_deliveries(status="delivered")) >= count

    await wait_until(done, timeout=20)


# -- the document --------------------------------------------------------------------------------------------
async def test_openapi_document_covers_every_api_route(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _peer, apis):
        doc = await apis["anonymous"].get("/api/openapi.json")
        served = {
            (route.method, route.resource.canonical)
            for route in hub._http.app.router.routes()  # type: ignore[union-attr]
            if route.resource is not None and route.resource.canonical.startswith("/api")
        }
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert served == documented
    assert doc["openapi"].startswith("3.1") and doc == build_document(OPERATIONS)
    schemas = doc["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(schemas), refs - set(schemas)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and "200" in op["responses"], (method, path)
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert set(re.findall(r"\{(\w+)\}", path)) == in_path
            role = op["x-required-role"]
            assert (op["security"] == []) == (role is None)
            if role in ("operator", "admin"):
                assert "403" in op["responses"]
    search = {p["name"] for p in doc["paths"]["/api/messages"]["get"]["parameters"]}
    assert {"ins", "ipp", "patient_key", "control_id", "document_id", "status", "since", "until", "before"} <= search


# -- authentication and roles ------------------------------------------------------------------------------------
async def test_roles_tokens_and_sessions(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _peer, apis):
        viewer, operator, admin, anonymous = apis["viewer"], apis["operator"], apis["admin"], apis["anonymous"]
        await _send(hub, adt("R1"))
        await _delivered(hub, 1)
        [item] = (await viewer.get("/api/messages", control_id="R1"))["items"]
        mid = item["id"]

        # No token, or a wrong one: 401 with the challenge.
        async with anonymous.session.get(anonymous.base + "/api/queues") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        await anonymous.get("/api/whoami", expect=401)
        wrong = type(viewer)(viewer.session, viewer.base, TOKENS["viewer"] + "x")
        await wrong.get("/api/whoami", expect=401)
        assert await viewer.get("/api/whoami") == {"name": "vera", "role": "viewer", "kind": "token"}

        # A viewer sees metadata, never a payload, and cannot act.
        trace = await viewer.get(f"/api/messages/{mid}")
        assert "TESTNOM" not in json.dumps(trace)
        denied = await viewer.get(f"/api/messages/{mid}/payload", expect=403)
        assert denied["detail"] == {"needs": "operator", "role": "viewer"}
        await viewer.post(f"/api/messages/{mid}/replay", expect=403)
        await viewer.post("/api/replay", {"filter": {"control_id": "R1"}}, expect=403)
        await viewer.post("/api/destinations/dpi/pause", expect=403)
        await viewer.post("/api/dead/requeue", {"all_dead": True}, expect=403)
        await viewer.post("/api/reviews/1/resolve", {"action": "release"}, expect=403)
        await viewer.get("/api/audit", expect=403)
        assert hub.workers[("adt", "dpi")].paused is False

        # An operator reads payloads and acts, but does not read the audit trail.
        payload = await operator.get(f"/api/messages/{mid}/payload")
        assert payload["encoding"] == "utf-8" and payload["text"].startswith("MSH|") and "TESTNOM" in payload["text"]
        await operator.get("/api/audit", expect=403)
        await operator.post("/api/destinations/dpi/pause")
        await operator.post("/api/destinations/dpi/resume")

        # An admin does everything.
        await admin.get(f"/api/messages/{mid}/payload")
        entries = (await admin.get("/api/audit"))["items"]
        denied_actions = {(e["actor"], e["action"]) for e in entries if e["outcome"] == "denied"}
        assert {("vera", "view_payload"), ("vera", "replay"), ("vera", "pause")} <= denied_actions
        assert (await admin.get("/api/audit/verify"))["ok"]

        # A local user logs in for a session token; its role comes from the config.
        await anonymous.post("/api/login", {"username": "uma", "password": "wrong"}, expect=401)
        await anonymous.post("/api/login", {"username": "nobody", "password": PASSWORD}, expect=401)
        session = await anonymous.post("/api/login", {"username": "uma", "password": PASSWORD})
        assert session["role"] == "operator" and session["token"].startswith("hs1.")
        user = type(viewer)(viewer.session, viewer.base, session["token"])
        assert (await user.get("/api/whoami"))["name"] == "uma"
        await user.get(f"/api/messages/{mid}/payload")
        forged = session["token"][:-2] + ("AA" if not session["token"].endswith("AA") else "BB")
        await type(viewer)(viewer.session, viewer.base, forged).get("/api/whoami", expect=401)
        await anonymous.post("/api/login", {"username": "uma"}, expect=400)
        entries = (await admin.get("/api/audit", actor="uma"))["items"]
        assert [(e["action"], e["outcome"]) for e in entries] == [
            ("view_payload", "ok"), ("login", "ok"), ("login_failed", "refused")
        ]
        assert [e["action"] for e in (await admin.get("/api/audit", actor="nobody"))["items"]] == ["login_failed"]


async def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (_hub, _peer, apis):
        for _ in range(10):
            await apis["anonymous"].post("/api/login", {"username": "uma", "password": "nope"}, expect=401)
        await apis["anonymous"].post("/api/login", {"username": "uma", "password": PASSWORD}, expect=429)
        entries = (await apis["admin"].get("/api/audit", actor="uma"))["items"]
        assert [e["action"] for e in entries] == ["login_throttled"] + ["login_failed"] * 10
        assert {e["outcome"] for e in entries} == {"refused"}


async def test_bootstrap_token_when_nothing_is_configured(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, admin={}) as (_hub, _peer, apis):
        token_file = tmp_path / "admin-token"  # beside the SQLite database
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        boot = type(apis["viewer"])(apis["viewer"].session, apis["viewer"].base, token)
        assert await boot.get("/api/whoami") == {"name": "bootstrap", "role": "admin", "kind": "bootstrap"}
        await apis["viewer"].get("/api/whoami", expect=401)  # the configured tokens of other tests do not exist here
    async with admin_hub(tmp_path, admin={}) as (_hub, _peer, apis):
        assert (tmp_path / "admin-token").read_text().strip() == token  # kept across restarts


async def test_metrics_can_require_a_token(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, admin=admin_section(metrics_auth=True)) as (_hub, _peer, apis):
        await apis["anonymous"].get("/metrics", expect=401)
        assert "hub_messages_received_total" in await apis["viewer"].get("/metrics")


# -- search --------------------------------------------------------------------------------------------------------
async def test_search_filters_and_paging(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _peer, apis):
        viewer = apis["viewer"]
        await _send(hub, *(adt(f"S{i}", patient=f"00{i % 2}7") for i in range(7)))
        await _send(hub, adt("NOTYPE", msh9=""))  # refused: AR, stored as rejected
        # An intake adapter (FHIR, MSSanté) hands over messages whose metadata carries the INS and a document id.
        doc = Message.new(
            b"MSH|^~\\&|X|Y\r", content_type=ContentType.HL7V2,
            metadata={"message_type": "MDM^T02", "control_id": "DOC1", "ins": INS, "unique_id": "1.2.250.9^D1",
                      "patient_key": "0007@OTHER"},
        )  # fmt: skip
        await hub.submit("mllp_in", doc)
        await _delivered(hub, 7)

        async def ids(expect: int = 200, **params: Any) -> list[str]:
            return [m["control_id"] for m in (await viewer.get("/api/messages", expect=expect, **params))["items"]]

        assert await ids(control_id="S3") == ["S3"]
        assert await ids(ipp="0017") == ["S5", "S3", "S1"]  # newest first
        assert await ids(ipp="0007") == ["DOC1", "S6", "S4", "S2", "S0"]  # in any authority
        assert await ids(patient_key="0007@HOSP") == ["S6", "S4", "S2", "S0"]
        assert await ids(ins=INS) == ["DOC1"]
        assert await ids(document_id="1.2.250.9^D1") == ["DOC1"]
        assert await ids(status="rejected") == ["NOTYPE"]
        assert await ids(message_type="ADT^A01", ipp="0017") == ["S5", "S3", "S1"]
        page = await viewer.get("/api/messages", until="2000-01-01T00:00:00Z")
        assert page == {"items": [], "next_before": None}
        assert len(await ids(since="2000-01-01T00:00:00+00:00")) == 9
        await viewer.get("/api/messages", expect=400, limit=0)
        await viewer.get("/api/messages", expect=400, status="bogus")
        await viewer.get("/api/messages", expect=400, unknown="x")

        # Paging: every message once, in order, then the end.
        seen, before = [], None
        while True:
            page = await viewer.get("/api/messages", limit=2, before=before)
            seen += [m["control_id"] for m in page["items"]]
            before = page["next_before"]
            if before is None:
                break
        assert seen == ["DOC1", "NOTYPE", *(f"S{i}" for i in reversed(range(7)))]

        # Looking a patient up is recorded (filters kept, no payload); a search by control id is not.
        audit = (await apis["admin"].get("/api/audit"))["items"]
        patient_searches = [e for e in audit if e["action"] == "search_patient"]
        assert {e["detail"].get("ins") for e in patient_searches} >= {INS}
        assert len(patient_searches) == 5  # the searches above by ipp (3), patient_key and ins


# -- trace ---------------------------------------------------------------------------------------------------------
async def test_trace_shows_deliveries_attempts_and_what_the_steps_added(tmp_path: Path) -> None:
    retry = {**FAST_RETRY, "max_attempts": 2}
    routes = [default_route(steps=["ins_stamp"], dest={"retry": retry})]
    async with admin_hub(tmp_path, routes=routes, peer={"ack": "AE"}) as (hub, _peer, apis):
        await _send(hub, adt("T1"))

        async def dead() -> bool:
            return len(await hub.store.find_deliveries(status="dead")) == 1

        await wait_until(dead, timeout=20)
        [item] = (await apis["viewer"].get("/api/messages", control_id="T1"))["items"]
        trace = await apis["viewer"].get(f"/api/messages/{item['id']}")
    assert trace["message"]["status"] == "failed" and trace["metadata"]["control_id"] == "T1"
    assert trace["metadata"]["message_type"] == "ADT^A01"
    [d] = trace["deliveries"]
    assert (d["route"], d["destination"], d["status"], d["attempts"]) == ("adt", "dpi", "dead", 2)
    assert [a["outcome"] for a in d["attempts_log"]] == ["retry", "retry"]
    assert all(a["error"].startswith("AE") and a["acknowledgement"].startswith("AE") for a in d["attempts_log"])
    assert all(a["duration_ms"] >= 0 for a in d["attempts_log"])
    # ins_stamp found no identity: it said so in the delivery's metadata.
    assert d["output_metadata"] == {"ins_stamped": "false", "ins_reason": "patient not in the identity registry"}
    assert trace["related"] == [] and trace["reviews"] == []


async def test_step_output_is_the_after_view(tmp_path: Path) -> None:
    routes = [default_route(steps=["ins_stamp"])]
    async with admin_hub(tmp_path, routes=routes) as (hub, _peer, apis):
        await _send(hub, adt("OUT1"))
        await _delivered(hub, 1)
        [item] = (await apis["viewer"].get("/api/messages", control_id="OUT1"))["items"]
        [d] = item["deliveries"]
        path = f"/api/messages/{item['id']}/deliveries/{d['id']}/output"
        await apis["viewer"].get(path, expect=403)
        out = await apis["operator"].get(path)
        await apis["operator"].get(f"/api/messages/{item['id']}/deliveries/999/output", expect=404)
        entries = (await apis["admin"].get("/api/audit", message_id=item["id"]))["items"]
    assert out["steps"] == ["ins_stamp"] and out["text"].startswith("MSH|") and out["encoding"] == "utf-8"
    assert out["metadata_added"] == {"ins_stamped": "false", "ins_reason": "patient not in the identity registry"}
    assert [(e["action"], e["outcome"]) for e in entries] == [("view_output", "ok"), ("view_output", "denied")]


# -- actions -------------------------------------------------------------------------------------------------------
async def test_replay_one_corrected_and_bulk(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, peer, apis):
        operator, viewer = apis["operator"], apis["viewer"]
        await _send(hub, adt("P1"), adt("P2"), adt("BAD", msh9=""))
        await _delivered(hub, 2)
        [p1] = (await viewer.get("/api/messages", control_id="P1"))["items"]
        replayed = await operator.post(f"/api/messages/{p1['id']}/replay")
        assert replayed["replayed"] == p1["id"] and replayed["deliveries"] == 1
        await _delivered(hub, 3)
        assert peer.count == 3
        trace = await viewer.get(f"/api/messages/{replayed['new_id']}")
        assert trace["message"]["parent_id"] == p1["id"] and trace["message"]["correlation_id"] == p1["id"]
        assert [r["id"] for r in (await viewer.get(f"/api/messages/{p1['id']}"))["related"]] == [replayed["new_id"]]

        # A refused message, replayed with a fix typed with LF line ends; a body still refused answers 422.
        [bad] = (await viewer.get("/api/messages", status="rejected"))["items"]
        text = (await operator.get(f"/api/messages/{bad['id']}/payload"))["text"]
        still = await operator.post(f"/api/messages/{bad['id']}/replay", {"body": text.replace("\r", "\n")}, 422)
        assert "MSH-9" in json.dumps(still)
        fixed = text.replace("|||BAD|", "||ADT^A28^ADT_A05|BAD|").replace("\r", "\n")
        assert fixed != text.replace("\r", "\n")
        ok = await operator.post(f"/api/messages/{bad['id']}/replay", {"body": fixed})
        await _delivered(hub, 4)
        body = (await operator.get(f"/api/messages/{ok['new_id']}/payload"))["text"]
        assert "\n" not in body and "ADT^A28" in body
        await operator.post("/api/messages/0000/replay", expect=404)

        # Bulk: a dry run lists, the real one replays oldest first.
        dry = await operator.post("/api/replay", {"filter": {"ipp": "P1", "message_type": "ADT^A01"}, "dry_run": True})
        found = (await viewer.get("/api/messages", ipp="P1", message_type="ADT^A01"))["items"]
        assert dry["matched"] == sorted(m["id"] for m in found) and len(found) == 3 and dry["replayed"] == []
        bulk = await operator.post("/api/replay", {"filter": {"control_id": "P2"}, "limit": 10})
        assert [r["replayed"] for r in bulk["replayed"]] == bulk["matched"] and len(bulk["matched"]) == 1
        await _delivered(hub, 5)
        await operator.post("/api/replay", {"filter": {"bogus": 1}}, expect=400)
        entries = (await apis["admin"].get("/api/audit"))["items"]
        replays = [(e["outcome"], e["detail"].get("corrected")) for e in reversed(entries) if e["action"] == "replay"]
        # Each replay: an entry before acting, then its real outcome (the refused body audited as failed).
        assert replays == [
            ("requested", False), ("ok", False), ("requested", True), ("failed", True), ("requested", True),
            ("ok", True),
        ]  # fmt: skip
        bulk_entries = [e["outcome"] for e in reversed(entries) if e["action"] == "replay_bulk"]
        assert bulk_entries == ["requested", "ok"]  # the dry run is not an action


async def test_dead_letters_and_requeue(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, peer={"ack": "AR"}) as (hub, peer, apis):
        operator, viewer = apis["operator"], apis["viewer"]
        await _send(hub, *(adt(f"D{i}", patient=f"K{i}") for i in range(3)))

        async def all_dead() -> bool:
            return len(await hub.store.find_deliveries(status="dead")) == 3

        await wait_until(all_dead, timeout=20)
        page = await viewer.get("/api/dead", limit=2)
        assert len(page["items"]) == 2 and page["next_after"] is not None
        rest = await viewer.get("/api/dead", after=page["next_after"])
        assert len(rest["items"]) == 1 and rest["next_after"] is None
        first = page["items"][0]
        assert first["destination"] == "dpi" and first["last_error"].startswith("AR")
        queues = {(q["route"], q["destination"]): q for q in await viewer.get("/api/queues")}
        assert queues[("adt", "dpi")]["dead"] == 3

        peer.ack = "AA"
        assert await operator.post("/api/dead/requeue", {"delivery_ids": [first["delivery_id"]]}) == {
            "requeued": 1, "matched": 1, "more": False,
        }  # fmt: skip
        await _delivered(hub, 1)
        result = await operator.post("/api/dead/requeue", {"all_dead": True, "destination": "dpi"})
        assert result == {"requeued": 2, "matched": 2, "more": False}
        await _delivered(hub, 3)
        assert (await viewer.get("/api/dead"))["items"] == []
        await operator.post("/api/dead/requeue", {}, expect=200)
        await operator.post("/api/dead/requeue", expect=400)  # a body is required
        entries = [e for e in (await apis["admin"].get("/api/audit"))["items"] if e["action"] == "requeue"]
        assert [e["detail"]["all_dead"] for e in entries] == [True, False]
        assert entries[1]["detail"]["delivery_ids"] == [first["delivery_id"]]


async def test_pause_and_resume_a_destination(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, peer, apis):
        operator, viewer = apis["operator"], apis["viewer"]
        paused = await operator.post("/api/destinations/dpi/pause")
        assert paused == {"destination": "dpi", "workers": [{"route": "adt", "paused": True}]}
        await _send(hub, adt("Q1"), adt("Q2", patient="P2"))

        async def queued() -> bool:
            qs = await viewer.get("/api/queues")
            return qs[0]["depth"] == 2

        await wait_until(queued)
        [q] = await viewer.get("/api/queues")
        assert q["paused"] is True and q["oldest_age_secs"] is not None and q["in_flight"] == 0
        assert peer.count == 0
        await operator.post("/api/destinations/dpi/resume", {"route": "adt"})
        await _delivered(hub, 2)
        [q] = await viewer.get("/api/queues")
        assert (q["paused"], q["depth"], q["outcomes"]) == (False, 0, {"accept": 2})
        await operator.post("/api/destinations/nowhere/pause", expect=404)
        await operator.post("/api/destinations/dpi/pause", {"route": "other"}, expect=404)
        flows = await viewer.get("/api/endpoints")
        assert flows["listeners"][0]["counters"]["accepted"] == 2
        assert flows["routes"][0]["destinations"][0]["outcomes"] == {"accept": 2}


async def test_identity_review_queue_and_its_actions(tmp_path: Path) -> None:
    registry = {"registry": {"type": "identity_registry"}}
    async with admin_hub(tmp_path, routes=IDENTITY_ROUTES, endpoints_extra=registry) as (hub, peer, apis):
        operator, viewer = apis["operator"], apis["viewer"]
        await _send(hub, pam_adt("A1", "A28", vali=False, ins=False), pam_adt("A2", "A31", vali=True))

        async def qualified() -> bool:
            record = await hub.store.get_identity("000003@CHU-X")
            return record is not None and record.status == "qualifiee"

        await wait_until(qualified)
        await _send(hub, oru("O1", given="CAMILLE"), oru("O2", given="CAMILLE"))  # traits disagree

        async def reviewed() -> bool:
            return len(await hub.store.list_reviews(state="open")) == 1

        await wait_until(reviewed)
        [review] = (await viewer.get("/api/reviews"))["items"]
        assert review["state"] == "open" and review["patient_key"] == "000003@CHU-X"
        identity = await viewer.get("/api/identities/000003@CHU-X")
        assert identity["status"] == "qualifiee" and [h["event"] for h in identity["history"]][:1] == ["A28"]
        await viewer.get("/api/identities/nobody@X", expect=404)
        listing = (await viewer.get("/api/identities", status="qualifiee"))["items"]
        assert [(i["patient_key"], i["ins"]) for i in listing] == [("000003@CHU-X", INS)]
        # Every identity view, listings included, is audited with who looked.
        seen = [(e["action"], e["target"], e["outcome"]) for e in (await apis["admin"].get("/api/audit", actor="vera"))
                ["items"]][:4]  # fmt: skip
        assert seen == [
            ("list_identities", "", "ok"), ("view_identity", "nobody@X", "ok"),
            ("view_identity", "000003@CHU-X", "ok"), ("list_reviews", "", "ok"),
        ]  # fmt: skip
        assert identity["awaiting_identity"] == []
        trace = await viewer.get(f"/api/messages/{review['message_id']}")
        assert trace["message"]["status"] == "identity_review"
        assert trace["reviews"][0]["review_id"] == review["review_id"]

        released = await operator.post(f"/api/reviews/{review['review_id']}/resolve", {"action": "release"})
        assert released["state"] == "released" and released["resolved_by"] == "oscar"
        await operator.post(f"/api/reviews/{review['review_id']}/resolve", {"action": "discard"}, expect=409)
        await operator.post("/api/reviews/999/resolve", {"action": "maybe"}, expect=400)

        async def second_review() -> bool:
            return len(await hub.store.list_reviews(state="open")) == 1

        await wait_until(second_review)  # the released one went out; the next one of the patient is reviewed too
        await wait_until(lambda: peer.count == 1)
        [nxt] = (await viewer.get("/api/reviews"))["items"]
        discarded = await operator.post(f"/api/reviews/{nxt['review_id']}/resolve", {"action": "discard"})
        assert discarded["state"] == "discarded"
        assert len((await viewer.get("/api/reviews", state="discarded"))["items"]) == 1
        entries = [e for e in (await apis["admin"].get("/api/audit"))["items"] if e["action"] == "resolve_review"]
        assert [(e["message_id"], e["detail"]["action"]) for e in entries] == [
            (nxt["message_id"], "discard"), (review["message_id"], "release"),
        ]  # fmt: skip


# -- audit and logs ---------------------------------------------------------------------------------------------
async def test_audit_names_who_what_which_message_never_the_payload_and_logs_stay_clean(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    try:
        async with admin_hub(tmp_path) as (hub, _peer, apis):
            operator, admin = apis["operator"], apis["admin"]
            await _send(hub, adt("L1", patient="000042"))
            await _delivered(hub, 1)
            await operator.get("/api/messages", ins=INS)
            [item] = (await operator.get("/api/messages", ipp="000042"))["items"]
            await operator.get(f"/api/messages/{item['id']}/payload")
            await operator.post(f"/api/messages/{item['id']}/replay", {"body": adt("L1", patient="000042").decode()})
            await admin.get("/api/audit")
            entries = (await admin.get("/api/audit"))["items"]
            verify = await admin.get("/api/audit/verify")
    finally:
        logging.getLogger().handlers.clear()
    text = json.dumps(entries)
    assert "TESTNOM" not in text and "MSH|" not in text and "19800101" not in text
    by_action = {e["action"]: e for e in entries}
    assert by_action["view_payload"]["message_id"] == item["id"] and by_action["view_payload"]["actor"] == "oscar"
    assert by_action["replay"]["detail"] == {"corrected": True}
    assert verify == {
        "ok": True, "checked": len(entries), "head_id": entries[0]["id"], "head_hash": entries[0]["hash"],
        "first_bad_id": None, "problem": "", "keyed": len(entries),
    }  # fmt: skip
    logs = stream.getvalue()
    assert "audit_appended" in logs
    for needle in ("TESTNOM", "TESTPRENOM", "19800101", INS, "MSH|", "PID|", TOKENS["operator"]):
        assert needle not in logs, needle


async def test_console_is_served_with_a_strict_policy(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (_hub, _peer, apis), aiohttp.ClientSession() as session:
        base = apis["anonymous"].base
        async with session.get(base + "/") as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert '<script type="module" src="/console/app.js">' in await r.text()
        for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css"), ("render.js", "text/javascript")):
            async with session.get(f"{base}/console/{name}") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith(ctype)
        for bad in ("../http.py", "__init__.py", "nope.js"):
            async with session.get(f"{base}/console/{bad}") as r:
                assert r.status == 404
