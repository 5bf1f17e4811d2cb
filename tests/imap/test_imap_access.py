"""IMAP over TLS against a real Dovecot run by the hub: who opens which mailbox, and the mail is intact.

Clients are Python's imaplib; the mail comes from the peer operator sandbox over SMTP (STARTTLS, mutual TLS);
tokens come from the Pro Santé Connect sandbox through the authorization code flow.
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.sandboxes.mssante_peer import MssantePeer
from adapters.sandboxes.psc import PscSandbox
from adapters.smtp.mailstore import MailboxStore
from hub.runtime import Hub
from mappings.mssante.mail import parse_mail
from tests.hubkit import running_hub, running_peer, wait_until
from tests.imap.imapkit import (
    DOCTOR_ID,
    NURSE_ID,
    ORG_MAILBOX,
    ORG_PASSWORD,
    OTHER_ID,
    ImapSetup,
    attachment,
    imap_hub_config,
    imaps,
    inbox,
    login_bearer,
    login_external,
)
from tests.smtp.smtpkit import APP_MAILBOX, DOCTOR

pytestmark = pytest.mark.usefixtures("needs_dovecot")


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, ImapSetup]]:
    setup = ImapSetup(tmp_path)
    async with running_peer() as dpi, running_hub(imap_hub_config(setup, dpi_port=dpi.port)) as running:
        yield running, setup


def psc(hub: Hub) -> PscSandbox:
    sandbox = hub.sandboxes["psc"]
    assert isinstance(sandbox, PscSandbox)
    return sandbox


async def receive(hub: Hub, setup: ImapSetup, to: list[str]) -> bytes:
    """A document mail from the peer operator to `to`; returns what the peer sent, once it is in the Maildirs."""
    peer = hub.sandboxes["mssante_peer"]
    assert isinstance(peer, MssantePeer)
    mail = peer.sample_mail(to)
    code, reply = await peer.send_mail(to, mail)
    assert code == 250, reply
    store = MailboxStore(setup.mailbox_dir)
    await wait_until(lambda: all(store.messages(a) for a in to))
    return mail


async def psc_token(setup: ImapSetup, id_nat: str) -> str:
    """An access token through the sandbox's authorization code flow (the professional chosen by login_hint)."""
    params = {
        "response_type": "code", "client_id": "hub-mail", "redirect_uri": "http://127.0.0.1/cb",
        "scope": "openid scope_all", "state": "s1", "login_hint": id_nat,
    }  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{setup.issuer}/authorize", params=params, allow_redirects=False) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
        code = dict(p.split("=", 1) for p in location.split("?", 1)[1].split("&"))["code"]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1/cb"}
        basic = base64.b64encode(b"hub-mail:hub-mail-secret").decode()
        async with http.post(f"{setup.issuer}/token", data=form, headers={"Authorization": f"Basic {basic}"}) as resp:
            assert resp.status == 200
            return str((await resp.json())["access_token"])


def refused(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except imaplib.IMAP4.error:
        return True
    return False


async def test_a_professionals_card_opens_their_mailbox_and_the_peer_mail_is_intact(
    hub: tuple[Hub, ImapSetup],
) -> None:
    running, setup = hub
    sent = await receive(running, setup, [DOCTOR])
    card = setup.card(DOCTOR_ID)

    mails = await asyncio.to_thread(lambda: inbox(login_external(setup, card, DOCTOR)))

    assert len(mails) == 1
    original = parse_mail(sent)
    assert mails[0]["Message-ID"] == original["Message-ID"]
    expected = next(p for p in original.iter_attachments() if p.get_filename() == "IHE_XDM.ZIP").get_content()
    assert attachment(mails[0], "IHE_XDM.ZIP") == expected  # byte for byte, through the hub and Dovecot


async def test_a_card_opens_no_other_mailbox(hub: tuple[Hub, ImapSetup]) -> None:
    running, setup = hub
    await receive(running, setup, [DOCTOR, APP_MAILBOX])
    card = setup.card(DOCTOR_ID)
    stranger = setup.card(OTHER_ID)  # trusted CA, but linked to no mailbox
    foreign = setup.card(DOCTOR_ID, trusted=False)  # the right name from a CA outside the trust anchors

    # Linked to DOCTOR and ORG_MAILBOX: it must say which (authzid), and cannot name the application's.
    assert await asyncio.to_thread(refused, lambda: login_external(setup, card))
    assert await asyncio.to_thread(refused, lambda: login_external(setup, card, APP_MAILBOX))
    assert await asyncio.to_thread(refused, lambda: login_external(setup, stranger, DOCTOR))
    assert await asyncio.to_thread(refused, lambda: login_external(setup, foreign, DOCTOR))
    # A card holder cannot fall back on another mechanism to open someone else's mailbox.
    client = await asyncio.to_thread(imaps, setup, card)
    assert await asyncio.to_thread(refused, lambda: client.login(APP_MAILBOX, "anything"))
    await asyncio.to_thread(client.shutdown)
    # The organisational mailbox it is linked to opens.
    assert await asyncio.to_thread(lambda: inbox(login_external(setup, card, ORG_MAILBOX))) == []


async def test_an_application_opens_its_mailbox_with_its_own_certificate(hub: tuple[Hub, ImapSetup]) -> None:
    running, setup = hub
    sent = await receive(running, setup, [APP_MAILBOX])
    app_cert = setup.card("dpi.hub.test")

    mails = await asyncio.to_thread(lambda: inbox(login_external(setup, app_cert)))

    assert [m["Message-ID"] for m in mails] == [parse_mail(sent)["Message-ID"]]
    assert attachment(mails[0], "IHE_XDM.ZIP")[:2] == b"PK"


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
async def test_a_psc_token_opens_the_professionals_mailbox_only(hub: tuple[Hub, ImapSetup], mechanism: str) -> None:
    running, setup = hub
    await receive(running, setup, [DOCTOR])
    token = await psc_token(setup, DOCTOR_ID)

    mails = await asyncio.to_thread(lambda: inbox(login_bearer(setup, DOCTOR, token, mechanism)))
    assert len(mails) == 1
    # Not the application's mailbox (certificate only); over IMAP a token opens one mailbox, the personal one
    # (Dovecot 2.3 compares one user name with the introspection's): the organisational one by card.
    assert await asyncio.to_thread(refused, lambda: login_bearer(setup, APP_MAILBOX, token, mechanism))
    assert await asyncio.to_thread(refused, lambda: login_bearer(setup, ORG_MAILBOX, token, mechanism))
    # A member of the organisational mailbox with no personal one here opens it; nothing else.
    nurse = await psc_token(setup, NURSE_ID)
    assert await asyncio.to_thread(lambda: inbox(login_bearer(setup, ORG_MAILBOX, nurse, mechanism))) == []
    assert await asyncio.to_thread(refused, lambda: login_bearer(setup, DOCTOR, nurse, mechanism))
    # A professional with no mailbox here opens nothing.
    other = await psc_token(setup, OTHER_ID)
    assert await asyncio.to_thread(refused, lambda: login_bearer(setup, DOCTOR, other, mechanism))


async def test_expired_forged_and_foreign_issuer_tokens_are_refused(hub: tuple[Hub, ImapSetup]) -> None:
    running, setup = hub
    sandbox = psc(running)
    expired = sandbox.issue(DOCTOR_ID, lifetime_secs=-120)  # expired two minutes ago (beyond the 30 s leeway)
    now = int(time.time())
    claims = {"iss": setup.issuer, "exp": now + 300, "iat": now, "preferred_username": DOCTOR_ID}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": sandbox.kid})  # right kid, wrong key
    foreign = PscSandbox("other", type(sandbox.config)(listen="127.0.0.1:0", issuer="https://other-idp.test"))
    foreign_token = foreign.issue(DOCTOR_ID)
    hmac_token = jwt.encode(claims, "s" * 32, algorithm="HS256")  # alg confusion: never accepted

    for token in (expired, forged, foreign_token, hmac_token, "not-a-jwt"):
        assert await asyncio.to_thread(refused, lambda t=token: login_bearer(setup, DOCTOR, t))
    # The same professional's valid token still opens it: what was refused was the token.
    fresh = sandbox.issue(DOCTOR_ID)
    assert len(await asyncio.to_thread(lambda: inbox(login_bearer(setup, DOCTOR, fresh)))) == 0


async def test_passwords_open_nothing_unless_the_mailbox_kind_allows_them(hub: tuple[Hub, ImapSetup]) -> None:
    _, setup = hub
    # ORG_MAILBOX has a password hash, but password_kinds is empty (the default): no password login at all.
    client = await asyncio.to_thread(imaps, setup)
    assert await asyncio.to_thread(refused, lambda: client.login(ORG_MAILBOX, ORG_PASSWORD))
    await asyncio.to_thread(client.shutdown)


async def test_a_password_opens_an_allowed_kind_over_tls_only(tmp_path: Path) -> None:
    setup = ImapSetup(tmp_path)
    config = imap_hub_config(setup, dpi_port=1, password_kinds=["organisational"])
    async with running_hub(config):
        client = await asyncio.to_thread(imaps, setup)
        assert await asyncio.to_thread(refused, lambda: client.login(ORG_MAILBOX, "wrong password"))
        await asyncio.to_thread(client.shutdown)
        client = await asyncio.to_thread(imaps, setup)
        await asyncio.to_thread(client.login, ORG_MAILBOX, ORG_PASSWORD)
        typ, data = await asyncio.to_thread(client.getquotaroot, "INBOX")
        assert typ == "OK" and b"STORAGE 0 9766" in data[1][0]  # quota_bytes 10 000 000, in KiB (rounded up)
        await asyncio.to_thread(client.logout)
        # The STARTTLS port (TM3.1C). Dovecot counts a loopback client as secured (plaintext allowed from
        # 127.0.0.1 only, whatever `ssl = required`), so the refusal before STARTTLS is not observable here.
        plain = await asyncio.to_thread(imaplib.IMAP4, "127.0.0.1", setup.imap_port, 10)
        await asyncio.to_thread(plain.starttls, setup.client_context())
        await asyncio.to_thread(plain.login, ORG_MAILBOX, ORG_PASSWORD)
        await asyncio.to_thread(plain.logout)


async def test_a_certificate_from_outside_the_trust_anchors_gets_no_mailbox(hub: tuple[Hub, ImapSetup]) -> None:
    _, setup = hub
    foreign = setup.card("dpi.hub.test", trusted=False)
    assert await asyncio.to_thread(refused, lambda: login_external(setup, foreign))
    with pytest.raises(ssl.SSLError):
        # ...and a client that does not trust the hub's certificate does not talk to it either.
        await asyncio.to_thread(
            imaplib.IMAP4_SSL, "127.0.0.1", setup.imaps_port, ssl_context=ssl.create_default_context(), timeout=10
        )


async def test_messages_past_the_mailbox_retention_are_expunged(hub: tuple[Hub, ImapSetup]) -> None:
    running, setup = hub
    store = MailboxStore(setup.mailbox_dir)
    old = await asyncio.to_thread(store.deliver, ORG_MAILBOX, b"Subject: old\r\n\r\nold\r\n", key="old")
    await asyncio.to_thread(store.deliver, ORG_MAILBOX, b"Subject: recent\r\n\r\nrecent\r\n", key="recent")
    forty_days_ago = time.time() - 40 * 86400
    os.utime(old, (forty_days_ago, forty_days_ago))  # Maildir INTERNALDATE: delivered 40 days ago
    card = setup.card(DOCTOR_ID)
    assert len(await asyncio.to_thread(lambda: inbox(login_external(setup, card, ORG_MAILBOX)))) == 2

    imap = running.listeners["imap"]
    assert await imap.apply_retention() >= 1  # ORG_MAILBOX keeps 30 days

    mails = await asyncio.to_thread(lambda: inbox(login_external(setup, card, ORG_MAILBOX)))
    assert [m["Subject"] for m in mails] == ["recent"]
    assert len(await asyncio.to_thread(lambda: inbox(login_external(setup, card, DOCTOR)))) == 0  # no retention set


async def test_dovecot_is_started_again_when_it_dies(hub: tuple[Hub, ImapSetup]) -> None:
    running, setup = hub
    imap = running.listeners["imap"]
    assert imap.is_serving()
    os.kill(imap._process.pid, signal.SIGKILL)
    await wait_until(lambda: not imap.is_serving(), timeout=10)
    assert (await running.health())["problems"] == {"listener imap": "not accepting connections"}
    await wait_until(imap.is_serving, timeout=40)
    app_cert = setup.card("dpi.hub.test")
    assert await asyncio.to_thread(lambda: inbox(login_external(setup, app_cert))) == []
