"""No health data in logs: an end-to-end run with identity-laden messages, every log line scanned."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import structlog

from adapters.mllp.framing import VT, frame
from hub.logs import configure, redact, redact_text
from tests.hubkit import MllpClient, adt, default_route, mllp_port, running_hub, running_peer, wait_until, write_config

# A synthetic identity with a NIR whose key is valid, so that any leak would look real.
FAMILY, GIVEN, BIRTH, NIR = "DUPONTEL", "JOSEPHINE", "19620315", "262037512345678"
IDENTIFIERS = ["P-7781"]


def sensitive(control_id: str, **over: str) -> bytes:
    body = adt(control_id, patient="P-7781", **over).decode()
    body = body.replace("TESTNOM^TESTPRENOM", f"{FAMILY}^{GIVEN}").replace("19800101", BIRTH)
    body = body.replace("^PI||", f"^PI~{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||")
    return body.encode()


def test_redaction_of_text_values() -> None:
    assert redact_text(f"id {NIR} done") == "id [redacted:id] done"
    assert redact_text("born 1962-03-15") == "born [redacted:date]"
    assert redact_text(f"MSH|^~\\&|X\rPID|1||{FAMILY}") == "[redacted:hl7]"
    assert redact_text('{"resourceType": "Patient"}') == "[redacted:fhir]"
    assert redact_text("<ClinicalDocument><x/></ClinicalDocument>") == "[redacted:xml]"
    assert redact_text("message 01a2004d-5a55-7000-ab8d-7efcb0d58827 delivered") == (
        "message 01a2004d-5a55-7000-ab8d-7efcb0d58827 delivered"
    )
    # A destination's reply is masked by its key, whatever it holds (an OperationOutcome may quote the patient).
    assert redact(None, "info", {"event": "x", "reply": "issue: no such patient"})["reply"] == "[redacted]"


async def test_no_health_data_in_any_log_line_of_an_end_to_end_run(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    log = structlog.get_logger("test")
    try:
        routes = [
            default_route(),
            default_route(route="results", when={"message_type": ["ORU^R01"]}, steps=["hl7v2_validate"]),
        ]
        async with running_peer() as peer:
            config = write_config(tmp_path, peer_port=peer.port, routes=routes, listener={"max_frame_bytes": 2048})
            async with running_hub(config) as hub:
                store = hub.store
                assert store is not None
                client = await MllpClient.connect(mllp_port(hub))
                try:
                    await client.send(sensitive("OK1"))
                    await client.send(sensitive("OK1"))  # duplicate
                    await client.send(sensitive("NOTYPE", msh9=""))  # refused, stored
                    await client.send(sensitive("BIG") + b"NTE|1||" + FAMILY.encode() * 200 + b"\r")  # oversized
                    await client.send(sensitive("BADORU", msh9="ORU^R01^ORU_R01"))  # step refusal -> dead
                    await client.send_raw(b"garbage " + FAMILY.encode() + VT + sensitive("CUT")[:60])
                    await client.send_raw(frame(sensitive("OK2")))
                    await client.ack()

                    # The peer must have taken OK1 and OK2 (and the step refusal be dead) before it is told
                    # to refuse: switching earlier would dead-letter them too (the race this test once had).
                    async def first_ones_settled() -> bool:
                        busy = [d for d in await store.find_deliveries() if d.status in ("pending", "in_flight")]
                        return not busy and len(await store.find_deliveries(status="dead")) == 1

                    await wait_until(first_ones_settled, timeout=20)
                    delivered = len(await store.find_deliveries(status="delivered"))
                    peer.ack = "AR"
                    await client.send(sensitive("PEERAR", trigger="A28"))

                    async def settled() -> bool:
                        return len(await store.find_deliveries(status="dead")) == 2

                    await wait_until(settled, timeout=20)
                    assert len(await store.find_deliveries(status="delivered")) == delivered
                    # Even a careless log call with identity keys is cleaned.
                    log.warning(
                        "careless", patient=FAMILY, nir=NIR, note=f"for {NIR} born {BIRTH}", body=sensitive("X")
                    )
                    logging.getLogger("asyncio").error("stdlib record mentioning %s", NIR)
                finally:
                    await client.close()
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    # The run did log what an operator needs, so the scan below is meaningful.
    assert {"hub_started", "mllp_rejected", "delivery_dead", "mllp_duplicate", "careless"} <= events
    for needle in (FAMILY, GIVEN, BIRTH, NIR, "1962-03-15", "MSH|", "PID|", *IDENTIFIERS):
        assert needle not in text, f"{needle!r} leaked into the logs"
