"""The shipped default config, every flow at once, on real sockets: what arrives where, and no health data
in any log line.

The hub runs `config/hub.yaml` as shipped (its routes, sandboxes and settings), moved to free ports and a
temporary folder. It is fed the tour's samples: the PAM FR identity feed and a lab result over MLLP (F1,
F2), a DUI's FHIR Bundle (F4), and a report from the peer MSSanté operator (F5). Then every log line is
scanned for the patients' names, birth dates, NIR/INS and payload fragments.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import io
import json
import logging
import os
import re
import shutil
import ssl
from pathlib import Path

import aiohttp

from adapters.smtp.mailstore import MailboxStore
from hub.devpki import make_pki
from hub.logs import configure
from hub.store import SearchQuery
from tests.conftest import ROOT, SAMPLES, free_port
from tests.hubkit import MllpClient, ack_fields, running_hub, wait_until
from tests.sandboxauth import admin_headers

PORTS = (2575, 2576, 8443, 8091, 2525, 2526, 5587, 8080, 1143, 1993, 8092)
SECRETS = ("PAT-TROIS", "DOMINIQUE", "EXEMPLE", "CAMILLE", "19790328", "1979-03-28", "19850212",
           "279035121518989", "MSH|", "PID|", "resourceType", "<ClinicalDocument")  # fmt: skip


def default_config_in(tmp: Path) -> tuple[Path, dict[int, int]]:
    """config/hub.yaml and the routes, with free ports and every var/ path under `tmp`."""
    ports = {p: free_port() for p in PORTS}
    text = (ROOT / "config" / "hub.yaml").read_text()
    for old, new in ports.items():
        text = re.sub(rf"127\.0\.0\.1:{old}\b", f"127.0.0.1:{new}", text)
    text = text.replace("var/", f"{tmp}/var/").replace("config/mssante/", f"{ROOT}/config/mssante/")
    (tmp / "config").mkdir()
    shutil.copytree(ROOT / "routes", tmp / "routes")
    (tmp / "config" / "hub.yaml").write_text(text)
    make_pki(tmp / "var" / "pki")
    return tmp / "config" / "hub.yaml", ports


def read_application_mailbox(port: int, pki: Path) -> list[str]:
    """The README tour's IMAP step: the DPI opens its application mailbox with its certificate (SASL EXTERNAL)."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "app.pem"), str(pki / "app.key"))
    client = imaplib.IMAP4_SSL("localhost", port, ssl_context=ctx, timeout=10)
    try:
        client.authenticate("EXTERNAL", lambda _: b"")
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    finally:
        client.logout()
    headers = [email.message_from_bytes(p[1], policy=email.policy.default) for p in data if isinstance(p, tuple)]
    return [str(h["Subject"]) for h in headers]


async def test_every_flow_of_the_default_config_and_no_health_data_in_the_logs(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    config, ports = default_config_in(tmp_path)
    try:
        async with running_hub(config) as hub, aiohttp.ClientSession() as http:
            store = hub.store
            assert store is not None
            base = f"http://127.0.0.1:{hub.http_port}"
            client = await MllpClient.connect(ports[2575])
            for name in ("adt_a01.hl7", "adt_a28.hl7", "adt_a31_qualified.hl7"):
                assert ack_fields(await client.send((SAMPLES / name).read_bytes()))["MSA"][1] == "AA"

            async def qualified() -> bool:
                record = await hub.identity.lookup("000003@CHU-X")
                return record is not None and record.status == "qualifiee"

            await wait_until(qualified, timeout=20)
            assert ack_fields(await client.send((SAMPLES / "oru_r01.hl7").read_bytes()))["MSA"][1] == "AA"
            bundle = (SAMPLES / "fhir_dui_bundle.json").read_bytes()
            async with http.post(f"{base}/fhir", data=bundle, headers={"Content-Type": "application/fhir+json"}) as r:
                assert r.status == 202
            async with http.post(
                f"{base}/sandboxes/mssante_peer/send",
                json={"to": ["dpi-integration@hub.mssante.fr"], "request_mdn": True},
                headers=admin_headers(hub),
            ) as r:
                assert r.status == 200

            dmp, dpi, eparcours = hub.sandboxes["dmp_sandbox"], hub.sandboxes["dpi_sandbox"], ports[8091]
            await wait_until(lambda: len(dmp.documents) == 1, timeout=30)  # F2: the CR-BIO document
            await wait_until(lambda: any(b.split(b"|")[8].startswith(b"MDM") for b in dpi.bodies), timeout=30)  # F5

            async def in_eparcours() -> bool:  # F4 (and F1's Patient mirror)
                async with http.get(f"http://127.0.0.1:{eparcours}/DocumentReference") as r:
                    return bool((await r.json()).get("total"))

            await wait_until(in_eparcours, timeout=30)
            [oru] = await store.search(SearchQuery(control_id="LAB0001"))
            assert {d.destination: d.status for d in (await store.deliveries([oru.message.id]))[oru.message.id]} == {
                "dmp": "delivered", "dpi": "delivered"}  # fmt: skip
            mdm = next(b for b in dpi.bodies if b.split(b"|")[8].startswith(b"MDM"))
            assert b"^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS" in mdm  # the INS in PID-3
            if hub.listeners["imap"].available:  # the tour's IMAP step (Dovecot installed: always in CI)
                pki = tmp_path / "var" / "mssante-pki"
                store_dir = MailboxStore(tmp_path / "var" / "mailboxes")
                await wait_until(lambda: store_dir.messages("dpi-integration@hub.mssante.fr"), timeout=30)
                subjects = await asyncio.to_thread(read_application_mailbox, ports[1993], pki)
                assert len(subjects) == 1 and subjects[0].startswith("XDM/1.0/DDM")
            elif os.environ.get("CI") == "true":
                raise AssertionError("Dovecot must run in CI (make test installs dovecot-imapd)")
            await client.close()
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    events = {json.loads(line)["event"] for line in text.splitlines() if line.strip()}
    assert {"hub_started", "listener_started", "sandbox_started"} <= events
    leaked = [s for s in SECRETS if s in text]
    assert leaked == [], f"health data in the logs: {leaked}"
