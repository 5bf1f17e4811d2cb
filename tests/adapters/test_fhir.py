"""The FHIR intake on the hub's HTTP port, the e-Parcours client against its sandbox, and the sandbox itself.

Real sockets throughout: a Hub in-process with its HTTP server, the
e-Parcours sandbox on its own port (plain HTTP, or mutual TLS with a test
PKI), aiohttp as the DUI.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from adapters.fhir.outbound import FhirOutbound, FhirOutboundConfig, outcome_summary, parse_retry_after
from adapters.sandboxes.eparcours import EParcoursSandbox, EParcoursSandboxConfig
from adapters.tls import TlsConfig
from hub.content_types import ContentType
from hub.errors import NotConnected, Rejected, Retryable
from hub.message import Message
from hub.store import SearchQuery
from mappings.fhir.common import dump_json
from tests.conftest import free_port
from tests.hubkit import running_hub, wait_until, write_config
from tests.sandboxauth import admin_headers
from tests.tlskit import make_pki
from tests.unit.test_fhir_validate import INS, qualified

PDF = "JVBERi0xLjQKJSVFT0YK"  # "%PDF-1.4\n%%EOF\n"


def document_reference(unique: str = "urn:oid:2.999.1.1.1", subject: str = "urn:uuid:patient-1") -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": unique},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Note de consultation"}]},
        "subject": {"reference": subject},
        "content": [{"attachment": {"contentType": "application/pdf", "data": PDF}}],
    }


def transaction(patient: dict[str, Any] | None = None, unique: str = "urn:oid:2.999.1.1.1") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:patient-1", "resource": patient or qualified(),
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:doc-1", "resource": document_reference(unique),
             "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": "urn:uuid:bin-1", "resource": {"resourceType": "Binary", "contentType": "application/pdf",
                                                       "data": PDF},
             "request": {"method": "POST", "url": "Binary"}},
        ],
    }  # fmt: skip


@contextlib.asynccontextmanager
async def sandbox(**config: Any) -> AsyncIterator[EParcoursSandbox]:
    box = EParcoursSandbox("eparcours", EParcoursSandboxConfig(listen="127.0.0.1:0", **config))
    await box.start()
    try:
        yield box
    finally:
        await box.stop()


@contextlib.asynccontextmanager
async def client_for(box: EParcoursSandbox, **over: Any) -> AsyncIterator[FhirOutbound]:
    settings: dict[str, Any] = {
        "endpoint": box.base_url,
        "oauth2": {"token_url": f"{box.base_url}/token", "client_id": "hub", "client_secret": "hub-secret"},
        **over,
    }
    out = FhirOutbound("eparcours", FhirOutboundConfig.model_validate(settings))
    await out.start()
    try:
        yield out
    finally:
        await out.stop()


def fhir_message(doc: dict[str, Any]) -> Message:
    return Message.new(dump_json(doc), content_type=ContentType.FHIR)


async def fhir_get(box: EParcoursSandbox, path: str, **params: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{box.base_url}/{path}", params=params) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


# ------------------------------------------------------------------------------------ intake (inbound)


def intake_config(tmp_path: Path, base: str, *, listener: dict[str, Any] | None = None, **hub: Any) -> Path:
    listeners = {
        "mllp_in": {"type": "mllp", "listen": "127.0.0.1:0"},
        "fhir_in": {"type": "fhir", **(listener or {})},
    }
    endpoint = {
        "type": "fhir",
        "endpoint": base,
        "oauth2": {"token_url": f"{base}/token", "client_id": "hub", "client_secret": "hub-secret"},
    }
    paused = hub.pop("paused", False)
    route = {
        "route": "dui",
        "from": "fhir_in",
        "to": [{"destination": "eparcours", "paused": paused, "retry": {"max_attempts": 3, "initial_secs": 0.05}}],
    }
    return write_config(
        tmp_path, peer_port=free_port(), listeners=listeners, endpoints_extra={"eparcours": endpoint},
        routes=[route], **hub,
    )  # fmt: skip


async def post(
    port: int, path: str, body: bytes | dict[str, Any], content_type: str = "application/fhir+json", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    data = dump_json(body) if isinstance(body, dict) else body
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": content_type, **headers}
        ) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def test_intake_accepts_stores_and_forwards(tmp_path: Path) -> None:
    async with sandbox() as box, running_hub(intake_config(tmp_path, box.base_url)) as hub:
        port = hub.http_port
        assert port is not None
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/fhir/metadata") as resp:
            assert resp.status == 200 and resp.content_type == "application/fhir+json"
            CapabilityStatement.model_validate(await resp.json(content_type=None))

        status, headers, body = await post(port, "/fhir", transaction(), **{"X-Request-Id": "dui-req-1"})
        assert status == 202, body
        message_id = headers["X-Hub-Message-Id"]
        outcome = json.loads(body)
        assert outcome["resourceType"] == "OperationOutcome" and message_id in outcome["issue"][0]["details"]["text"]
        assert hub.store is not None
        record = await hub.store.get_message(message_id)
        assert record is not None and record.message.body == dump_json(transaction())
        meta = record.message.metadata
        assert meta["resource_type"] == "Bundle" and meta["bundle_type"] == "transaction"
        assert meta["patient_key"] == "DUI-1@ESMS-TEST" and meta["ins"] == INS
        assert meta["document_type"] == "11488-4" and meta["fhir_interaction"] == "transaction"
        assert meta["control_id"] == "dui-req-1"

        await wait_until(lambda: len(box.resources.get("DocumentReference", {})) == 1)
        found = await fhir_get(box, "Patient", identifier=f"urn:oid:1.2.250.1.213.1.4.10|{INS}")
        assert found["total"] == 1

        status, headers, body = await post(port, "/fhir/Patient", qualified(), Prefer="return=minimal")
        assert status == 202 and body == b"" and headers["X-Hub-Message-Id"]

        single = document_reference("urn:oid:2.999.1.1.9", subject="Patient/x")
        status, first, _ = await post(port, "/fhir/DocumentReference", single)
        assert status == 202
        status, again, body = await post(port, "/fhir/DocumentReference", single)
        # The same document (masterIdentifier) again: acknowledged, not routed twice.
        assert status == 200 and again["X-Hub-Message-Id"] == first["X-Hub-Message-Id"]
        record = await hub.store.get_message(first["X-Hub-Message-Id"])
        assert record is not None and record.message.metadata["unique_id"] == "urn:oid:2.999.1.1.9"


def other_subject() -> dict[str, Any]:
    """A transaction whose DocumentReference is about someone else (another INS) than its Patient."""
    bundle = transaction()
    other = {"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "100000000000001"}
    bundle["entry"][1]["resource"]["subject"] = {"identifier": other}
    return bundle


def two_patients() -> dict[str, Any]:
    bundle = transaction()
    second = qualified()
    second["identifier"] = [{"system": "urn:oid:2.999.3.1", "value": "DUI-2",
                             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                  "code": "PI"}]}}]  # fmt: skip
    bundle["entry"].append({"fullUrl": "urn:uuid:patient-2", "resource": second,
                            "request": {"method": "POST", "url": "Patient"}})  # fmt: skip
    return bundle


REFUSALS = [
    ("not JSON", "/fhir/Patient", b"{not json", "application/fhir+json", 400, ""),
    ("FHIR XML", "/fhir/Patient", b"<Patient/>", "application/fhir+xml", 415, ""),
    ("plain text", "/fhir/Patient", b"{}", "text/plain", 415, ""),
    ("FHIR R5", "/fhir/Patient", dump_json(qualified()), "application/fhir+json; fhirVersion=5.0", 415, ""),
    ("wrong resource for the URL", "/fhir/DocumentReference", dump_json(qualified()), "application/fhir+json", 400,
     "resourceType"),
    ("unknown element", "/fhir/Patient", dump_json({**qualified(), "nickname": "PAT"}), "application/fhir+json", 400,
     "Patient.nickname"),
    ("bad birth date", "/fhir/Patient", dump_json({**qualified(), "birthDate": "1979-02-30T"}), "application/fhir+json",
     400, "Patient.birthDate"),
    ("INS without reliability", "/fhir/Patient", dump_json({**qualified(), "extension": qualified()["extension"][1:]}),
     "application/fhir+json", 422, "Patient.extension"),
    ("PDF that is not one", "/fhir", dump_json(transaction()).replace(PDF.encode(), b"aGVsbG8="),
     "application/fhir+json", 422, "Bundle.entry[1].resource.content[0].attachment.data"),
    ("Bundle type not accepted", "/fhir/Bundle", dump_json({"resourceType": "Bundle", "type": "searchset"}),
     "application/fhir+json", 422, "Bundle.type"),
    ("a 100,000-digit number", "/fhir/Patient", b'{"resourceType":"Patient","x":' + b"9" * 100_000 + b"}",
     "application/fhir+json", 400, ""),
    ("document about another patient", "/fhir", dump_json(other_subject()), "application/fhir+json", 422,
     "Bundle.entry[1].resource.subject"),
    ("two patients", "/fhir", dump_json(two_patients()), "application/fhir+json", 422, "Bundle.entry[3].resource"),
]  # fmt: skip


async def test_intake_refuses_with_operation_outcome_and_stores(tmp_path: Path) -> None:
    async with sandbox() as box, running_hub(intake_config(tmp_path, box.base_url)) as hub:
        port = hub.http_port
        assert port is not None and hub.store is not None
        for case, path, body, ctype, expected, expression in REFUSALS:
            status, headers, answer = await post(port, path, body, ctype)
            assert status == expected, case
            outcome = json.loads(answer)
            assert outcome["resourceType"] == "OperationOutcome", case
            issue = outcome["issue"][0]
            assert issue["severity"] == "error" and issue["code"], case
            if expression:
                assert expression in [e for i in outcome["issue"] for e in i.get("expression", [])], (case, outcome)
            for secret in (INS, "PAT-TROIS", "DOMINIQUE", "1979-02-30"):
                assert secret not in answer.decode(), case
            record = await hub.store.get_message(headers["X-Hub-Message-Id"])
            assert record is not None and record.status == "rejected", case
            assert record.reason.startswith(f"HTTP {expected}: "), case
            assert record.message.body == body, case
        rejected = await hub.store.search(SearchQuery(status="rejected"))
        assert len(rejected) == len(REFUSALS)
        assert box.resources == {}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/fhir/Patient") as resp:
                assert resp.status == 405 and (await resp.json(content_type=None))["resourceType"] == "OperationOutcome"
            async with http.post(f"http://127.0.0.1:{port}/fhir/Observation", data=b"{}") as resp:
                assert resp.status == 404


async def test_a_refused_body_is_replayed_after_a_fix(tmp_path: Path) -> None:
    listener = {"patient_authorities": {"urn:oid:2.999.3.1": "CHU-X"}}
    async with sandbox() as box, running_hub(intake_config(tmp_path, box.base_url, listener=listener)) as hub:
        assert hub.http_port is not None and hub.store is not None
        broken = qualified()
        broken["identifier"][0]["use"] = "temp"  # not a use the INS-NIR slice allows
        status, headers, _ = await post(hub.http_port, "/fhir/Patient", broken)
        assert status == 422
        result = await hub.replay(headers["X-Hub-Message-Id"], body=dump_json(qualified()))
        record = await hub.store.get_message(result.message_id)
        assert record is not None and record.message.metadata["patient_key"] == "DUI-1@CHU-X"
        await wait_until(lambda: len(box.resources.get("Patient", {})) == 1)


async def test_intake_size_limit_is_413_and_kept_cut(tmp_path: Path) -> None:
    config = intake_config(tmp_path, "http://127.0.0.1:9", listener={"max_body_bytes": 4096}, paused=True)
    async with running_hub(config) as hub:
        port = hub.http_port
        assert port is not None and hub.store is not None
        big = dump_json(transaction()).replace(PDF.encode(), b"JVBERi0x" + b"A" * 8000)
        status, headers, answer = await post(port, "/fhir", big)
        assert status == 413 and json.loads(answer)["issue"][0]["code"] == "too-long"
        record = await hub.store.get_message(headers["X-Hub-Message-Id"])
        assert record is not None and record.status == "rejected"
        assert record.message.metadata["truncated_from_bytes"] == str(len(big)) and record.message.body == b""

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/fhir", data=chunks(), headers={"Content-Type": "application/fhir+json"}
            ) as resp,
        ):
            assert resp.status == 413  # chunked, no Content-Length: read up to the limit, then refused
            record = await hub.store.get_message(resp.headers["X-Hub-Message-Id"])
        assert record is not None and len(record.message.body) == 4096


async def test_intake_answers_503_when_the_hub_is_full(tmp_path: Path) -> None:
    config = intake_config(tmp_path, "http://127.0.0.1:9", paused=True, high_water_mark=1)
    async with running_hub(config) as hub:
        port = hub.http_port
        assert port is not None and hub.store is not None
        status, _, _ = await post(port, "/fhir/Patient", qualified())
        assert status == 202
        status, headers, answer = await post(port, "/fhir/Patient", qualified())
        assert status == 503 and int(headers["Retry-After"]) >= 1
        assert json.loads(answer)["issue"][0]["code"] == "transient"
        assert "X-Hub-Message-Id" not in headers
        assert len(await hub.store.search(SearchQuery())) == 1  # nothing was kept: the DUI must resend


async def test_sandbox_faults_over_the_hub_port(tmp_path: Path) -> None:
    port = free_port()
    sandboxes = {"eparcours_sandbox": {"type": "eparcours", "listen": f"127.0.0.1:{port}"}}
    config = intake_config(tmp_path, f"http://127.0.0.1:{port}", sandboxes=sandboxes)
    async with running_hub(config) as hub:
        box = hub.sandboxes["eparcours_sandbox"]
        assert box.describe()["base"] == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(headers=admin_headers(hub)) as http:
            url = f"http://127.0.0.1:{hub.http_port}/sandboxes/eparcours_sandbox/faults"
            async with http.post(url, json={"fail_status": 503, "fail_count": 1, "retry_after_secs": 1}) as resp:
                assert resp.status == 200 and (await resp.json())["fail_status"] == 503
            async with http.post(url, json={"fail_status": 99}) as resp:
                assert resp.status == 400
        status, headers, _ = await post(hub.http_port or 0, "/fhir/Patient", qualified())
        assert status == 202
        await wait_until(lambda: len(box.resources.get("Patient", {})) == 1)
        assert hub.store is not None
        [delivery] = (await hub.store.deliveries([headers["X-Hub-Message-Id"]]))[headers["X-Hub-Message-Id"]]
        assert delivery.attempts == 2  # the injected 503, then the success
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{hub.http_port}/sandboxes/eparcours_sandbox/requests", headers=admin_headers(hub)
            ) as resp,
        ):
            statuses = [r["status"] for r in await resp.json() if r["method"] == "POST" and r["path"] == "/Patient"]
        assert statuses == [503, 201]


# ----------------------------------------------------------------------------- e-Parcours client (outbound)


async def test_token_is_cached_and_refreshed_once_on_401() -> None:
    async with sandbox() as box, client_for(box) as out:
        await out.send(fhir_message(qualified()))
        await out.send(fhir_message(document_reference(subject="Patient/x")))
        assert box.token_requests == 1 and out.token_fetches == 1
        box.set_faults(revoke_tokens=True)  # the platform forgets its tokens: the next write gets 401
        await out.send(fhir_message(document_reference("urn:oid:2.999.1.1.2", subject="Patient/x")))
        assert box.token_requests == 2
        assert [r["status"] for r in box.requests if r["path"] == "/DocumentReference"] == [201, 401, 201]


async def test_token_is_fetched_again_when_it_expires() -> None:
    # expires_in (5 s) below refresh_margin_secs (30 s): every send sees an expired token. No clock needed.
    async with sandbox(token_ttl_secs=5) as box, client_for(box) as out:
        await out.send(fhir_message(qualified()))
        await out.send(fhir_message(qualified()))
        assert box.token_requests == 2


async def test_bad_client_credentials_retry_and_write_nothing() -> None:
    async with sandbox() as box, client_for(box, oauth2={"token_url": f"{box.base_url}/token", "client_id": "hub",
                                                         "client_secret": "wrong"}) as out:  # fmt: skip
        with pytest.raises(Retryable, match="refused the client"):
            await out.send(fhir_message(qualified()))
        assert box.resources == {}
    async with sandbox() as box, client_for(box, oauth2=None) as out:
        with pytest.raises(Retryable, match="401"):
            await out.send(fhir_message(qualified()))


async def test_conditional_create_makes_retries_idempotent() -> None:
    async with sandbox() as box, client_for(box) as out:
        message = fhir_message(transaction())
        await out.send(message)
        await out.send(message)  # a retry after a lost answer
        assert {k: len(v) for k, v in box.resources.items()} == {"Patient": 1, "DocumentReference": 1, "Binary": 1}
        sent = json.loads(out._prepare_bundle(transaction(), message.correlation_id))
        conditions = [e["request"].get("ifNoneExist") for e in sent["entry"]]
        assert conditions[0] == "identifier=urn%3Aoid%3A1.2.250.1.213.1.4.10%7C279035121518989"
        assert conditions[1] == "identifier=urn%3Aietf%3Arfc%3A3986%7Curn%3Aoid%3A2.999.1.1.1"
        assert conditions[2].startswith("_tag=urn%3Ainterop-hub%3Aidempotency%7C")  # a Binary has no identifier
        single = fhir_message(document_reference("urn:oid:2.999.1.1.3", subject="Patient/x"))
        await out.send(single)
        await out.send(single)
        assert len(box.resources["DocumentReference"]) == 2
        [patient] = box.resources["Patient"].values()
        docs = await fhir_get(box, "DocumentReference", patient=patient["id"])
        assert docs["total"] == 1 and docs["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient['id']}"
        by_chain = await fhir_get(box, "DocumentReference", **{"patient.identifier": "urn:oid:2.999.3.1|DUI-1"})
        assert by_chain["total"] == 1


async def test_503_is_retryable_with_retry_after_then_succeeds() -> None:
    async with sandbox(fail_status=503, fail_count=1, retry_after_secs=7) as box, client_for(box) as out:
        with pytest.raises(Retryable) as info:
            await out.send(fhir_message(transaction()))
        assert info.value.retry_after_secs == 7 and "HTTP 503" in str(info.value)
        await out.send(fhir_message(transaction()))
        assert len(box.resources["DocumentReference"]) == 1
        for status in (429, 500, 408):
            box.set_faults(fail_status=status, fail_count=1, retry_after_secs=None)
            with pytest.raises(Retryable, match=f"HTTP {status}"):
                await out.send(fhir_message(qualified()))


async def test_4xx_is_rejected_with_issue_codes_not_values() -> None:
    async with sandbox() as box, client_for(box) as out:
        bad = qualified()
        bad["identifier"][0]["system"] = "urn:oid:1.2.250.1.213.1.4.9"
        with pytest.raises(Rejected) as info:
            await out.send(fhir_message(bad))
        text = str(info.value)
        assert info.value.ack_code == "422" and "error/invalid@Patient.identifier[0].system" in text
        assert INS not in text and "PAT-TROIS" not in text
        with pytest.raises(Rejected, match="takes application/fhir\\+json"):
            await out.send(Message.new(b"MSH|", content_type="x-application/hl7-v2+er7"))


async def test_a_failed_transaction_entry_rejects_and_writes_nothing() -> None:
    async with sandbox() as box, client_for(box) as out:
        broken = transaction()
        broken["entry"][1]["resource"]["status"] = "draft"  # outside the required binding
        with pytest.raises(Rejected) as info:
            await out.send(fhir_message(broken))
        assert "Bundle.entry[1].resource.status" in str(info.value)
        assert box.resources == {}  # a transaction is all or nothing
        batch = transaction()
        batch["type"] = "batch"
        batch["entry"][1]["resource"]["subject"] = {"reference": "Patient/x"}
        batch["entry"][1]["resource"]["status"] = "draft"
        with pytest.raises(Rejected) as info:
            await out.send(fhir_message(batch))
        assert str(info.value).startswith("batch-response with failed entries: entry 1: HTTP 422")
        assert len(box.resources["Patient"]) == 1


async def test_a_misbehaving_2xx_is_inspected() -> None:
    out = FhirOutbound("x", FhirOutboundConfig(endpoint="http://127.0.0.1:9"))
    response = {"resourceType": "Bundle", "type": "transaction-response",
                "entry": [{"response": {"status": "201 Created"}},
                          {"response": {"status": "409 Conflict", "outcome": {
                              "resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "conflict", "diagnostics": "DOMINIQUE exists",
                                         "expression": ["Patient.name.where(given='DOMINIQUE')"]}]}}}]}  # fmt: skip
    with pytest.raises(Rejected) as info:
        out._classify(200, {}, dump_json(response), bundle_type="transaction")
    assert "entry 1: HTTP 409 (error/conflict@Patient.name.where(given='…'))" in str(info.value)
    assert "DOMINIQUE" not in str(info.value)
    response["entry"][1]["response"] = {"status": "503"}
    with pytest.raises(Retryable):
        out._classify(200, {}, dump_json(response), bundle_type="transaction")
    with pytest.raises(Retryable, match="without a readable"):
        out._classify(200, {}, b"<html/>", bundle_type="transaction")
    assert outcome_summary(None) == "no OperationOutcome"
    assert parse_retry_after("120") == 120 and parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0


async def test_platform_down_is_not_connected() -> None:
    out = FhirOutbound("x", FhirOutboundConfig(endpoint=f"http://127.0.0.1:{free_port()}"))
    await out.start()
    try:
        with pytest.raises(NotConnected):
            await out.send(fhir_message(qualified()))
    finally:
        await out.stop()


async def test_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server_tls = TlsConfig(
        cert_file=str(pki.server_cert), key_file=str(pki.server_key), ca_file=str(pki.ca), require_client_cert=True
    )
    async with sandbox(tls=server_tls) as box:
        assert box.base_url.startswith("https://")
        client_tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
        async with client_for(box, tls=client_tls) as out:
            await out.send(fhir_message(qualified()))
        assert len(box.resources["Patient"]) == 1
        async with client_for(box, tls={"ca_file": str(pki.ca)}) as anonymous:
            with pytest.raises((NotConnected, Retryable)):
                await anonymous.send(fhir_message(qualified()))


# ------------------------------------------------------------------------------------------- sandbox


async def test_sandbox_requires_a_token_for_writes_and_searches_freely() -> None:
    async with sandbox(keep=3) as box, aiohttp.ClientSession() as http:
        async with http.post(f"{box.base_url}/Patient", data=dump_json(qualified()),
                             headers={"Content-Type": "application/fhir+json"}) as resp:  # fmt: skip
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        basic = {"Authorization": aiohttp.encode_basic_auth("hub", "hub-secret")}
        grant = {"grant_type": "client_credentials"}
        async with http.post(f"{box.base_url}/token", data=grant, headers=basic) as resp:
            token = (await resp.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        ids = []
        for n in range(4):
            patient = qualified()
            patient["identifier"][1]["value"] = f"DUI-{n}"
            async with http.post(f"{box.base_url}/Patient", data=dump_json(patient), headers=auth) as resp:
                assert resp.status == 201 and resp.headers["Location"].startswith(f"{box.base_url}/Patient/")
                ids.append((await resp.json(content_type=None))["id"])
        assert len(box.resources["Patient"]) == 3  # bounded: the oldest went first
        async with http.get(f"{box.base_url}/Patient/{ids[0]}") as resp:
            assert resp.status == 404
        page = await fhir_get(box, "Patient", _count="2")
        assert page["total"] == 3 and len(page["entry"]) == 2
        assert [link["relation"] for link in page["link"]] == ["self", "next"]
        update = qualified()
        update["identifier"][1]["value"] = "DUI-3"
        update["gender"] = "female"
        url = f"{box.base_url}/Patient?identifier=urn:oid:2.999.3.1|DUI-3"
        async with http.put(url, data=dump_json(update), headers=auth) as resp:
            assert resp.status == 200 and (await resp.json(content_type=None))["meta"]["versionId"] == "2"
        found = await fhir_get(box, "Patient", identifier="urn:oid:2.999.3.1|DUI-3")
        assert found["total"] == 1 and found["entry"][0]["resource"]["id"] == ids[3]
        async with http.get(f"{box.base_url}/metadata") as resp:
            CapabilityStatement.model_validate(await resp.json(content_type=None))


async def test_the_platform_reply_comes_back_created_or_refused_with_its_operation_outcome() -> None:
    async with sandbox() as box, client_for(box) as out:
        created = await out.send(fhir_message(qualified()))
        assert (created.kind, created.summary) == ("http", "201") and "fhir+json" in created.content_type
        assert json.loads(created.body)["resourceType"] == "Patient" and not created.truncated
        bad = qualified()
        bad["identifier"][0]["system"] = "urn:oid:1.2.250.1.213.1.4.9"
        with pytest.raises(Rejected) as info:
            await out.send(fhir_message(bad))
        refused = info.value.reply
        assert refused is not None and refused.summary == "422"
        outcome = json.loads(refused.body)  # the platform's OperationOutcome, whole: kept for the operator
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "invalid"
        assert refused.body.decode() not in str(info.value)  # and never in the error's text
