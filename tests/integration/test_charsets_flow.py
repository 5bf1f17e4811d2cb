"""HL7 v2 character sets end to end on real sockets (the one text layer, mappings/hl7v2/er7.py).

A PAM FR ADT and a lab ORU sent in ISO 8859-1 (MSH-18 ``8859/1``) reach the
e-Parcours sandbox as FHIR, the DMP sandbox as a CR-BIO CDA (UTF-8), and the
DPI as an MDM^T02 declared and encoded in ``8859/1``, with their accented
names intact. A message preceded by a UTF-8 byte-order mark is acknowledged
AA and the mark recorded; a message whose bytes break its declared character
set is refused AR with an ERR at MSH-18 and stored as rejected with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.store import SearchQuery, Store
from mappings.hl7v2 import decode_er7
from mappings.hl7v2.er7 import BOM, Er7Message
from tests.conftest import free_port
from tests.hubkit import MllpClient, ack_fields, adt, mllp_port, running_hub, running_peer, wait_until, write_config
from tests.integration.test_dmp_flow import CRBIO, VIHF, XDS_METADATA
from tests.tlskit import make_pki

HERE = Path(__file__).resolve().parent.parent
FAST = {"max_attempts": 3, "initial_secs": 0.05, "max_secs": 0.2}
FAMILY, GIVEN = "NOËL", "HÉLÈNE"


def latin1(text: str) -> bytes:
    """A message declared ``8859/1`` and encoded in it (as Windows-era French senders do)."""
    text = text.replace("|UNICODE UTF-8|", "|8859/1|")
    assert "|8859/1|" in text.split("\r", 1)[0]
    return text.encode("latin-1")


def adt_latin1() -> bytes:
    text = (HERE / "mappings" / "fhir_cases" / "adt_a28_provisional" / "input.hl7").read_text("utf-8")
    text = text.replace("TESTPROVISOIRE^CAMILLE^CAMILLE ANDRE", f"{FAMILY}^{GIVEN}^{GIVEN} ANDRÉE")
    return latin1(text.replace("\n", "\r"))


def oru_latin1() -> bytes:
    text = (HERE / "mappings" / "cases" / "crbio_chemistry_panel" / "input.hl7").read_text("utf-8")
    text = text.replace("TESTCHIMIE^ALICE^ALICE MARIE", f"{FAMILY}^{GIVEN}^{GIVEN} MARIE")
    return latin1(text.replace("\n", "\r"))


def config(tmp_path: Path, *, dpi_port: int, dmp_port: int, eparcours_port: int, pki: Any) -> Path:
    tls_client = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    base = f"http://127.0.0.1:{eparcours_port}"
    to = {"ordering_key": "patient_key", "retry": FAST}
    return write_config(
        tmp_path,
        peer_port=dpi_port,
        environment="test",
        endpoints_extra={
            "eparcours": {"type": "fhir", "endpoint": base,
                          "oauth2": {"token_url": f"{base}/token", "client_id": "hub", "client_secret": "hub-secret"}},
            "dmp": {"type": "xds", "endpoint": f"https://127.0.0.1:{dmp_port}/repository", "tls": tls_client,
                    "metadata": XDS_METADATA, "vihf": VIHF, "response_timeout_secs": 10},
        },
        sandboxes={
            "eparcours_sandbox": {"type": "eparcours", "listen": f"127.0.0.1:{eparcours_port}"},
            "dmp_sandbox": {"type": "dmp", "listen": f"127.0.0.1:{dmp_port}",
                            "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                                    "ca_file": str(pki.ca), "require_client_cert": True},
                            "vihf_signer_cert_file": str(pki.client_cert),
                            "known_patients": None},  # any INS: these synthetic patients are not INSi's
        },
        routes=[
            {"route": "adt_fhir", "from": "mllp_in", "when": {"message_type": ["ADT^A28", "ADT^A01"]},
             "steps": [{"v2_adt_to_fhir_patient": {"timezone": "Europe/Paris", "fr_core": "2.2"}}],
             "to": [{"destination": "eparcours", **to}]},
            {"route": "oru_fhir", "from": "mllp_in", "when": {"message_type": ["ORU^R01"]},
             "steps": [{"v2_oru_to_fhir_report": {"timezone": "Europe/Paris"}}],
             "to": [{"destination": "eparcours", **to}]},
            {"route": "oru_cda", "from": "mllp_in", "when": {"message_type": ["ORU^R01"]},
             "steps": [{"v2_oru_to_cda_crbio": CRBIO}],
             "to": [{"destination": "dmp", **to}]},
            {"route": "oru_mdm", "from": "mllp_in", "when": {"message_type": ["ORU^R01"]},
             "steps": [{"v2_oru_to_cda_crbio": CRBIO}, {"cda_to_v2_mdm_t02": {"charset": "8859/1"}}],
             "to": [{"destination": "dpi", **to}]},
        ],
    )  # fmt: skip


async def record(store: Store, control_id: str) -> Any:
    found = await store.search(SearchQuery(control_id=control_id))
    return found[0] if found else None


async def status_of(store: Store, control_id: str) -> str:
    rec = await record(store, control_id)
    return rec.status if rec else ""


async def test_latin1_adt_and_oru_keep_their_names_in_fhir_cda_and_mdm(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    async with running_peer() as dpi:
        path = config(tmp_path, dpi_port=dpi.port, dmp_port=free_port(), eparcours_port=free_port(), pki=pki)
        async with running_hub(path) as hub:
            store = hub.store
            assert store is not None
            client = await MllpClient.connect(mllp_port(hub))
            adt_ack = await client.send(adt_latin1())
            oru_ack = await client.send(oru_latin1())
            for ack in (adt_ack, oru_ack):
                assert ack_fields(ack)["MSA"][1] == "AA"
            for control in ("ADT-A28-07", "CHEM-0001"):

                async def delivered(control: str = control) -> bool:
                    return await status_of(store, control) == "delivered"

                await wait_until(delivered, timeout=40)
            await client.close()

            # FHIR (e-Parcours): both Patients, from the ADT and from the ORU, carry the names as sent.
            box = hub.sandboxes["eparcours_sandbox"]
            names = [
                (n.get("family"), n.get("given", [])) for p in box.resources["Patient"].values() for n in p["name"]
            ]
            assert (FAMILY, [GIVEN]) in names
            assert sum(1 for family, _ in names if family == FAMILY) >= 2, names  # one Patient per message
            assert not any("\ufffd" in str(n) for n in names)

            # CDA (DMP): UTF-8 XML with the same names.
            [stored] = list(hub.sandboxes["dmp_sandbox"].documents.values())
            assert f'<family qualifier="BR">{FAMILY}</family>'.encode() in stored.content
            assert GIVEN.encode() in stored.content and b"\xef\xbf\xbd" not in stored.content

            # MDM (DPI): declared 8859/1, encoded in it, names intact once decoded by its own MSH-18.
            [received] = [r for r in dpi.received if r["message_type"].startswith("MDM")]
            raw: bytes = received["raw"]
            assert f"{FAMILY}^{GIVEN}".encode("latin-1") in raw
            text, codec = decode_er7(raw)
            assert codec == "latin-1" and Er7Message(raw).value("MSH", 18) == "8859/1"
            mdm = Er7Message(raw)
            pid = mdm.find("PID")
            assert pid is not None
            names = [(mdm.component(r, 1), mdm.component(r, 2)) for r in mdm.repetitions(pid, 5)]
            assert (FAMILY, GIVEN) in names and "\ufffd" not in text


async def test_bom_before_msh_is_acknowledged_and_recorded(tmp_path: Path) -> None:
    async with running_peer() as dpi, running_hub(write_config(tmp_path, peer_port=dpi.port)) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        ack = await client.send(BOM + adt("BOM-1"))
        assert ack_fields(ack)["MSA"][1:3] == ["AA", "BOM-1"]
        assert not ack.startswith(BOM)  # the ACK is HL7, not a Windows text file
        await wait_until(lambda: len(dpi.received) == 1)
        rec = await record(store, "BOM-1")
        assert rec.message.metadata["bom"] == "utf-8" and rec.message.body.startswith(BOM)  # kept as sent
        plain = await client.send(adt("BOM-2"))
        assert ack_fields(plain)["MSA"][1] == "AA"
        assert "bom" not in (await record(store, "BOM-2")).message.metadata
        await client.close()


async def test_message_breaking_its_declared_charset_is_refused_at_msh18(tmp_path: Path) -> None:
    async with running_peer() as dpi, running_hub(write_config(tmp_path, peer_port=dpi.port)) as hub:
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        utf8_declared = adt("CS-1").replace(b"TESTNOM", "NOËL".encode("latin-1"))  # says UTF-8, sends 8859-1
        ascii_declared = adt("CS-2").replace(b"UNICODE UTF-8", b"ASCII").replace(b"TESTNOM", "NOËL".encode())
        unknown = adt("CS-3").replace(b"UNICODE UTF-8", b"EBCDIC")
        for body, control, code in ((utf8_declared, "CS-1", "102"), (ascii_declared, "CS-2", "102"),
                                    (unknown, "CS-3", "103")):  # fmt: skip
            ack = ack_fields(await client.send(body))
            assert ack["MSA"][1:3] == ["AR", control]
            assert ack["ERR"][2] == "MSH^1^18" and ack["ERR"][3].startswith(code)
            rec = await record(store, control)
            assert rec.status == "rejected" and "MSH-18" in rec.reason
        assert not dpi.received  # refused at intake: never routed
        await client.close()


async def test_ack_is_written_in_the_senders_charset(tmp_path: Path) -> None:
    async with running_peer() as dpi, running_hub(write_config(tmp_path, peer_port=dpi.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        body = adt("ÉCHO-1").replace(b"UNICODE UTF-8", b"8859/1").decode("utf-8").encode("latin-1")
        ack = await client.send(body)
        assert "|ÉCHO-1".encode("latin-1") in ack  # MSA-2 echoes MSH-10 in the sender's own bytes
        assert Er7Message(ack).value("MSA", 2) == "ÉCHO-1"
        await client.close()
