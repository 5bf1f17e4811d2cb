"""The contract every registered inbound adapter (listener) keeps, each in a real hub on loopback sockets.

Parametrised over the registry's inbound adapters: registering a new one puts it under this suite, and
`test_every_inbound_adapter_has_a_sender` fails until it has a sender here (or a stated reason to have none).
The contract (hub/ports.py, DESIGN.md): commit before acknowledge (a hub that cannot take the message
answers the protocol's "try again" and acknowledges nothing); a refused message is stored with its reason;
oversize input is refused with the protocol's error, and stored with its reason and its size
(truncated_from_bytes); a slow peer is cut off by its timeout without blocking the others. The SMTP listeners
keep it as the others do (552 after the data, the mail stored cut); their one difference, a SIZE declared
over the limit refused at MAIL with nothing to store, is tested and argued in tests/smtp/test_smtp_dataphase.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import aiosmtplib
import pytest

from adapters.mllp.framing import frame
from adapters.smtp.common import hash_password
from adapters.tls import TlsConfig, client_context
from hub import registry
from hub.runtime import Hub
from hub.store import SearchQuery
from tests.conftest import free_port
from tests.hubkit import MllpClient, ack_fields, adt, running_hub, write_config
from tests.smtp.smtpkit import command, connect
from tests.tlskit import make_pki, pki_files

Answer = Literal["accepted", "retry", "refused", "too_large"]

NO_MESSAGE_INTAKE = {"imap": "serves mailboxes to their owners: it takes no message into the hub"}
# Registered listeners this suite cannot talk to yet: each is a known gap, failing here once it has a sender.
SENDER_MISSING: dict[str, str] = {}

registry.load_builtin()

SMALL = 4096  # the size limit each kit sets on its listener


async def _mllp_send(hub: Hub, body: bytes) -> Answer:
    client = await MllpClient.connect(int(hub.listeners["in"].port))
    try:
        ack = ack_fields(await client.send(body))
    finally:
        await client.close()
    code = ack["MSA"][1]
    if code == "AA":
        return "accepted"
    if code == "AE":
        return "retry"
    err = "|".join(ack.get("ERR", []))
    return "too_large" if "exceeds max_frame_bytes" in err else "refused"


async def _fhir_send(hub: Hub, body: bytes) -> Answer:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{hub.http_port}/fhir/Patient",
            data=body,
            headers={"Content-Type": "application/fhir+json"},
        ) as resp,
    ):
        await resp.read()
        status = resp.status
    if status in (200, 201, 202):
        return "accepted"
    if status == 503:
        return "retry"
    if status == 413:
        return "too_large"
    assert 400 <= status < 500, status
    return "refused"


def _patient(n: int, *, valid: bool = True) -> bytes:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.2", "value": f"P{n}"}],
    }
    if not valid:
        patient["gender"] = "not-a-gender"
    return json.dumps(patient).encode()


HUB_DOMAIN, PEER_DOMAIN = "hub.test", "peer.test"
DOCTOR = f"dr.house@{HUB_DOMAIN}"  # a personal mailbox hosted here: where the good mail goes
APPLICATION = f"dpi@{HUB_DOMAIN}"  # an application mailbox: a mail to it without IHE_XDM.ZIP is refused (554)
AUTHOR = f"dr.who@{HUB_DOMAIN}"  # the submission login's own address
PEER_SENDER = f"lab@{PEER_DOMAIN}"  # another operator's user, writing through its MTA
USER, PASSWORD = "lps", "conformance secret"
# An SMTP connection must prove itself (MAIL FROM on the MTA port, AUTH on submission) within this: long enough
# for STARTTLS and AUTH (scrypt) on a loaded machine, and the slow peer's timeout.
SMTP_HANDSHAKE_SECS = 2.0


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)  # scrypt is slow on purpose: once for the module


def _smtp_listener(kind: str) -> Callable[[Path], dict[str, Any]]:
    """The listener's config, with a test PKI made in the test's folder (the hub's certificate, the trust anchor
    the MTA checks peer operators' certificates against)."""

    def listener(folder: Path) -> dict[str, Any]:
        pki = make_pki(folder / "pki")
        config: dict[str, Any] = {
            "type": kind,
            "listen": "127.0.0.1:0",
            "hostname": f"mx.{HUB_DOMAIN}",
            "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "ca_file": str(pki.ca)},
            "domains": [HUB_DOMAIN],
            "mailboxes": [{"address": DOCTOR, "kind": "personal"}, {"address": APPLICATION, "kind": "application"}],
            "trusted_domains": [HUB_DOMAIN, PEER_DOMAIN],
            "max_message_bytes": SMALL,
            "handshake_timeout_secs": SMTP_HANDSHAKE_SECS,
        }
        if kind == "smtp_submission":
            config["users"] = [{"username": USER, "password_hash": _password_hash(), "addresses": [AUTHOR]}]
        return config

    return listener


def _mail(sender: str, rcpt: str, n: int) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: conformance {n}\r\nMessage-ID: <conf-{n}@{HUB_DOMAIN}>\r\n"
        "Date: Wed, 01 Jan 2025 12:00:00 +0000\r\n\r\nBonjour.\r\n"
    ).encode()


def _envelope(mail: bytes) -> tuple[str, str]:
    """(MAIL FROM, RCPT TO) from the mail's From: and To:, as a mail client makes them."""
    head = mail.split(b"\r\n\r\n", 1)[0].decode()
    fields = dict(line.split(": ", 1) for line in head.split("\r\n") if ": " in line)
    return email.utils.parseaddr(fields["From"])[1], email.utils.parseaddr(fields["To"])[1]


async def _smtp_send(hub: Hub, body: bytes, *, submission: bool) -> Answer:
    """One mail over STARTTLS: from a local client logged in (submission), or from a peer operator presenting
    its certificate (MTA). The envelope is always accepted: what is classified is the reply to the data."""
    listener: Any = hub.listeners["in"]
    pki = pki_files(Path(listener.config.tls.ca_file).parent)
    tls = TlsConfig(ca_file=str(pki.ca))
    if not submission:
        tls = TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    smtp = await connect(int(listener.port), client_context(tls))
    try:
        if submission:
            await smtp.login(USER, PASSWORD)
        sender, rcpt = _envelope(body)
        assert (await command(smtp, f"MAIL FROM:<{sender}>"))[0] == 250
        assert (await command(smtp, f"RCPT TO:<{rcpt}>"))[0] == 250
        try:
            code = (await smtp.data(body)).code
        except aiosmtplib.SMTPDataError as exc:
            code = exc.code
        await smtp.quit()  # the session is still in order after any reply to the data
    finally:
        smtp.close()
    if code == 250:
        return "accepted"
    if 400 <= code < 500:
        return "retry"
    if code == 552:  # RFC 1870: over the server's fixed maximum message size
        return "too_large"
    assert 500 <= code < 600, code
    return "refused"


def _padded(mail: bytes) -> bytes:
    """The mail with more lines of text than SMALL bytes."""
    return mail + (b"x" * 76 + b"\r\n") * (SMALL // 78 + 1)


@dataclass(frozen=True)
class SenderKit:
    """How to run one inbound adapter in a hub and talk its protocol to it."""

    listener: Callable[[Path], dict[str, Any]]  # its config, given the test's folder
    route_when: dict[str, Any]
    send: Callable[[Hub, bytes], Awaitable[Answer]]
    good: Callable[[int], bytes]
    bad: bytes  # a message the listener refuses (protocol-correct error, stored with its reason)
    port: Callable[[Hub], int]
    slow_timeout: float  # the listener's timeout on a peer that opens a connection and stalls
    oversize: Callable[[bytes], bytes]  # a good message made larger than SMALL
    slow_opening: bytes  # what the slow peer writes before it stalls: the start of a request, never its end


SENDERS: dict[str, SenderKit] = {
    "mllp": SenderKit(
        listener=lambda _: {
            "type": "mllp",
            "listen": "127.0.0.1:0",
            "max_frame_bytes": SMALL,
            "first_frame_timeout_secs": 0.5,
            "read_timeout_secs": 0.5,
        },
        route_when={"message_type": ["ADT^A01"]},
        send=_mllp_send,
        good=lambda n: adt(f"CONF{n}", patient=f"P{n}"),
        bad=adt("CONFBAD", msh9=""),
        port=lambda hub: int(hub.listeners["in"].port),
        slow_timeout=0.5,
        oversize=lambda body: body + b"NTE|1||" + b"x" * (SMALL + 1) + b"\r",
        slow_opening=frame(b"")[:1],
    ),
    "fhir": SenderKit(
        listener=lambda _: {"type": "fhir", "max_body_bytes": SMALL},
        route_when={},
        send=_fhir_send,
        good=_patient,
        bad=_patient(0, valid=False),
        port=lambda hub: int(hub.http_port or 0),
        slow_timeout=0.5,
        oversize=lambda body: body + b" " * (SMALL + 1),
        slow_opening=b"POST /fhir/Patient HTTP/1.1\r\n",
    ),
    "smtp_mta": SenderKit(
        listener=_smtp_listener("smtp_mta"),
        route_when={},
        send=functools.partial(_smtp_send, submission=False),
        good=lambda n: _mail(PEER_SENDER, DOCTOR, n),
        bad=_mail(PEER_SENDER, APPLICATION, 0),
        port=lambda hub: int(hub.listeners["in"].port),
        slow_timeout=SMTP_HANDSHAKE_SECS,
        oversize=_padded,
        slow_opening=b"EHLO slow",
    ),
    "smtp_submission": SenderKit(
        listener=_smtp_listener("smtp_submission"),
        route_when={},
        send=functools.partial(_smtp_send, submission=True),
        good=lambda n: _mail(AUTHOR, DOCTOR, n),
        bad=_mail(AUTHOR, APPLICATION, 0),
        port=lambda hub: int(hub.listeners["in"].port),
        slow_timeout=SMTP_HANDSHAKE_SECS,
        oversize=_padded,
        slow_opening=b"EHLO slow",
    ),
}

INBOUND = [n for n in registry.names("inbound") if n not in NO_MESSAGE_INTAKE]


def _kit(name: str) -> SenderKit:
    if name in SENDER_MISSING:
        pytest.xfail(f"no conformance sender for inbound adapter {name!r} yet: {SENDER_MISSING[name]}")
    if name not in SENDERS:
        pytest.fail(f"inbound adapter {name!r} has no conformance sender: add one to SENDERS")
    return SENDERS[name]


def _config(tmp_path: Path, kit: SenderKit, **hub: Any) -> Path:
    route: dict[str, Any] = {"route": "conf", "from": "in", "to": [{"destination": "dpi", "paused": True}]}
    if kit.route_when:
        route["when"] = kit.route_when
    return write_config(
        tmp_path,
        peer_port=free_port(),
        listeners={"in": kit.listener(tmp_path)},
        routes=[route],
        http={"listen": "127.0.0.1:0", "idle_timeout_secs": kit.slow_timeout},
        **hub,
    )


def test_every_inbound_adapter_has_a_sender() -> None:
    registered = set(registry.names("inbound"))
    assert registered, "no inbound adapter registered"
    unaccounted = registered - set(SENDERS) - set(NO_MESSAGE_INTAKE) - set(SENDER_MISSING)
    assert not unaccounted, f"inbound adapters without a conformance sender: {sorted(unaccounted)}"
    assert not (set(SENDERS) | set(NO_MESSAGE_INTAKE) | set(SENDER_MISSING)) - registered, "a sender for no adapter"


@pytest.mark.parametrize("name", INBOUND)
async def test_nothing_is_acknowledged_that_the_hub_could_not_keep(name: str, tmp_path: Path) -> None:
    """At the high-water mark the hub refuses to commit: the listener answers "try again" and keeps nothing."""
    kit = _kit(name)
    async with running_hub(_config(tmp_path, kit, high_water_mark=1)) as hub:
        assert hub.store is not None
        assert await kit.send(hub, kit.good(1)) == "accepted"
        assert len(await hub.store.search(SearchQuery())) == 1
        assert await kit.send(hub, kit.good(2)) == "retry"
        assert len(await hub.store.search(SearchQuery())) == 1  # not acknowledged, not kept


@pytest.mark.parametrize("name", INBOUND)
async def test_a_refused_message_is_stored_with_its_reason(name: str, tmp_path: Path) -> None:
    kit = _kit(name)
    async with running_hub(_config(tmp_path, kit)) as hub:
        assert hub.store is not None
        assert await kit.send(hub, kit.bad) == "refused"
        [rec] = await hub.store.search(SearchQuery())
        assert rec.status == "rejected" and rec.reason


@pytest.mark.parametrize("name", INBOUND)
async def test_oversize_input_is_refused_with_the_protocol_error(name: str, tmp_path: Path) -> None:
    kit = _kit(name)
    big = kit.oversize(kit.good(3))
    async with running_hub(_config(tmp_path, kit)) as hub:
        assert hub.store is not None
        assert await kit.send(hub, big) == "too_large"
        [rec] = await hub.store.search(SearchQuery())
        assert rec.status == "rejected" and rec.reason  # what was received of it is kept, with the reason
        assert int(rec.message.metadata["truncated_from_bytes"]) > SMALL  # and how much there was
        assert await kit.send(hub, kit.good(4)) == "accepted"  # the listener is still serving


@pytest.mark.parametrize("name", INBOUND)
async def test_a_slow_peer_is_cut_off_without_blocking_the_others(name: str, tmp_path: Path) -> None:
    kit = _kit(name)
    async with running_hub(_config(tmp_path, kit)) as hub:
        reader, writer = await asyncio.open_connection("127.0.0.1", kit.port(hub))
        try:
            writer.write(kit.slow_opening)
            await writer.drain()
            assert await kit.send(hub, kit.good(5)) == "accepted"  # served while the slow peer holds its socket
            async with asyncio.timeout(kit.slow_timeout * 20):  # closed by the listener's own timeout
                await reader.read()  # returns at the end of stream only
            assert reader.at_eof()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
