"""The data of an SMTP transaction on the hub's listeners, over real sockets: a mail refused while it is read
(too large, a line too long) is answered after its final dot and stored with its reason and first bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from adapters.smtp.inbound import KEPT_BYTES
from hub.runtime import Hub
from hub.store import SearchQuery
from tests.hubkit import running_hub, running_peer, wait_until
from tests.smtp.smtpkit import DOCTOR, HUB_DOMAIN, PASSWORD, USER, Setup, command, connect, data_reply, hub_config

LIMIT = 8192  # the submission port's max_message_bytes here


def _mail(n: int, body: bytes = b"Bonjour.\r\n") -> bytes:
    head = f"From: {DOCTOR}\r\nTo: {DOCTOR}\r\nSubject: data {n}\r\nMessage-ID: <data-{n}@{HUB_DOMAIN}>\r\n\r\n"
    return head.encode() + body


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, Setup]]:
    setup = Setup(tmp_path)
    async with (
        running_peer() as dpi,
        running_hub(hub_config(setup, dpi_port=dpi.port, submission={"max_message_bytes": LIMIT})) as running,
    ):
        yield running, setup


async def _logged_in(setup: Setup) -> aiosmtplib.SMTP:
    smtp = await connect(setup.submission_port, setup.plain_client_context())
    await smtp.login(USER, PASSWORD)
    return smtp


@pytest.mark.parametrize(
    "extra",
    [(b"x" * 998 + b"\r\n") * 2000, b"y" * 3 * 2**20 + b"\r\n"],
    ids=["many-lines", "one-endless-line"],
)
async def test_an_oversize_mail_is_stored_cut_with_its_reason_and_the_session_goes_on(
    hub: tuple[Hub, Setup], extra: bytes
) -> None:
    running, setup = hub
    assert running.store is not None
    smtp = await _logged_in(setup)
    big = _mail(1, extra)
    code, text = await data_reply(smtp, DOCTOR, [DOCTOR], big)
    # RFC 1870 / RFC 3463 X.3.4, after the final dot (RFC 5321 §4.2.5), the mail's text never quoted.
    assert (code, text.split()[0]) == (552, "5.3.4")
    [rec] = await running.store.search(SearchQuery(status="rejected"))
    assert rec.reason == f"message of {len(big)} bytes exceeds max_message_bytes ({LIMIT})"
    meta = rec.message.metadata
    assert meta["truncated_from_bytes"] == str(len(big))
    assert meta["control_id"] == f"<data-1@{HUB_DOMAIN}>" and meta["rcpt_to"] == DOCTOR
    assert meta["auth_user"] == USER and meta["endpoint"] == "smtp_submission"
    kept = rec.message.body
    assert kept.startswith(b"Received: from client.test")  # the trace line, then the mail's first bytes
    assert kept.endswith(big[: min(LIMIT, KEPT_BYTES)]) and len(kept) < LIMIT + 512  # no more than the limit kept
    # The session goes on: the next mail of the same connection is taken.
    assert (await data_reply(smtp, DOCTOR, [DOCTOR], _mail(2)))[0] == 250
    await smtp.quit()
    assert len(await running.store.search(SearchQuery())) == 2


async def test_a_line_too_long_is_refused_and_stored_whole_when_within_the_limit(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    assert running.store is not None
    smtp = await _logged_in(setup)
    mail = _mail(3, b".dot-stuffed\r\n" + b"z" * 2000 + b"\r\n")  # RFC 5321 §4.5.3.1.6: 1000 octets a line
    code, text = await data_reply(smtp, DOCTOR, [DOCTOR], mail)
    assert (code, text.split()[0]) == (500, "5.5.0")
    [rec] = await running.store.search(SearchQuery(status="rejected"))
    assert rec.reason is not None and "longer than the 1000 octets" in rec.reason
    assert "truncated_from_bytes" not in rec.message.metadata  # all of it was kept: it fits max_message_bytes
    assert rec.message.body.endswith(mail)
    await smtp.quit()


async def test_dot_stuffing_is_undone(hub: tuple[Hub, Setup]) -> None:
    """RFC 5321 §4.5.2: a line the client starts with "." is sent with one more; the stored mail has its own."""
    running, setup = hub
    assert running.store is not None
    smtp = await _logged_in(setup)
    mail = _mail(4, b".\r\n..two\r\n.one\r\nend\r\n")
    assert (await data_reply(smtp, DOCTOR, [DOCTOR], mail))[0] == 250  # aiosmtplib stuffs each leading dot
    await smtp.quit()
    [rec] = await running.store.search(SearchQuery(control_id=f"<data-4@{HUB_DOMAIN}>"))
    assert rec.message.body.endswith(mail)


async def test_a_declared_size_over_the_limit_is_refused_at_mail_and_nothing_is_stored(hub: tuple[Hub, Setup]) -> None:
    """SMTP's one difference from the other listeners' "oversize is stored" contract, on purpose.

    RFC 1870: a client declaring SIZE over the server's fixed maximum is refused at MAIL (552), before any
    recipient or byte of the mail: there is no message to store, as for a refused recipient. (A FHIR request
    announcing too large a body has already been sent as one message: it is stored, empty, with its size.)
    """
    running, setup = hub
    assert running.store is not None
    smtp = await _logged_in(setup)
    assert (await command(smtp, f"MAIL FROM:<{DOCTOR}> SIZE={LIMIT + 1}"))[0] == 552
    assert (await data_reply(smtp, DOCTOR, [DOCTOR], _mail(5)))[0] == 250  # then a mail within it is taken
    await smtp.quit()
    [rec] = await running.store.search(SearchQuery())  # only the mail that was sent
    assert rec.status != "rejected" and rec.message.metadata["control_id"] == f"<data-5@{HUB_DOMAIN}>"


async def test_a_client_trickling_its_mail_is_cut_off_without_blocking_the_others(tmp_path: Path) -> None:
    """A logged-in client sending its data a line at a time, slower than it should: timeout_secs counts from the
    DATA command (RFC 5321 §4.5.3.2.7, the server's timeout), not from its last byte, so it cannot hold the
    connection forever; meanwhile another client is served. Nothing of the cut mail is kept: nothing was
    acknowledged, its sender still has it."""
    setup = Setup(tmp_path)
    quick = {"timeout_secs": 2.0}  # long enough for STARTTLS, AUTH (scrypt) and a commit on a loaded machine
    async with (
        running_peer() as dpi,
        running_hub(hub_config(setup, dpi_port=dpi.port, submission=quick)) as running,
    ):
        assert running.store is not None
        slow = await _logged_in(setup)
        assert (await command(slow, f"MAIL FROM:<{DOCTOR}>"))[0] == 250
        assert (await command(slow, f"RCPT TO:<{DOCTOR}>"))[0] == 250
        assert (await command(slow, "DATA"))[0] == 354
        protocol = slow.protocol
        assert protocol is not None

        async def trickle() -> None:
            for line in (_mail(6) + b"x\r\n" * 10_000).split(b"\r\n"):
                if not slow.is_connected:
                    return
                protocol.write(line + b"\r\n")
                await asyncio.sleep(0.1)  # time is the subject: a line every 0.1 s, never the end of data

        dribbler = asyncio.create_task(trickle())
        try:
            fast = await _logged_in(setup)
            assert (await data_reply(fast, DOCTOR, [DOCTOR], _mail(7)))[0] == 250  # served meanwhile
            await fast.quit()
            await wait_until(lambda: not slow.is_connected, timeout=30)  # the listener closed it
        finally:
            dribbler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dribbler
        [rec] = await running.store.search(SearchQuery())
        assert rec.message.metadata["control_id"] == f"<data-7@{HUB_DOMAIN}>"
