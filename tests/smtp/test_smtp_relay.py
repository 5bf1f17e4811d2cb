"""The hub's SMTP ports on real sockets: STARTTLS first, certificates, AUTH, trust list; no open relay."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from adapters.smtp.mailstore import MailboxStore
from adapters.tls import TlsConfig, client_context
from hub.runtime import Hub
from hub.store import SearchQuery
from tests.hubkit import running_hub, running_peer, wait_until
from tests.smtp.smtpkit import (
    APP_MAILBOX,
    DOCTOR,
    HUB_DOMAIN,
    PASSWORD,
    PEER_DOMAIN,
    PRESCRIBER,
    USER,
    Setup,
    command,
    connect,
    data_reply,
    hub_config,
)
from tests.tlskit import make_pki

SIMPLE = (
    f"From: {DOCTOR}\r\nTo: {PRESCRIBER}\r\nSubject: test\r\nMessage-ID: <simple-1@{HUB_DOMAIN}>\r\n\r\nBonjour.\r\n"
).encode()


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, Setup]]:
    setup = Setup(tmp_path)
    async with running_peer() as dpi, running_hub(hub_config(setup, dpi_port=dpi.port)) as running:
        yield running, setup


def plain_auth(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def stored_count(hub: Hub) -> int:
    return len(await hub.store.search(SearchQuery()))  # type: ignore[union-attr]


async def test_mta_wants_starttls_then_a_certificate_from_the_trust_anchors(
    hub: tuple[Hub, Setup], tmp_path: Path
) -> None:
    running, setup = hub
    # RFC 3207 §4: nothing but EHLO/STARTTLS/NOOP/QUIT before TLS.
    smtp = await connect(setup.mta_port, None, starttls=False)
    assert "starttls" in smtp.esmtp_extensions
    code, _ = await command(smtp, "MAIL FROM:<lab@peer.mssante.fr>")
    assert code == 530
    smtp.close()
    # TLS, but no client certificate: refused in SMTP, with a reason.
    smtp = await connect(setup.mta_port, setup.plain_client_context())
    assert "auth" not in smtp.esmtp_extensions  # peers authenticate with certificates, not passwords
    code, text = await command(smtp, "MAIL FROM:<lab@peer.mssante.fr>")
    assert (code, text.split()[0]) == (530, "5.7.0")
    smtp.close()
    # A certificate from another CA fails the TLS handshake.
    other = make_pki(tmp_path / "other", ca_name="Not IGC-Sante")
    stranger = client_context(
        TlsConfig(ca_file=str(setup.ca), cert_file=str(other.client_cert), key_file=str(other.client_key))
    )
    with pytest.raises((ssl.SSLError, aiosmtplib.SMTPException, ConnectionError)):
        smtp = await connect(setup.mta_port, stranger)
        await command(smtp, "MAIL FROM:<lab@peer.mssante.fr>")
    # The peer operator's certificate is accepted.
    smtp = await connect(setup.mta_port, setup.peer_client_context())
    assert (await command(smtp, "MAIL FROM:<lab@peer.mssante.fr>"))[0] == 250
    await smtp.quit()
    assert await stored_count(running) == 0


async def test_mta_takes_trust_space_senders_for_hosted_mailboxes_only(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    smtp = await connect(setup.mta_port, setup.peer_client_context())
    code, text = await command(smtp, "MAIL FROM:<spammer@evil.example>")
    assert (code, text.split()[0]) == (550, "5.7.1") and "evil" not in text
    await command(smtp, "RSET")
    # RFC 5321 §4.5.5: the null sender (bounces, MDNs) is accepted.
    assert (await command(smtp, "MAIL FROM:<>"))[0] == 250
    code, text = await command(smtp, "RCPT TO:<someone@gmail.com>")
    assert (code, text.split()[0]) == (550, "5.7.1") and "gmail" not in text  # no relay through the MTA port
    code, text = await command(smtp, f"RCPT TO:<nobody@{HUB_DOMAIN}>")
    assert (code, text.split()[0]) == (550, "5.1.1") and "nobody" not in text
    code, text = await command(smtp, "RCPT TO:<279035121518989@patient.mssante.fr>")
    assert code == 550 and "279035121518989" not in text  # never echo an address (a patient's is an INS)
    assert (await command(smtp, f"RCPT TO:<{DOCTOR}>"))[0] == 250
    await smtp.quit()
    assert await stored_count(running) == 0


async def test_submission_needs_tls_then_auth_and_relays_to_the_trust_space_only(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    smtp = await connect(setup.submission_port, None, starttls=False)
    assert "auth" not in smtp.esmtp_extensions  # never offered in clear
    assert (await command(smtp, f"AUTH PLAIN {plain_auth(USER, PASSWORD)}"))[0] == 530
    smtp.close()

    smtp = await connect(setup.submission_port, setup.plain_client_context())
    assert smtp.supports_extension("auth")
    code, text = await command(smtp, f"MAIL FROM:<{DOCTOR}>")
    assert (code, text.split()[0]) == (530, "5.7.0")  # unauthenticated relay: refused
    assert (await command(smtp, f"AUTH PLAIN {plain_auth(USER, 'wrong')}"))[0] == 535
    assert (await command(smtp, f"AUTH PLAIN {plain_auth(USER, PASSWORD)}"))[0] == 235
    code, text = await command(smtp, f"MAIL FROM:<{PRESCRIBER}>")
    assert (code, text.split()[0]) == (553, "5.7.1")  # not one of this login's addresses
    assert (await command(smtp, f"MAIL FROM:<{DOCTOR}>"))[0] == 250
    code, text = await command(smtp, "RCPT TO:<friend@gmail.com>")
    assert (code, text.split()[0]) == (554, "5.7.1") and "gmail" not in text  # outside the trust space
    code, text = await command(smtp, f"RCPT TO:<nobody@{HUB_DOMAIN}>")
    assert (code, text.split()[0]) == (550, "5.1.1")
    assert (await command(smtp, f"RCPT TO:<{PRESCRIBER}>"))[0] == 250
    response = await smtp.data(SIMPLE)
    assert response.code == 250
    await smtp.quit()

    peer = running.sandboxes["mssante_peer"]
    await wait_until(lambda: len(peer.received) == 1)
    got = peer.received[0]
    assert got["envelope"] == {"mail_from": DOCTOR, "rcpt_tos": [PRESCRIBER]}
    assert got["tls_peer"] == "localhost"  # the hub's client certificate (hub.pem)
    assert got["raw"].startswith(b"Received: from client.test")  # RFC 5321 §4.4 trace line
    stored = await running.store.search(SearchQuery())  # type: ignore[union-attr]
    assert [r.message.metadata["auth_user"] for r in stored] == [USER]


async def test_login_mechanism_and_too_many_failures(hub: tuple[Hub, Setup]) -> None:
    _, setup = hub
    smtp = await connect(setup.submission_port, setup.plain_client_context())
    await smtp.login(USER, PASSWORD)  # aiosmtplib picks PLAIN or LOGIN; both are offered
    smtp.close()
    smtp = await connect(setup.submission_port, setup.plain_client_context())
    assert (await command(smtp, "AUTH LOGIN"))[0] == 334
    assert (await command(smtp, base64.b64encode(USER.encode()).decode()))[0] == 334
    assert (await command(smtp, base64.b64encode(PASSWORD.encode()).decode()))[0] == 235
    smtp.close()
    smtp = await connect(setup.submission_port, setup.plain_client_context())
    assert (await command(smtp, f"AUTH PLAIN {plain_auth('nobody', 'x')}"))[0] == 535
    assert (await command(smtp, f"AUTH PLAIN {plain_auth(USER, 'x')}"))[0] == 535
    assert (await command(smtp, f"AUTH PLAIN {plain_auth(USER, 'y')}"))[0] == 421
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await command(smtp, "NOOP")


async def test_size_limit_and_local_delivery(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    smtp = await connect(setup.submission_port, setup.plain_client_context())
    await smtp.login(USER, PASSWORD)
    code, _ = await command(smtp, f"MAIL FROM:<{DOCTOR}> SIZE={5 * 2**20}")
    assert code == 552  # RFC 1870: declared size over the limit
    big = SIMPLE + (b"x" * 76 + b"\r\n") * 70_000  # 5.4 MB in lines of 78
    assert (await data_reply(smtp, DOCTOR, [PRESCRIBER], big))[0] == 552
    # A mail between two mailboxes of the hub is delivered into the recipient's Maildir, not relayed.
    local = SIMPLE.replace(PRESCRIBER.encode(), DOCTOR.encode()).replace(b"simple-1", b"simple-2")
    assert (await data_reply(smtp, DOCTOR, [DOCTOR], local))[0] == 250
    await smtp.quit()
    store = MailboxStore(setup.mailbox_dir)
    await wait_until(lambda: len(store.messages(DOCTOR)) == 1)
    assert store.messages(DOCTOR)[0].endswith(b"Bonjour.\r\n")
    assert running.sandboxes["mssante_peer"].received == type(running.sandboxes["mssante_peer"].received)()


async def test_peer_operator_mail_for_a_personal_mailbox(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    peer = running.sandboxes["mssante_peer"]
    mail = f"From: lab@{PEER_DOMAIN}\r\nTo: {DOCTOR}\r\nSubject: hello\r\nMessage-ID: <p1@{PEER_DOMAIN}>\r\n\r\nHi\r\n"
    code, _ = await peer.send_mail([DOCTOR], mail.encode())
    assert code == 250
    store = MailboxStore(setup.mailbox_dir)
    await wait_until(lambda: len(store.messages(DOCTOR)) == 1)
    stored = await running.store.search(SearchQuery())  # type: ignore[union-attr]
    assert stored[0].message.metadata["tls_peer"] == "mx.peer.mssante.fr"
    assert (
        stored[0].message.metadata["rcpt_application"] == ""
        and APP_MAILBOX not in stored[0].message.metadata["rcpt_to"]
    )


async def test_connections_over_the_limit_get_421(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    async with (
        running_peer() as dpi,
        running_hub(hub_config(setup, dpi_port=dpi.port, mta={"max_connections": 1})),
    ):
        first = await connect(setup.mta_port, setup.peer_client_context())
        assert (await command(first, f"MAIL FROM:<{PRESCRIBER}>"))[0] == 250  # proven: it keeps its slot
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.mta_port)
        assert (await reader.readline()).startswith(b"421 4.3.2")
        writer.close()
        await first.quit()
        again = await connect(setup.mta_port, setup.peer_client_context())  # a slot is free again
        await again.quit()
