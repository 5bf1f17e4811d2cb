"""Ségur volet documents through the shipped config, on real sockets: MLLP in, DMP sandbox out.

The hub runs config/hub.yaml and routes/*.yaml as shipped (free ports, a temporary folder). The
identity feed qualifies the patients; then a lab sends an ORU carrying its report in two formats
(CDA level 3, and the PDF the hub wraps as level 1) with a mail body it could not encode, and a DPI
an MDM^T02 carrying a PDF letter. The listener's v2_documents check acknowledges them AA, the
documents_to_dmp routes validate and publish every instance; the unusable mail body is dropped
with a warning on the message. A message that cannot give a valid document is answered AR with an
ERR naming the field, and kept as rejected with the reason.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from hub.store import SearchQuery, Store
from tests.hubkit import MllpClient, ack_fields, running_hub, wait_until
from tests.integration.test_default_config_flows import default_config_in
from tests.integration.test_dmp_flow import a31_qualifying
from tests.mappings.test_volet_documents import case, oru_cda, with_pdf_format

# A mail body cut short (4n+1 base64 characters, as in the ANS examples): unusable, and optional.
MAIL_BODY = (
    "OBX|15|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS||^TEXT^^Base64^"
    "Q2hlciBjb25mcsOocmUsIHZvaWNpIGxlIGNvbXB0ZSByZW5kd||||||F\r"
)


def a31_letter_patient() -> bytes:
    """The identity feed for the patient of the MDM letter case (IPP0003@HOPTEST)."""
    segs = [
        "MSH|^~\\&|GAM|HOPITAL-TEST|HUB|HUB|20250320120000||ADT^A31^ADT_A05|ID-0003|P|2.5^FRA^2.11|||||FRA"
        "|UNICODE UTF-8",
        "EVN||20250320120000",
        "PID|1||IPP0003^^^HOPTEST&410000016&M^PI~291016938700125^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||"
        "TESTMICRO^CAMILLE^CAMILLE ROSE^^Mme^^L||19910115|F|||^^^^^^BDL^^69381|||||||||||||||||||||VALI",
    ]
    return ("\r".join(segs) + "\r").encode()


async def record(store: Store, control_id: str) -> object:
    found = await store.search(SearchQuery(control_id=control_id))
    return found[0] if found else None


async def test_volet_documents_reach_the_dmp_and_bad_ones_are_refused_ar(tmp_path: Path) -> None:
    config, ports = default_config_in(tmp_path)
    # These two patients have a DMP (the shipped DMP sandbox knows only the INSi sandbox's people).
    settings = yaml.safe_load(config.read_text())
    settings["sandboxes"]["dmp_sandbox"]["known_patients"] = ["285077511234511", "291016938700125"]
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    async with running_hub(config) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(ports[2575])
        for adt in (a31_qualifying(), a31_letter_patient()):
            assert ack_fields(await client.send(adt))["MSA"][1] == "AA"

        async def qualified() -> bool:
            keys = ("IPP0001@LABO-TEST", "IPP0003@HOPTEST")
            found = [await hub.identity.lookup(k) for k in keys]
            return all(r is not None and r.status == "qualifiee" for r in found)

        await wait_until(qualified, timeout=20)

        oru = with_pdf_format(oru_cda()) + MAIL_BODY
        ack = ack_fields(await client.send(oru.encode()))
        assert ack["MSA"][1:3] == ["AA", "DOCCHEM-0001"]
        letter = case("document_mdm_t02_pdf_letter").encode()
        assert ack_fields(await client.send(letter))["MSA"][1] == "AA"

        dmp = hub.sandboxes["dmp_sandbox"]
        await wait_until(lambda: len(dmp.documents) == 3, timeout=40)
        stored = list(dmp.documents.values())
        levels = sorted(b"nonXMLBody" in d.content for d in stored)
        assert levels == [False, True, True]  # the CR-BIO level 3, its PDF as level 1, the PDF letter

        rec = await record(store, "DOCCHEM-0001")
        assert rec.message.metadata["document_count"] == "2" and rec.message.metadata["dest_dmp"] == "Y"
        assert rec.message.metadata["warnings"].startswith("CORPSMAIL_PS dropped: ")  # on the stored message too

        async def both_recorded() -> bool:  # the DMP answered; the outcome is recorded just after
            found = (await store.deliveries([rec.message.id]))[rec.message.id]
            return all(d.status == "delivered" for d in found if d.destination == "dmp")

        await wait_until(both_recorded, timeout=20)
        deliveries = (await store.deliveries([rec.message.id]))[rec.message.id]
        on_dmp = [d for d in deliveries if d.destination == "dmp"]
        assert sorted(d.route for d in on_dmp) == ["documents_to_dmp", "documents_to_dmp_level1"]
        for d in on_dmp:
            assert d.status == "delivered"
            assert d.output_metadata["unique_id"]  # the document went, without the mail body
        assert not any(d.route == "lab_to_dmp" for d in deliveries)  # results only (document_count 0)

        # A document message that cannot give a valid document: AR + ERR at the field, stored rejected.
        placeholder = base64.b64encode("Document médical au format CDA".encode()).decode()
        line = next(s for s in oru_cda().split("\r") if s.startswith("OBX|1|ED|"))
        bad = oru_cda().replace(line, line.split("^Base64^")[0] + f"^Base64^{placeholder}||||||F")
        bad = bad.replace("|DOCCHEM-0001|", "|DOCCHEM-BAD|")
        refused = ack_fields(await client.send(bad.encode()))
        assert refused["MSA"][1:3] == ["AR", "DOCCHEM-BAD"]
        assert refused["ERR"][2] == "OBX^1^5^5"
        rec = await record(store, "DOCCHEM-BAD")
        assert rec.status == "rejected" and "does not hold XML" in rec.reason
        assert len(dmp.documents) == 3
        await client.close()
