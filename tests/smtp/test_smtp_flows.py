"""MSSanté end to end on real sockets with TLS: two operators, the fake DPI, MDN and DSN, hostile archives."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing

from adapters.sandboxes.mllp_peer import MllpPeer
from adapters.sandboxes.mssante_peer import TEST_INS, TEST_INS_OID, MssantePeer, synthetic_cda
from adapters.smtp.mailstore import MailboxStore
from hub.message import Message
from hub.runtime import Hub
from hub.store import SearchQuery
from mappings.hl7v2.er7 import Er7Message
from mappings.mssante.mail import build_document_mail, parse_mail
from mappings.mssante.reports import RecipientFailure, build_dsn, build_mdn, read_report
from mappings.xdm import read_xdm
from mappings.xml import parse_xml
from tests.conftest import free_port
from tests.hubkit import running_hub, running_peer, wait_until
from tests.sandboxauth import admin_headers
from tests.smtp.smtpkit import APP_MAILBOX, LAB_MAILBOX, PEER_DOMAIN, PRESCRIBER, Setup, hub_config, zip_of

CDA = "application/cda+xml"
PATIENT = f"{TEST_INS}@patient.mssante.fr"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, MllpPeer, Setup]]:
    setup = Setup(tmp_path)
    async with running_peer() as dpi, running_hub(hub_config(setup, dpi_port=dpi.port)) as running:
        yield running, dpi, setup


def peer_of(hub: Hub) -> MssantePeer:
    peer = hub.sandboxes["mssante_peer"]
    assert isinstance(peer, MssantePeer)
    return peer


async def messages(hub: Hub) -> list[Any]:
    return await hub.store.search(SearchQuery())  # type: ignore[union-attr]


async def deliveries(hub: Hub, message_id: str) -> list[Any]:
    return (await hub.store.deliveries([message_id]))[message_id]  # type: ignore[union-attr]


def segment(er7: bytes, name: str) -> list[str]:
    for seg in er7.decode().split("\r"):
        if seg.startswith(name + "|"):
            return seg.split("|")
    raise AssertionError(f"no {name}")


async def test_incoming_xdm_reaches_the_dpi_as_mdm_t02_with_the_ins_and_an_mdn_goes_back(
    hub: tuple[Hub, MllpPeer, Setup],
) -> None:
    running, dpi, _ = hub
    peer = peer_of(running)
    mail = peer.sample_mail([APP_MAILBOX], request_mdn=True)
    sent_id = str(parse_mail(mail)["Message-ID"])
    code, reply = await peer.send_mail([APP_MAILBOX], mail)
    assert code == 250 and "queued" in reply

    await wait_until(lambda: len(dpi.bodies) == 1)
    mdm = dpi.bodies[0]
    assert Er7Message(mdm).value("MSH", 9, 2) == "T02"
    pid = segment(mdm, "PID")
    assert f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&{TEST_INS_OID}&ISO^INS" in pid[3].split("~")  # PID-3, CX-5 INS
    assert pid[32] == "VALI"
    rct = next(s.split("|") for s in mdm.decode().split("\r") if s.startswith("PRT||UC||RCT"))
    assert rct[8].startswith("Service de biologie") and rct[15] == f"^^X.400^{APP_MAILBOX}"
    assert segment(mdm, "OBX")[5].startswith("^text^XML^Base64^")

    # RFC 8098 MDN "processed" back to the sender, through the hub's own SMTP client.
    await wait_until(lambda: len(peer.received) == 1)
    got = peer.received[0]
    assert got["envelope"]["rcpt_tos"] == [f"lab@{PEER_DOMAIN}"]
    assert got["envelope"]["mail_from"] in ("", "<>")  # null return path
    report = read_report(parse_mail(got["raw"]))
    assert report is not None and report.kind == "mdn" and report.disposition == "processed"
    assert report.original_message_id == sent_id and report.final_recipient == APP_MAILBOX

    kinds = {r.message.metadata["mail_kind"]: r for r in await messages(running)}
    assert set(kinds) == {"mail", "document", "mdn"}
    doc = kinds["document"].message
    assert doc.parent_id == kinds["mail"].message.id and doc.content_type == CDA
    assert doc.metadata["ins"] == TEST_INS and doc.metadata["mail_recipient"] == APP_MAILBOX
    assert kinds["mail"].message.metadata["control_id"] == sent_id


async def test_the_mdn_waits_for_the_dpi_and_says_error_when_the_dpi_refuses(
    hub: tuple[Hub, MllpPeer, Setup],
) -> None:
    running, dpi, _ = hub
    peer = peer_of(running)
    dpi.ack = "AR"
    code, _ = await peer.send_mail([APP_MAILBOX], peer.sample_mail([APP_MAILBOX], request_mdn=True))
    assert code == 250

    async def document_dead() -> bool:
        docs = [r for r in await messages(running) if r.message.metadata["mail_kind"] == "document"]
        return bool(docs) and [d.status for d in await deliveries(running, docs[0].message.id)] == ["dead"]

    await wait_until(document_dead, timeout=20)
    await wait_until(lambda: len(peer.received) == 1)
    report = read_report(parse_mail(peer.received[0]["raw"]))
    assert report is not None and report.kind == "mdn" and report.disposition.endswith("processed/error")


async def test_no_mdn_goes_back_while_the_dpi_has_not_answered(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    port = free_port()
    async with running_hub(hub_config(setup, dpi_port=port)) as running:
        peer = peer_of(running)
        code, _ = await peer.send_mail([APP_MAILBOX], peer.sample_mail([APP_MAILBOX], request_mdn=True))
        assert code == 250
        # The DPI cannot be reached: the document waits (circuit open), and so does the MDN.
        worker = running.workers[("mss_documents_to_dpi", "dpi")]
        worker.probe_max_secs = 0.5  # probe often, so that the DPI's return is seen at once
        await wait_until(lambda: worker.probes >= 2, timeout=20)
        assert len(peer.received) == 0
        assert not [r for r in await messages(running) if r.message.metadata["mail_kind"] == "mdn"]
        async with running_peer(listen=f"127.0.0.1:{port}") as dpi:
            await wait_until(lambda: len(dpi.bodies) == 1, timeout=20)
            await wait_until(lambda: len(peer.received) == 1, timeout=20)
        report = read_report(parse_mail(peer.received[0]["raw"]))
        assert report is not None and report.disposition.endswith("processed")


async def test_a_mail_sent_again_after_a_lost_reply_is_kept_once(hub: tuple[Hub, MllpPeer, Setup]) -> None:
    running, dpi, _ = hub
    peer = peer_of(running)
    mail = peer.sample_mail([APP_MAILBOX])
    assert (await peer.send_mail([APP_MAILBOX], mail))[0] == 250
    assert (await peer.send_mail([APP_MAILBOX], mail))[0] == 250  # same Message-ID: a retry
    await wait_until(lambda: len(dpi.bodies) == 1)
    stored = await messages(running)
    assert sorted(r.message.metadata["mail_kind"] for r in stored) == ["document", "mail"]


HOSTILE = {
    "zip bomb": lambda: zip_of([("IHE_XDM/SUBSET01/DOC00001.XML", b" " * (20 * 2**20))]),
    "dot-dot path": lambda: zip_of([("IHE_XDM/SUBSET01/../../../etc/cron.d/x", b"* * * * * root id")]),
    "10,000 entries": lambda: zip_of([(f"IHE_XDM/SUBSET01/F{i:05d}.XML", b"") for i in range(10_000)]),
    "nested zip": lambda: zip_of([("IHE_XDM/SUBSET01/DOC00001.XML", zip_of([("inner.xml", b"<x/>")]))]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_archives_get_554_and_stay_in_quarantine(hub: tuple[Hub, MllpPeer, Setup], case: str) -> None:
    running, dpi, _ = hub
    peer = peer_of(running)
    mail = build_document_mail(
        sender=f"lab@{PEER_DOMAIN}",
        recipients=[APP_MAILBOX],
        subject="XDM/1.0/DDM+CR",
        body="Bonjour\n",
        message_id=f"<hostile-{len(case)}@{PEER_DOMAIN}>",
        date=dt.datetime.now(dt.UTC),
        xdm=HOSTILE[case](),
        disposition_notification_to=f"lab@{PEER_DOMAIN}" if case == "nested zip" else None,
    )
    code, text = await peer.send_mail([APP_MAILBOX], mail)
    assert code == 554 and text.startswith("5.6.0 Message refused: archive refused")
    assert "cron" not in text and "inner" not in text  # the reply never quotes the archive
    (stored,) = [r for r in await messages(running) if r.message.metadata.get("mail_kind") == "mail"]
    assert stored.status == "rejected" and stored.reason.startswith("archive refused")
    assert stored.message.body.endswith(mail.split(b"\r\n\r\n", 1)[1])  # kept as received, for a replay
    if case == "nested zip":
        # The sender asked for an MDN: it gets one "processed/error", subject [KO Intégration système !][906].
        await wait_until(lambda: len(peer.received) == 1)
        report = read_report(parse_mail(peer.received[0]["raw"]))
        assert report is not None and report.disposition == "processed/error" and report.error.startswith("906^")
        assert peer.received[0]["subject"].startswith("[KO Intégration système !][906] XDM/1.0/DDM+CR")
    assert dpi.bodies == []


async def test_lab_result_to_the_prescriber_and_the_patient(hub: tuple[Hub, MllpPeer, Setup]) -> None:
    running, _, setup = hub
    peer = peer_of(running)
    result = Message.new(
        synthetic_cda(),
        content_type=CDA,
        metadata={
            "message_type": "CR-BIO",
            "mssante_recipients": PRESCRIBER,
            "ins": TEST_INS,
            "ins_oid": TEST_INS_OID,
            "identity_status": "qualifiee",
            "dest_mss_patient": "Y",
            "mss_no_reply_patient": "Y",
            "ack_read_mss": "Y",
        },
    )
    await running.submit("mllp_in", result)
    await wait_until(lambda: len(peer.received) == 2)
    by_rcpt = {r["envelope"]["rcpt_tos"][0]: r for r in peer.received}
    assert set(by_rcpt) == {PRESCRIBER, PATIENT}
    for rcpt, got in by_rcpt.items():
        assert got["envelope"]["mail_from"] == LAB_MAILBOX and got["tls_peer"] == "localhost"
        headers = dict(got["headers"])
        assert headers["Subject"] == "XDM/1.0/DDM+CR d'examens biologiques PAT-TROIS DOMINIQUE 28/03/1979"
        assert headers["Disposition-Notification-To"] == LAB_MAILBOX and headers["X-MSS-INS"] == "O"
        assert headers["X-MSS-CODECDA"] == "11502-2"
        assert ("X-MSS-MES" in headers) == (rcpt == PATIENT)  # FIN only on the patient's mail
        assert got["attachments"] == ["IHE_XDM.ZIP"]
        # A valid XDM: METADATA.XML and the CDA parse, and say the same thing.
        mail = parse_mail(got["raw"])
        (attachment,) = list(mail.iter_attachments())
        archive = read_xdm(attachment.get_payload(decode=True))
        assert {"INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML"} <= set(archive.names)
        (doc,) = archive.documents
        assert parse_xml(doc.data).tag == "{urn:hl7-org:v3}ClinicalDocument"
        assert doc.meta.patient_id == f"{TEST_INS}^^^&{TEST_INS_OID}&ISO^NH"
        assert got["xdm"]["documents"][0]["cda_ok"] is True
    assert by_rcpt[PATIENT]["message_id"] != by_rcpt[PRESCRIBER]["message_id"]

    # The listing a script reads over HTTP.
    url = f"http://127.0.0.1:{running.http_port}/sandboxes/mssante_peer/messages"
    async with aiohttp.ClientSession() as http, http.get(url, headers=admin_headers(running)) as resp:
        listing = json.loads(await resp.text())
    assert {m["envelope"]["rcpt_tos"][0] for m in listing} == {PRESCRIBER, PATIENT}
    assert all(m["xdm"]["entries"] and "raw" not in m for m in listing)

    # The prescriber's software answers with an MDN: the hub matches it to the result it sent.
    original = by_rcpt[PRESCRIBER]
    mdn = build_mdn(
        original["raw"],
        to=LAB_MAILBOX,
        final_recipient=PRESCRIBER,
        original_recipient=PRESCRIBER,
        original_message_id=original["message_id"],
        original_subject=dict(original["headers"])["Subject"],
        reporting_ua=f"mx.{PEER_DOMAIN}",
        message_id=f"<mdn-1@{PEER_DOMAIN}>",
        date=dt.datetime.now(dt.UTC),
    )
    assert (await peer.send_mail([LAB_MAILBOX], mdn, sender=""))[0] == 250
    acks = [r.message.metadata for r in await messages(running) if r.message.metadata.get("mail_kind") == "ack"]
    assert len(acks) == 1
    assert acks[0]["ack_kind"] == "mdn" and acks[0]["ack_disposition"] == "processed"
    assert acks[0]["ack_for_message_id"] == result.id and acks[0]["ack_matched"] == "true"
    assert acks[0]["ack_for_mail_id"] == original["message_id"]
    # ... and the original's trace finds it through the message-keys index.
    store = running.store
    assert store is not None
    [found] = await store.search(SearchQuery(ack_for=result.correlation_id))
    assert found.message.metadata["ack_kind"] == "mdn"
    del setup


async def test_patient_mailbox_needs_a_qualified_ins(hub: tuple[Hub, MllpPeer, Setup]) -> None:
    running, _, _ = hub
    result = Message.new(
        synthetic_cda(),
        content_type=CDA,
        metadata={"message_type": "CR-BIO", "ins": TEST_INS, "ins_oid": TEST_INS_OID, "identity_status": "provisoire",
                  "dest_mss_patient": "Y"},
    )  # fmt: skip
    await running.submit("mllp_in", result)

    async def dead() -> bool:
        return [d.status for d in await deliveries(running, result.id)] == ["dead"]

    await wait_until(dead)
    (delivery,) = await deliveries(running, result.id)
    assert "qualified INS" in delivery.last_error and TEST_INS not in delivery.last_error
    assert len(peer_of(running).received) == 0


async def test_permanent_refusal_makes_a_dsn_for_the_local_sender(hub: tuple[Hub, MllpPeer, Setup]) -> None:
    running, _, setup = hub
    peer = peer_of(running)
    peer.rcpt_reply = "550 5.1.1 Mailbox unknown here"
    result = Message.new(
        synthetic_cda(), content_type=CDA, metadata={"message_type": "CR-BIO", "mssante_recipients": PRESCRIBER}
    )
    await running.submit("mllp_in", result)
    store = MailboxStore(setup.mailbox_dir)
    await wait_until(lambda: len(store.messages(LAB_MAILBOX)) == 1)
    report = read_report(parse_mail(store.messages(LAB_MAILBOX)[0]))
    assert report is not None and report.kind == "dsn" and report.disposition == "failed"
    assert report.status == "5.1.1" and report.final_recipient == PRESCRIBER

    async def dead() -> bool:
        return [d.status for d in await deliveries(running, result.id)] == ["dead"]

    await wait_until(dead)
    (delivery,) = await deliveries(running, result.id)
    assert "5.1.1" in delivery.last_error and PRESCRIBER not in delivery.last_error
    # The server's refusal is kept with the attempt, as it was written (the reply may name the mailbox).
    [attempt] = await running.store.attempts(delivery.id)  # type: ignore[union-attr]
    assert attempt.reply is not None and (attempt.reply.kind, attempt.reply.summary) == ("smtp", "550")
    assert attempt.reply.body == b"550 5.1.1 Mailbox unknown here" and attempt.outcome == "reject"


async def test_temporary_refusal_is_retried_until_accepted(hub: tuple[Hub, MllpPeer, Setup]) -> None:
    running, _, _ = hub
    peer = peer_of(running)
    peer.data_reply = "451 4.3.0 Busy, try later"
    result = Message.new(
        synthetic_cda(), content_type=CDA, metadata={"message_type": "CR-BIO", "mssante_recipients": PRESCRIBER}
    )
    await running.submit("mllp_in", result)

    async def retried() -> bool:
        return any(d.attempts >= 1 and d.status == "pending" for d in await deliveries(running, result.id))

    await wait_until(retried)
    peer.data_reply = None

    async def delivered() -> bool:
        return [d.status for d in await deliveries(running, result.id)] == ["delivered"]

    await wait_until(delivered)
    assert len(peer.received) == 1
    # Each attempt kept the server's final reply: the 451s, then the 250 that took the mail.
    (delivery,) = await deliveries(running, result.id)
    attempts = await running.store.attempts(delivery.id)  # type: ignore[union-attr]
    replies = [a.reply for a in attempts]
    assert all(r is not None and r.kind == "smtp" for r in replies) and len(replies) >= 2
    assert [r.body for r in replies[:-1] if r] == [b"451 4.3.0 Busy, try later"] * (len(replies) - 1)
    assert replies[-1] is not None and replies[-1].summary == "250" and replies[-1].body.startswith(b"250 ")


async def test_dsn_received_for_hub_mail_is_matched(hub: tuple[Hub, MllpPeer, Setup]) -> None:
    running, _, _ = hub
    peer = peer_of(running)
    result = Message.new(
        synthetic_cda(), content_type=CDA, metadata={"message_type": "CR-BIO", "mssante_recipients": PRESCRIBER}
    )
    await running.submit("mllp_in", result)
    await wait_until(lambda: len(peer.received) == 1)
    original = peer.received[0]
    # Later, the peer operator finds it cannot deliver (a mailbox closed): it sends a DSN back (RFC 3464).
    dsn = build_dsn(
        original["raw"],
        to=LAB_MAILBOX,
        postmaster=f"mailer-daemon@{PEER_DOMAIN}",
        reporting_mta=f"mx.{PEER_DOMAIN}",
        failures=[RecipientFailure(PRESCRIBER, "5.2.1", "550 5.2.1 mailbox disabled")],
        message_id=f"<dsn-1@{PEER_DOMAIN}>",
        date=dt.datetime.now(dt.UTC),
        arrival_date=dt.datetime.now(dt.UTC),
    )
    assert (await peer.send_mail([LAB_MAILBOX], dsn, sender=""))[0] == 250
    (ack,) = [r.message.metadata for r in await messages(running) if r.message.metadata.get("mail_kind") == "ack"]
    assert ack["ack_kind"] == "dsn" and ack["ack_disposition"] == "failed" and ack["ack_status"] == "5.2.1"
    assert ack["ack_for_message_id"] == result.id and ack["ack_final_recipient"] == PRESCRIBER


async def test_no_patient_data_in_log_events(
    hub: tuple[Hub, MllpPeer, Setup], caplog: pytest.LogCaptureFixture
) -> None:
    running, dpi, _ = hub
    peer = peer_of(running)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        assert (await peer.send_mail([APP_MAILBOX], peer.sample_mail([APP_MAILBOX], request_mdn=True)))[0] == 250
        bad = peer.sample_mail([APP_MAILBOX]).replace(b"IHE_XDM.ZIP", b"OTHER.ZIP")
        assert (await peer.send_mail([APP_MAILBOX], bad))[0] == 554
        await running.submit(
            "mllp_in",
            Message.new(
                synthetic_cda(),
                content_type=CDA,
                metadata={"message_type": "CR-BIO", "mssante_recipients": PATIENT, "ins": TEST_INS,
                          "ins_oid": TEST_INS_OID, "identity_status": "qualifiee"},
            ),
        )  # fmt: skip
        await wait_until(lambda: len(dpi.bodies) == 1 and len(peer.received) == 2)
    assert any(e["event"] == "smtp_refused" for e in events)  # the capture did see the hub's events
    text = json.dumps(events, default=str) + caplog.text
    for secret in (TEST_INS, "PAT-TROIS", "DOMINIQUE", "19790328"):
        assert secret not in text


async def test_451_when_the_hub_cannot_take_the_mail_now(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    routes = [
        {
            "route": "mss_documents_to_dpi",
            "from": "smtp_mta",
            "when": {"mail_kind": "document"},
            "steps": ["cda_to_v2_mdm_t02"],
            "to": [{"destination": "dpi", "paused": True}],
        }
    ]
    async with (
        running_peer() as dpi,
        running_hub(hub_config(setup, dpi_port=dpi.port, routes=routes, high_water_mark=1)) as running,
    ):
        peer = peer_of(running)
        assert (await peer.send_mail([APP_MAILBOX], peer.sample_mail([APP_MAILBOX])))[0] == 250
        # One undelivered document: the hub is at its high-water mark and says "try later" (RFC 5321 §4.2.1).
        code, text = await peer.send_mail([APP_MAILBOX], peer.sample_mail([APP_MAILBOX]))
        assert (code, text.split()[0]) == (451, "4.3.0")
        assert len(await messages(running)) == 2  # the first mail and its document, nothing of the second
