"""Mail identity on real sockets: no peer may send as one of our users, submission binds From: to the login,
and password guessing is slowed across connections. Each refusal is audited; refused mail is stored."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from hub.runtime import Hub
from hub.store import SearchQuery
from tests.hubkit import running_hub, running_peer
from tests.smtp.smtpkit import (
    DOCTOR,
    HUB_DOMAIN,
    PASSWORD,
    PRESCRIBER,
    USER,
    Setup,
    client_from,
    command,
    data_reply,
    hub_config,
)  # fmt: skip

THROTTLE = {"auth_failures_per_user": 4, "auth_failures_per_peer": 6, "max_auth_failures": 2}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, Setup]]:
    setup = Setup(tmp_path)
    async with running_peer() as dpi, running_hub(hub_config(setup, dpi_port=dpi.port, submission=THROTTLE)) as hub:
        yield hub, setup


def mail(sender: str, rcpt: str, tag: str, *, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\n{extra}To: {rcpt}\r\nSubject: t\r\nMessage-ID: <{tag}@x.test>\r\n\r\nBonjour.\r\n"
    ).encode()


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def refused_and_closed(smtp: aiosmtplib.SMTP, line: str) -> bool:
    """421 and the connection closed (the client may see the close before it reads the 421 line)."""
    try:
        return (await command(smtp, line))[0] == 421
    except aiosmtplib.SMTPServerDisconnected:
        return True


async def audit_actions(hub: Hub) -> list[tuple[str, str, str]]:
    entries = await hub.store.list_audit(limit=1000)  # type: ignore[union-attr]
    return [(e.action, e.actor, e.outcome) for e in reversed(entries)]


async def test_peer_operator_cannot_send_as_one_of_our_users(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    smtp = await client_from(setup.mta_port, "127.0.0.1", setup, peer_cert=True)  # a valid trust-space certificate
    code, text = await command(smtp, f"MAIL FROM:<{DOCTOR}>")
    assert code == 550 and text.startswith("5.7.1")
    await command(smtp, "RSET")
    # Envelope from the peer's own domain, but the From: header claims our user: refused at DATA and stored.
    forged = mail(f"Dr House <{DOCTOR}>", DOCTOR, "forged-1")
    code, text = await data_reply(smtp, PRESCRIBER, [DOCTOR], forged)
    assert code == 550 and text.startswith("5.7.1")
    sender_header = mail(PRESCRIBER, DOCTOR, "forged-2", extra=f"Sender: <{DOCTOR.upper()}>\r\n")
    assert (await data_reply(smtp, PRESCRIBER, [DOCTOR], sender_header))[0] == 550
    # The peer's own users still get through.
    assert (await data_reply(smtp, PRESCRIBER, [DOCTOR], mail(PRESCRIBER, DOCTOR, "genuine")))[0] == 250
    await smtp.quit()
    rejected = await running.store.search(SearchQuery(status="rejected"))  # type: ignore[union-attr]
    assert sorted(r.message.metadata["mail_message_id"] for r in rejected) == ["<forged-1@x.test>", "<forged-2@x.test>"]
    assert all("hosted here" in (r.reason or "") for r in rejected)
    refusals = [a for a in await audit_actions(running) if a[0] == "mail_sender_refused"]
    assert [(o, actor) for _, actor, o in refusals] == [("refused", "mx.peer.mssante.fr")] * 3


async def test_submission_binds_the_from_header_to_the_login(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    smtp = await client_from(setup.submission_port, "127.0.0.1", setup, peer_cert=False)
    await smtp.login(USER, PASSWORD)
    code, _ = await command(smtp, f"MAIL FROM:<other@{HUB_DOMAIN}>")
    assert code == 553  # the envelope sender was already bound
    await command(smtp, "RSET")
    for tag, header in (("s1", f"Chef <chef@{HUB_DOMAIN}>"), ("s2", f"{DOCTOR}, chef@{HUB_DOMAIN}"), ("s3", "")):
        code, text = await data_reply(smtp, DOCTOR, [PRESCRIBER], mail(header, PRESCRIBER, tag))
        assert (code, text[:5]) == (550, "5.7.1"), tag
    code, _ = await data_reply(smtp, DOCTOR, [PRESCRIBER], mail(f"Dr House <{DOCTOR.upper()}>", PRESCRIBER, "ok"))
    assert code == 250
    await smtp.quit()
    rejected = await running.store.search(SearchQuery(status="rejected"))  # type: ignore[union-attr]
    assert len(rejected) == 3 and all("addresses of this login" in (r.reason or "") for r in rejected)
    assert [a for a in await audit_actions(running) if a[0] == "mail_sender_refused"] == [
        ("mail_sender_refused", USER, "refused")
    ] * 3


async def test_password_guessing_is_throttled_across_connections(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    # Two guesses a connection (then 421), over two connections: four failures for the name.
    for _ in range(2):
        smtp = await client_from(setup.submission_port, "127.0.0.1", setup, peer_cert=False)
        assert (await command(smtp, f"AUTH PLAIN {plain(USER, 'guess-a')}"))[0] == 535
        assert await refused_and_closed(smtp, f"AUTH PLAIN {plain(USER, 'guess-b')}")
        smtp.close()
    # Now even the right password is not checked for that name, from any address.
    smtp = await client_from(setup.submission_port, "127.0.0.2", setup, peer_cert=False)
    code, text = await command(smtp, f"AUTH PLAIN {plain(USER, PASSWORD)}")
    assert (code, text[:5]) == (454, "4.7.0")
    smtp.close()
    # One address trying many names is stopped too (6 failures), though each name failed only once.
    for i in range(3):
        smtp = await client_from(setup.submission_port, "127.0.0.3", setup, peer_cert=False)
        assert (await command(smtp, f"AUTH PLAIN {plain(f'name{i}a', 'x')}"))[0] == 535
        assert await refused_and_closed(smtp, f"AUTH PLAIN {plain(f'name{i}b', 'x')}")
        smtp.close()
    smtp = await client_from(setup.submission_port, "127.0.0.3", setup, peer_cert=False)
    assert (await command(smtp, f"AUTH PLAIN {plain('name9', 'x')}"))[0] == 454
    smtp.close()
    actions = await audit_actions(running)
    assert actions.count(("login_failed", USER, "refused")) == 4
    assert ("login_throttled", USER, "refused") in actions
    assert sum(1 for a in actions if a[0] == "login_failed") == 10
