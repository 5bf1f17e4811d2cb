"""Flow F4 end to end on real sockets: a DUI posts FHIR, the hub stamps the INS, the e-Parcours platform receives it.

The identity server qualifies patients over MLLP (IHE PAM France A31 with
PID-32 VALI, to the ``identity_registry`` destination); the DUI posts
transaction Bundles (Patient + DocumentReference + Binary) to the hub's
FHIR intake; the route stamps the registry's INS (``ins_stamp``) and
delivers to the e-Parcours sandbox, which requires OAuth2 and validates
FR Core. A Bundle for a patient not yet qualified waits (``awaiting_identity``)
and goes out when the A31 arrives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from hub.config import load_config
from hub.store import SearchQuery, Store
from mappings.fhir.common import dump_json
from tests.conftest import free_port
from tests.hubkit import MllpClient, ack_fields, mllp_port, running_hub, wait_until, write_config

OID_TEST = "1.2.250.1.213.1.4.10"
DUI_SYSTEM = "urn:oid:2.999.3.1"  # the DUI's own patient identifier system, mapped to the CHU-X domain
PDF = "JVBERi0xLjQKJSVFT0YK"
# Synthetic people of the INSi sandbox fixtures (valid keys, INS-NIR test root).
PEOPLE = {
    "000003": {"ins": "279035121518989", "family": "PAT-TROIS", "given": "DOMINIQUE", "list": "DOMINIQUE",
               "birth": "19790328", "sex": "F", "cog": "51215"},
    "000104": {"ins": "185077505612323", "family": "EXEMPLE", "given": "CAMILLE", "list": "CAMILLE ANDRE",
               "birth": "19850712", "sex": "M", "cog": "75056"},
}  # fmt: skip


def a31(control: str, ipp: str) -> bytes:
    p = PEOPLE[ipp]
    segs = [
        f"MSH|^~\\&|GAM|CHU-X|HUB|CHU-X|20250301101500||ADT^A31^ADT_A05|{control}|P|2.5^FRA^2.11|||||FRA"
        "|UNICODE UTF-8|FR||2.11^IHE_FRANCE-2.11-PAM",
        "EVN||20250301101500",
        f"PID|1||{ipp}^^^CHU-X&000897406&N^PI~{p['ins']}^^^ASIP-SANTE-INS-NIR&{OID_TEST}&ISO^INS||"
        f"{p['family']}^{p['given']}^{p['list']}^^^^L||{p['birth']}|{p['sex']}|||^^^^^^BDL^^{p['cog']}"
        "|||||||||||||||||||||VALI",
        "PV1|1|N",
    ]
    return ("\r".join(segs) + "\r").encode()


def dui_bundle(ipp: str, document_oid: str) -> dict[str, Any]:
    """What a DUI sends: its patient (no INS: the DUI does not hold it), a document and its content."""
    p = PEOPLE[ipp]
    birth = f"{p['birth'][:4]}-{p['birth'][4:6]}-{p['birth'][6:]}"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                             "code": "PI"}]},
                        "system": DUI_SYSTEM, "value": ipp}],
        "name": [{"use": "official", "family": p["family"], "given": [p["given"]]}],
        "gender": {"F": "female", "M": "male"}[p["sex"]],
        "birthDate": birth,
    }  # fmt: skip
    document = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{document_oid}"},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34133-9", "display": "Synthèse"}]},
        "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
        "content": [
            {"attachment": {"contentType": "application/pdf", "url": "urn:uuid:00000000-0000-4000-8000-0000000000b1"}}
        ],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001", "resource": patient,
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000d1", "resource": document,
             "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000b1",
             "resource": {"resourceType": "Binary", "contentType": "application/pdf", "data": PDF},
             "request": {"method": "POST", "url": "Binary"}},
        ],
    }  # fmt: skip


def config(tmp_path: Path, sandbox_port: int) -> Path:
    base = f"http://127.0.0.1:{sandbox_port}"
    routes = [
        {"route": "identity", "from": "mllp_in", "when": {"message_type": ["ADT^A28", "ADT^A31"]},
         "to": [{"destination": "registry", "ordering_key": "patient_key", "max_in_flight": 1,
                 "retry": {"max_attempts": 3, "initial_secs": 0.05}}]},
        {"route": "dui_to_eparcours", "from": "fhir_in", "when": {"resource_type": "Bundle"}, "steps": ["ins_stamp"],
         "to": [{"destination": "eparcours", "ordering_key": "patient_key", "require_qualified_ins": True,
                 "retry": {"max_attempts": 5, "initial_secs": 0.05, "max_secs": 0.2}}]},
    ]  # fmt: skip
    return write_config(
        tmp_path,
        peer_port=free_port(),
        routes=routes,
        environment="test",
        listeners={
            "mllp_in": {"type": "mllp", "listen": "127.0.0.1:0"},
            "fhir_in": {"type": "fhir", "base": "/fhir", "patient_authorities": {DUI_SYSTEM: "CHU-X"}},
        },
        endpoints_extra={
            "registry": {"type": "identity_registry"},
            "eparcours": {
                "type": "fhir",
                "endpoint": base,
                "oauth2": {"token_url": f"{base}/token", "client_id": "hub", "client_secret": "hub-secret"},
            },
        },
        sandboxes={"eparcours_sandbox": {"type": "eparcours", "listen": f"127.0.0.1:{sandbox_port}"}},
    )


async def status_of(store: Store, control_id: str) -> str:
    found = await store.search(SearchQuery(control_id=control_id))
    return found[0].status if found else ""


async def test_dui_bundle_is_stamped_held_and_delivered_to_eparcours(tmp_path: Path) -> None:
    sandbox_port = free_port()
    async with running_hub(config(tmp_path, sandbox_port)) as hub:
        store = hub.store
        assert store is not None and hub.http_port is not None
        box = hub.sandboxes["eparcours_sandbox"]
        intake = f"http://127.0.0.1:{hub.http_port}/fhir"
        platform = box.base_url
        client = await MllpClient.connect(mllp_port(hub))
        http = aiohttp.ClientSession()
        try:

            async def dui_post(bundle: dict[str, Any], request_id: str) -> None:
                headers = {"Content-Type": "application/fhir+json", "X-Request-Id": request_id}
                async with http.post(intake, data=dump_json(bundle), headers=headers) as resp:
                    assert resp.status == 202, await resp.text()

            async def search(kind: str, **params: str) -> dict[str, Any]:
                async with http.get(f"{platform}/{kind}", params=params) as resp:
                    assert resp.status == 200
                    return dict(await resp.json(content_type=None))

            # 1. The identity server qualifies patient 000003 (A31, PID-32 VALI, INS in PID-3).
            assert ack_fields(await client.send(a31("ID-1", "000003")))["MSA"][1] == "AA"

            async def qualified(key: str) -> bool:
                record = await hub.identity.lookup(key)
                return record is not None and record.status == "qualifiee"

            await wait_until(lambda: qualified("000003@CHU-X"))

            # 2. The DUI posts a Bundle for that patient: stamped with the INS, delivered, searchable.
            await dui_post(dui_bundle("000003", "2.999.1.1.100"), "DUI-REQ-1")

            async def delivered(control: str) -> bool:
                return await status_of(store, control) == "delivered"

            await wait_until(lambda: delivered("DUI-REQ-1"))
            found = await search("Patient", identifier=f"urn:oid:{OID_TEST}|{PEOPLE['000003']['ins']}")
            assert found["total"] == 1
            patient = found["entry"][0]["resource"]
            reliability = patient["extension"][0]["extension"][0]["valueCoding"]
            assert reliability["code"] == "QUAL"  # FR Core >= 2.2: qualifiée
            assert patient["identifier"][0]["type"]["coding"][0]["code"] == "INS-NIR-TEST"
            docs = await search("DocumentReference", patient=patient["id"])
            assert docs["total"] == 1
            document = docs["entry"][0]["resource"]
            assert document["masterIdentifier"]["value"] == "urn:oid:2.999.1.1.100"
            binary_ref = document["content"][0]["attachment"]["url"]
            assert binary_ref.startswith("Binary/")
            async with http.get(f"{platform}/{binary_ref}") as resp:
                assert (await resp.json(content_type=None))["data"] == PDF
            [record] = await store.search(SearchQuery(control_id="DUI-REQ-1"))
            assert record.message.metadata["patient_key"] == "000003@CHU-X"
            [delivery] = (await store.deliveries([record.message.id]))[record.message.id]
            assert delivery.output_metadata["ins_stamped"] == "true"
            assert delivery.output_metadata["ins"] == PEOPLE["000003"]["ins"]

            # 3. A Bundle for patient 000104, not yet qualified: it waits, nothing reaches the platform.
            await dui_post(dui_bundle("000104", "2.999.1.1.200"), "DUI-REQ-2")

            async def held() -> bool:
                return await status_of(store, "DUI-REQ-2") == "awaiting_identity"

            await wait_until(held)
            assert (await search("DocumentReference", identifier="urn:ietf:rfc:3986|urn:oid:2.999.1.1.200"))[
                "total"
            ] == 0

            # 4. The A31 qualifying 000104 arrives: the held Bundle goes out, stamped.
            assert ack_fields(await client.send(a31("ID-2", "000104")))["MSA"][1] == "AA"
            await wait_until(lambda: delivered("DUI-REQ-2"))
            found = await search("Patient", identifier=f"urn:oid:{OID_TEST}|{PEOPLE['000104']['ins']}")
            assert found["total"] == 1
            docs = await search("DocumentReference", patient=found["entry"][0]["resource"]["id"])
            assert docs["total"] == 1 and docs["entry"][0]["resource"]["masterIdentifier"]["value"].endswith(".200")

            # Every write carried a token; one token served them all.
            writes = [r for r in box.requests if r["method"] == "POST" and r["path"] == "/"]
            assert [r["status"] for r in writes] == [200, 200] and box.token_requests == 1
            listing = json.dumps(list(box.requests))
            assert PEOPLE["000003"]["ins"] not in listing
        finally:
            await http.close()
            await client.close()


def test_the_f4_example_config_checks() -> None:
    """The example configuration of flow F4 (tests/data/fhir_f4) passes the same check as `hub check`."""
    settings = load_config(Path(__file__).parent.parent / "data" / "fhir_f4" / "hub.yaml")
    assert {r.route for r in settings.routes} == {"identity", "dui_to_eparcours", "adt_to_eparcours"}
    assert settings.listener_config("fhir_in").patient_authorities == {DUI_SYSTEM: "CHU-X"}  # type: ignore[attr-defined]
