"""Flows F2 and F3 end to end on real sockets with mutual TLS: HL7 v2 → CDA → INS → DMP sandbox (ITI-41).

F2: a lab's ORU^R01 for a patient not yet qualified waits; the A31 that qualifies the identity releases it;
the registry's INS is stamped into PID-3, the result becomes a CR-BIO CDA carrying it, and the DMP
sandbox registers it with the INS as patientId. F3: a discharge letter (MDM^T02 carrying a PDF) becomes
a CDA level 1 document; its replacement (MDM^T10) supersedes it in the DMP (RPLC, the first version
deprecated).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp

from hub.store import SearchQuery, Store
from mappings.xds import DE, read_submission
from mappings.xds.ebrim import q
from tests.adapters.test_xds import find_documents
from tests.conftest import free_port
from tests.hubkit import MllpClient, ack_fields, mllp_port, running_hub, wait_until, write_config
from tests.sandboxauth import admin_headers
from tests.tlskit import make_pki

CASES = Path(__file__).resolve().parent.parent / "mappings" / "cases"
INS_LAB = "285077511234511"  # synthetic, INS-NIR test root (.10)
TEST_ROOT = "1.2.250.1.213.1.4.10"
FAST = {"max_attempts": 5, "initial_secs": 0.05, "max_secs": 0.2}
COMMON = {"document_id_root": "2.999.1", "patient_id_roots": {"HOPTEST": "2.999.2.2", "LABO-TEST": "2.999.2.1"}}
CRBIO = {
    **COMMON,
    "custodian": {"id": "1999000001", "name": "Laboratoire de test", "street": "1 rue de l'Exemple",
                  "postal_code": "75012", "city": "PARIS"},
    "practice_setting": {"code": "AMBULATOIRE", "display_name": "Ambulatoire", "code_system": "1.2.250.1.213.1.1.4.9"},
    "healthcare_facility": {"code": "SA25", "display_name": "Laboratoire de biologie médicale",
                            "code_system": "1.2.250.1.71.4.2.4"},
}  # fmt: skip
DOCUMENTS = {
    **COMMON,
    "practice_setting": {"code": "ETABLISSEMENT", "display_name": "Etablissement de santé",
                         "code_system": "1.2.250.1.213.1.1.4.9"},
    "healthcare_facility": {"code": "SA01", "display_name": "Etablissement public de santé",
                            "code_system": "1.2.250.1.71.4.2.4"},
}  # fmt: skip
XDS_METADATA = {
    "source_id": "1.2.250.1.999.7.100",
    "structure": {"id_nat": "1999000001", "name": "Structure synthétique"},
    "submitter": {"id": "LPS-HUB-01", "family": "InteropHub", "given": "1.0", "device": True},
    "content_type_code": {"code": "07", "coding_scheme": "1.2.250.1.213.2.2", "display_name": "Consultation"},
    "document_types": {
        "11502-2": {
            "class_code": {"code": "10", "coding_scheme": "1.2.250.1.213.1.1.4.1", "display_name": "Compte rendu"},
            "format_code": {"code": "urn:ihe:lab:xd-lab:2008", "coding_scheme": "1.3.6.1.4.1.19376.1.2.3",
                            "display_name": "Compte rendu structuré d'examens de biologie médicale"},
        },
        # 11490-0 has no entry: its classCode (10) comes from ASS_X04.
    },
    "environment": "test",
}  # fmt: skip
VIHF = {"name_id": "810000000002", "subject_id": "InteropHub, hub, laboratoire", "secteur_activite": "SA25",
        "lps_nom": "InteropHub", "lps_version": "0.1.0", "lps_homologation_dmp": "HOMOLOG-TEST"}  # fmt: skip


def case(name: str) -> bytes:
    return (CASES / name / "input.hl7").read_bytes()


def without_ins(oru: bytes) -> bytes:
    """The lab's ORU as a lab that does not know the INS sends it: IPP only, PID-32 not VALI."""
    text = oru.decode()
    text = text.replace(f"~{INS_LAB}^^^ASIP-SANTE-INS-NIR&{TEST_ROOT}&ISO^INS", "")
    return text.replace("|||||||||||||||||||||VALI", "|||||||||||||||||||||PROV").encode()


def a31_qualifying() -> bytes:
    segs = [
        "MSH|^~\\&|GAM|LABO-TEST|HUB|HUB|20250314120000||ADT^A31^ADT_A05|ID-0001|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8",
        "EVN||20250314120000",
        f"PID|1||IPP0001^^^LABO-TEST&2.999.2.1&ISO^PI~{INS_LAB}^^^ASIP-SANTE-INS-NIR&{TEST_ROOT}&ISO^INS||"
        "TESTCHIMIE^ALICE^ALICE MARIE^^Mme^^L||19850712|F|||^^^^^^BDL^^75112|||||||||||||||||||||VALI",
    ]
    return ("\r".join(segs) + "\r").encode()


def config(tmp_path: Path, dmp_port: int, pki: Any) -> Path:
    tls_client = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    return write_config(
        tmp_path,
        peer_port=1,
        environment="test",
        endpoints={
            "registry": {"type": "identity_registry"},
            "dmp": {"type": "xds", "endpoint": f"https://127.0.0.1:{dmp_port}/repository", "tls": tls_client,
                    "metadata": XDS_METADATA, "vihf": VIHF, "response_timeout_secs": 10},
        },
        sandboxes={
            "dmp_sandbox": {"type": "dmp", "listen": f"127.0.0.1:{dmp_port}",
                            "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                                    "ca_file": str(pki.ca), "require_client_cert": True},
                            "vihf_signer_cert_file": str(pki.client_cert),
                            "known_patients": [INS_LAB, "291016938700125"]},
        },
        routes=[
            {"route": "identity", "from": "mllp_in", "when": {"message_type": ["ADT^A31"]},
             "to": [{"destination": "registry", "ordering_key": "patient_key", "retry": FAST}]},
            {"route": "lab_to_dmp", "from": "mllp_in", "when": {"message_type": ["ORU^R01"]},
             "steps": ["ins_stamp", {"v2_oru_to_cda_crbio": CRBIO}],
             # hold_behind_dead off: the corrections test dead-letters an orphan correction on purpose and
             # expects the patient's next report to go on (main's default holds later ones behind a dead one).
             "to": [{"destination": "dmp", "ordering_key": "patient_key", "require_qualified_ins": True,
                     "retry": FAST, "hold_behind_dead": False}]},
            {"route": "documents_to_dmp", "from": "mllp_in", "when": {"message_type": ["MDM^T02", "MDM^T10"]},
             "steps": ["v2_dmp_context", {"v2_document_to_cda": DOCUMENTS}],
             "to": [{"destination": "dmp", "ordering_key": "patient_key", "retry": FAST}]},
        ],
    )  # fmt: skip


async def listing(hub: Any) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{hub.http_port}/sandboxes/dmp_sandbox/documents", headers=admin_headers(hub)
        ) as resp,
    ):
        return list(await resp.json())


async def status_of(store: Store, control_id: str) -> str:
    found = await store.search(SearchQuery(control_id=control_id))
    return found[0].status if found else ""


async def test_lab_result_waits_for_identity_then_reaches_the_dmp(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    async with running_hub(config(tmp_path, free_port(), pki)) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        oru = without_ins(case("crbio_chemistry_panel"))
        assert ack_fields(await client.send(oru))["MSA"][1] == "AA"

        async def held() -> bool:
            return await status_of(store, "CHEM-0001") == "awaiting_identity"

        await wait_until(held, timeout=20)
        assert await listing(hub) == []

        assert ack_fields(await client.send(a31_qualifying()))["MSA"][1] == "AA"

        async def delivered() -> bool:
            return await status_of(store, "CHEM-0001") == "delivered"

        await wait_until(delivered, timeout=30)
        [doc] = await listing(hub)
        assert doc["patient_id"] == f"{INS_LAB}^^^&{TEST_ROOT}&ISO^NH"
        assert doc["type_code"] == "11502-2" and doc["class_code"] == "10" and doc["status"] == "Approved"
        assert doc["mime_type"] == "text/xml"
        sandbox = hub.sandboxes["dmp_sandbox"]
        [stored] = list(sandbox.documents.values())
        assert f'extension="{INS_LAB}"'.encode() in stored.content and f'root="{TEST_ROOT}"'.encode() in stored.content
        [rec] = await store.search(SearchQuery(control_id="CHEM-0001"))
        [d] = (await store.deliveries([rec.message.id]))[rec.message.id]
        assert d.output_metadata["ins_stamped"] == "true" and d.output_metadata["type_code"] == "11502-2"
        await client.close()


async def test_discharge_letter_and_its_replacement_in_the_dmp(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    async with running_hub(config(tmp_path, free_port(), pki)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        assert ack_fields(await client.send(case("document_mdm_t02_pdf_letter")))["MSA"][1] == "AA"
        await wait_until(lambda: len(hub.sandboxes["dmp_sandbox"].documents) == 1, timeout=30)
        assert ack_fields(await client.send(case("document_mdm_t10_replacement")))["MSA"][1] == "AA"
        await wait_until(lambda: len(hub.sandboxes["dmp_sandbox"].documents) == 2, timeout=30)
        first, second = await listing(hub)
        assert first["status"] == "Deprecated" and second["status"] == "Approved"
        assert second["replaces"] == first["entry_uuid"] and first["replaced_by"] == second["entry_uuid"]
        assert first["unique_id"].startswith("2.999.3.1.1001") and second["unique_id"].startswith("2.999.3.1.1002")
        assert second["patient_id"] == f"291016938700125^^^&{TEST_ROOT}&ISO^NH"
        await client.close()


async def test_corrected_lab_report_replaces_the_version_the_hub_registered(tmp_path: Path) -> None:
    """F2 corrections: the parent is the uniqueId the hub registered for the same order, found in the store."""
    pki = make_pki(tmp_path / "pki")
    async with running_hub(config(tmp_path, free_port(), pki)) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        assert ack_fields(await client.send(a31_qualifying()))["MSA"][1] == "AA"

        async def qualified() -> bool:  # the A31 reaches the registry through a delivery of its own
            return any(r.status == "qualifiee" for r in await store.list_identities())

        await wait_until(qualified, timeout=30)  # else the report below may first wait for it (one more attempt)
        # A correction whose original the hub never sent is refused with the reason, never sent with a guess.
        orphan = case("crbio_lab_pdf_corrected")
        assert ack_fields(await client.send(orphan))["MSA"][1] == "AA"

        async def orphan_dead() -> bool:
            return await status_of(store, "CHEM-0005") == "failed"

        await wait_until(orphan_dead, timeout=30)
        [rec] = await store.search(SearchQuery(control_id="CHEM-0005"))
        [d] = (await store.deliveries([rec.message.id]))[rec.message.id]
        assert d.status == "dead" and d.attempts == 1 and "has not sent" in d.last_error
        # The dead letter holds the patient's later DMP documents (order per patient) until an operator
        # requeues or discards it: discarded here, the original is sent next.
        assert await store.discard([d.id]) == 1

        assert ack_fields(await client.send(case("crbio_chemistry_panel")))["MSA"][1] == "AA"
        await wait_until(lambda: len(hub.sandboxes["dmp_sandbox"].documents) == 1, timeout=30)
        assert ack_fields(await client.send(case("crbio_corrected_result")))["MSA"][1] == "AA"
        await wait_until(lambda: len(hub.sandboxes["dmp_sandbox"].documents) == 2, timeout=30)
        first, second = await listing(hub)
        assert first["status"] == "Deprecated" and second["replaces"] == first["entry_uuid"]
        stored = {doc.unique_id: doc for doc in hub.sandboxes["dmp_sandbox"].documents.values()}
        content = stored[second["unique_id"]].content
        assert f'<parentDocument>\n      <id root="{first["unique_id"]}"/>'.encode() in content
        assert b'<versionNumber value="2"/>' in content
        assert b'nullFlavor="NAV"' not in content
        await client.close()


APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
LETTER_PATIENT = f"291016938700125^^^&{TEST_ROOT}&ISO^NH"


def letter(*, control_id: str, doc_id: str, flags: dict[str, str] | None = None, sender: str = "") -> bytes:
    """The T02 discharge letter case with other ids, MetaDMPMSS flags and, optionally, another PRT SB."""
    text = case("document_mdm_t02_pdf_letter").decode()
    text = text.replace("|DOC-0001|P|", f"|{control_id}|P|").replace("|||2.999.3.1.1001|", f"|||{doc_id}|")
    for code, value in (flags or {}).items():
        text = re.sub(rf"({code}\^[^|]*\^MetaDMPMSS\|\|)[YN]", rf"\g<1>{value}", text)
    if sender:
        text = re.sub(r"PRT\|\|UC\|\|SB\^\^participation\|[^\r]*", sender, text)
    return text.encode()


async def iti18_unique_ids(dmp: Any, pki: Any, name_id: str) -> list[str]:
    body = await find_documents(dmp, pki, APPROVED, patient=LETTER_PATIENT, name_id=name_id)
    return [e.identifiers[DE.UNIQUE_ID] for e in read_submission(body.find(q("rim", "RegistryObjectList"))).entries]


async def test_masking_flags_reach_the_dmp_and_the_dmp_honours_them(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    async with running_hub(config(tmp_path, free_port(), pki)) as hub:
        dmp = hub.sandboxes["dmp_sandbox"]
        client = await MllpClient.connect(mllp_port(hub))
        masked = letter(control_id="MASK-1", doc_id="2.999.3.1.2001", flags={"MASQUE_PS": "Y"})
        hidden = letter(
            control_id="HIDE-1",
            doc_id="2.999.3.1.2002",
            flags={"INVISIBLE_PATIENT": "Y", "DESTMSSANTEPAT": "N"},
        )
        for message in (masked, hidden):
            assert ack_fields(await client.send(message))["MSA"][1] == "AA"
        await wait_until(lambda: len(dmp.documents) == 2, timeout=30)
        by_id = {d["unique_id"]: d for d in await listing(hub)}
        assert by_id["2.999.3.1.2001"]["confidentiality"] == ["N", "MASQUE_PS"]
        assert by_id["2.999.3.1.2002"]["confidentiality"] == ["N", "INVISIBLE_PATIENT"]
        # ITI-18 as another professional: the masked letter is not returned; as its author, it is.
        assert await iti18_unique_ids(dmp, pki, "810000000099") == ["2.999.3.1.2002"]
        assert sorted(await iti18_unique_ids(dmp, pki, "810000000003")) == ["2.999.3.1.2001", "2.999.3.1.2002"]
        # The patient's own view leaves out the letter hidden from the patient.
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{hub.http_port}/sandboxes/dmp_sandbox/patient-view",
                params={"patient_id": LETTER_PATIENT},
                headers=admin_headers(hub),
            ) as resp,
        ):
            seen = [d["unique_id"] for d in await resp.json()]
        assert seen == ["2.999.3.1.2001"]
        # A masking change on a creation (MODIF_CONF_CODE=Y on a T02): never sent, stored with the reason.
        bad = letter(control_id="BAD-1", doc_id="2.999.3.1.2003", flags={"MODIF_CONF_CODE": "Y"})
        assert ack_fields(await client.send(bad))["MSA"][1] == "AA"
        assert hub.store is not None
        store = hub.store
        await wait_until(lambda: _delivery_failed(store, "BAD-1"), timeout=30)
        [found] = await store.search(SearchQuery(control_id="BAD-1"))
        [delivery] = (await store.deliveries([found.message.id]))[found.message.id]
        assert delivery.status == "dead" and delivery.attempts == 1  # refused, not retried
        assert "MODIF_CONF_CODE=Y on a creation" in delivery.last_error
        assert len(dmp.documents) == 2
        await client.close()


async def _delivery_failed(store: Store, control_id: str) -> bool:
    found = await store.search(SearchQuery(control_id=control_id))
    if not found:
        return False
    deliveries = (await store.deliveries([found[0].message.id]))[found[0].message.id]
    return any(d.status == "dead" for d in deliveries)


async def test_one_hub_two_structures_each_lot_with_its_own_author_structure_and_vihf(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other_sender = (
        "PRT||UC||SB^^participation|810000000005^TESTCHIRURGIEN^JULES^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
        "^D^^^IDNPS|||CLINIQUE TEST^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^999000007"
    )
    async with running_hub(config(tmp_path, free_port(), pki)) as hub:
        dmp = hub.sandboxes["dmp_sandbox"]
        client = await MllpClient.connect(mllp_port(hub))
        first = letter(control_id="STRUCT-1", doc_id="2.999.3.1.3001")
        second = letter(control_id="STRUCT-2", doc_id="2.999.3.1.3002", sender=other_sender)
        for message in (first, second):
            assert ack_fields(await client.send(message))["MSA"][1] == "AA"
        await wait_until(lambda: len(dmp.documents) == 2, timeout=30)
        by_id = {d["unique_id"]: d for d in await listing(hub)}
        one, two = by_id["2.999.3.1.3001"], by_id["2.999.3.1.3002"]
        assert one["lot_author"].startswith("810000000003^TESTMEDECIN^CLAIRE^")
        assert one["lot_institution"].endswith("^IDNST^^^1999000002")
        assert (one["vihf_structure"], one["vihf_name_id"]) == ("1999000002", "810000000003")
        assert two["lot_author"].startswith("810000000005^TESTCHIRURGIEN^JULES^")
        assert two["lot_institution"].startswith("CLINIQUE TEST^") and two["lot_institution"].endswith("^1999000007")
        assert (two["vihf_structure"], two["vihf_name_id"]) == ("1999000007", "810000000005")
        await client.close()
