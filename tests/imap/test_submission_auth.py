"""SMTP submission with the MSSanté client credentials: the mailbox a card or a PSC token opens is the sender."""

from __future__ import annotations

import asyncio
import base64
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.sandboxes.mssante_peer import MssantePeer
from adapters.sandboxes.psc import PscSandbox
from hub.runtime import Hub
from tests.hubkit import running_hub, running_peer, wait_until
from tests.imap.imapkit import DOCTOR_ID, ORG_MAILBOX, ImapSetup, imap_hub_config
from tests.smtp.smtpkit import DOCTOR, PRESCRIBER

pytestmark = pytest.mark.usefixtures("needs_dovecot")

MAIL = b"From: <{sender}>\r\nTo: <" + PRESCRIBER.encode() + b">\r\nSubject: avis\r\n\r\nBonjour\r\n"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, ImapSetup]]:
    setup = ImapSetup(tmp_path)
    async with running_peer() as dpi, running_hub(imap_hub_config(setup, dpi_port=dpi.port)) as running:
        yield running, setup


def submit(setup: ImapSetup, card: tuple[Path, Path] | None, mechanism: str, response: bytes, sender: str) -> str:
    """STARTTLS, AUTH `mechanism` with `response`, then one mail from `sender`; the reply that ended it."""
    with smtplib.SMTP("127.0.0.1", setup.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.starttls(context=setup.client_context(card))
        smtp.ehlo()
        code, text = smtp.docmd("AUTH", f"{mechanism} {base64.b64encode(response).decode() or '='}")
        if code == 334:  # a bearer failure comes as a challenge first (RFC 7628 §3.2.2): answer %x01
            code, text = smtp.docmd(base64.b64encode(b"\x01").decode())
        if code != 235:
            return f"{code} {text.decode()}"
        code, text = smtp.docmd("MAIL", f"FROM:<{sender}>")
        if code != 250:
            return f"{code} {text.decode()}"
        smtp.rcpt(PRESCRIBER)
        code, text = smtp.data(MAIL.replace(b"{sender}", sender.encode()))
        return f"{code} {text.decode()}"


async def test_a_card_sends_as_its_mailbox_only(hub: tuple[Hub, ImapSetup]) -> None:
    running, setup = hub
    card = setup.card(DOCTOR_ID)
    assert (await asyncio.to_thread(submit, setup, card, "EXTERNAL", DOCTOR.encode(), DOCTOR)).startswith("250")
    peer = running.sandboxes["mssante_peer"]
    assert isinstance(peer, MssantePeer)
    await wait_until(lambda: len(peer.received) == 1)
    # Signed in as DOCTOR, it cannot send as the organisational mailbox it could also have opened.
    assert (await asyncio.to_thread(submit, setup, card, "EXTERNAL", DOCTOR.encode(), ORG_MAILBOX)).startswith("553")
    # No certificate: EXTERNAL opens nothing.
    assert (await asyncio.to_thread(submit, setup, None, "EXTERNAL", DOCTOR.encode(), DOCTOR)).startswith("535")


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
async def test_a_psc_token_sends_as_the_mailbox_it_opens(hub: tuple[Hub, ImapSetup], mechanism: str) -> None:
    running, setup = hub
    psc = running.sandboxes["psc"]
    assert isinstance(psc, PscSandbox)

    def sasl(user: str, token: str) -> bytes:
        if mechanism == "OAUTHBEARER":
            return f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()

    token = psc.issue(DOCTOR_ID)
    # On submission the client names the mailbox: the organisational one the professional is a member of too.
    for box in (DOCTOR, ORG_MAILBOX):
        assert (await asyncio.to_thread(submit, setup, None, mechanism, sasl(box, token), box)).startswith("250")
    expired = psc.issue(DOCTOR_ID, lifetime_secs=-120)
    assert (await asyncio.to_thread(submit, setup, None, mechanism, sasl(DOCTOR, expired), DOCTOR)).startswith("535")


async def test_garbage_sasl_responses_get_protocol_errors(hub: tuple[Hub, ImapSetup]) -> None:
    _, setup = hub

    def replies() -> list[int]:
        codes = []
        with smtplib.SMTP("127.0.0.1", setup.submission_port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.starttls(context=setup.client_context())
            smtp.ehlo()
            for args in ("XOAUTH2 !!!notbase64", "OAUTHBEARER " + base64.b64encode(b"garbage").decode(),
                         "XOAUTH2 " + base64.b64encode(b"\xff\xfe").decode(), "EXTERNAL " + "QQ" * 7000):  # fmt: skip
                code, _ = smtp.docmd("AUTH", args)
                if code == 334:
                    code, _ = smtp.docmd("*")
                codes.append(code)
            codes.append(smtp.noop()[0])  # the session is still usable
        return codes

    codes = await asyncio.to_thread(replies)
    assert codes[:3] == [501, 501, 501] and codes[3] in (500, 501, 535) and codes[-1] == 250


async def test_the_introspection_endpoint_answers_only_with_its_secret(hub: tuple[Hub, ImapSetup]) -> None:
    running, _ = hub
    imap = running.listeners["imap"]
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{imap._introspection_port}/introspect/guess"
        async with http.post(url, data={"token": "x"}) as r:
            assert r.status == 404
        url = f"http://127.0.0.1:{imap._introspection_port}/introspect/{imap._secret}"
        async with http.post(url, data={"token": "x"}) as r:
            assert r.status == 200 and await r.json() == {"active": False}
