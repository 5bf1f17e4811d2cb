"""The contract every registered outbound adapter keeps, each run against a real peer on a loopback socket.

Parametrised over the registry's outbound adapters: registering a new one puts it under this suite, and
`test_every_outbound_adapter_has_a_peer` fails until it has a peer here (or a stated reason not to need one).
The contract (hub/ports.py): `send` returns on ACCEPT, raises Retryable (Unreachable when nothing was sent)
or Rejected, and never retries nor sleeps; what the peer answered comes back as a PeerReply (returned, or
attached to the error), its bytes as the peer sent them; it gives up within its timeouts; a cancelled send leaves no
connection open; TLS verifies the peer against the configured CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from lxml import etree

from adapters.mllp.framing import frame
from adapters.smtp.common import close_smtp_server
from adapters.tls import TlsConfig
from adapters.xds.mtom import decode_related
from adapters.xds.soap import ACTION_PNR, ACTION_PNR_RESPONSE, envelope, read_envelope
from hub import registry
from hub.content_types import ContentType
from hub.errors import Rejected, Retryable, Unreachable
from hub.message import Message
from hub.replies import PeerReply
from mappings.hl7v2 import read_header
from mappings.xds import RegistryErrorInfo, registry_response
from tests.hubkit import adt, wait_until
from tests.tlskit import Pki, make_pki
from tests.unit.test_xds_metadata import synthetic_cda, xds_config

Answer = Literal["accept", "retry", "reject", "silent"]

# Outbound adapters with no network peer to classify: the contract above is about a remote service.
NO_NETWORK_PEER = {
    "mailbox": "writes into the hub's own Maildir (tests/smtp cover it)",
    "identity_registry": "writes into the hub's own store (tests/integration/test_identity_flow.py covers it)",
}
# Registered adapters whose peer this suite does not have yet: each is a known gap, failing here once it has one.
PEER_MISSING: dict[str, str] = {}

registry.load_builtin()


class Peer:
    """A loopback TCP server that answers as told and counts the connections it holds open."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None, respond: Callable[..., Any]) -> None:
        self.answer: Answer = answer
        self.tls = tls
        self._respond = respond
        self.open = 0
        self.requests = 0
        self.answers: list[bytes] = []  # what it answered each request (the bytes, the SMTP line without CRLF)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self._writers.add(writer)
        try:
            await self._respond(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _mllp_peer(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    codes = {"accept": "AA", "retry": "AE", "reject": "AR"}
    while True:
        body = (await reader.readuntil(b"\x1c\r"))[1:-2]
        peer.requests += 1
        if peer.answer == "silent":
            await reader.read()  # say nothing until the sender gives up and closes
            return
        control = body.split(b"\r", 1)[0].split(b"|")[9].decode()
        msh = f"MSH|^~\\&|PEER|PEER|HUB|HUB|20250101120000||ACK^A01^ACK|A{control}|P|2.5"
        ack = f"{msh}\rMSA|{codes[peer.answer]}|{control}\r"
        peer.answers.append(ack.encode())
        writer.write(frame(ack.encode()))
        await writer.drain()


async def _http_peer(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    statuses: dict[str, tuple[int, dict[str, Any]]] = {
        "accept": (201, {"resourceType": "Patient", "id": "1"}),
        "retry": (503, {}),
        "reject": (422, {}),
    }
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        peer.requests += 1
        if peer.answer == "silent":
            await reader.read()
            return
        status, doc = statuses[peer.answer]
        if not doc:
            doc = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
        payload = json.dumps(doc).encode()
        peer.answers.append(payload)
        response = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(response.encode() + payload)
        await writer.drain()


async def _read_http_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, await reader.readexactly(int(headers.get("content-length", "0")))


def _registry_answer(answer: Answer, relates_to: str) -> bytes:
    """An ITI-41 answer as a registry gives it (ITI TF-2b §3.41.4.2): a RegistryResponse in a SOAP 1.2 envelope."""
    outcomes = {
        "accept": ("Success", []),
        # ITI TF-3 Table 4.2.4.1-2: the registry's state, not the submission's: the adapter retries it.
        "retry": ("Failure", [RegistryErrorInfo("XDSRegistryBusy", "registry busy")]),
        "reject": ("Failure", [RegistryErrorInfo("XDSRepositoryMetadataError", "metadata refused")]),
    }
    status, errors = outcomes[answer]
    env = envelope(registry_response(status, errors), action=ACTION_PNR_RESPONSE, relates_to=relates_to)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


async def _xds_peer(peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        headers, body = await _read_http_request(reader)
        peer.requests += 1
        if peer.answer == "silent":
            await reader.read()
            return
        ctype = headers.get("content-type", "")
        root = decode_related(body, ctype).root.body if ctype.startswith("multipart/") else body
        request = read_envelope(root)
        assert request.action == ACTION_PNR
        payload = _registry_answer(peer.answer, request.message_id)
        peer.answers.append(payload)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml; charset=UTF-8\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()


class _CountingSmtp(SMTP):
    """aiosmtpd's server, telling its :class:`SmtpPeer` when a connection opens and closes."""

    def __init__(self, peer: SmtpPeer, **kwargs: Any) -> None:
        super().__init__(peer, **kwargs)
        self._peer = peer
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and not self._counted:  # the TCP connection, not STARTTLS's layer
            self._counted = True
            self._peer.open += 1
            self._peer.protocols.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        # aiosmtpd calls this itself after a failed STARTTLS handshake: count each connection once.
        if self._counted:
            self._counted = False
            self._peer.open -= 1
            self._peer.protocols.discard(self)
        super().connection_lost(error)


class SmtpPeer:
    """An operator's MTA: aiosmtpd requiring STARTTLS (RFC 3207), the end-of-data reply deciding the mail's fate.

    The same counters as :class:`Peer`. A real server rather than a hand-written responder: the TLS layer
    STARTTLS puts on the connection, and its failure when the client refuses the certificate, are aiosmtpd's.
    """

    _FINAL = {"accept": "250 2.0.0 queued", "retry": "451 4.3.0 try again later", "reject": "550 5.7.1 refused"}

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None) -> None:
        assert tls is not None, "an MSSante peer always has a certificate (STARTTLS is required)"
        self.answer: Answer = answer
        self.tls = tls
        self.open = 0
        self.requests = 0
        self.answers: list[bytes] = []  # the end-of-data reply line of each mail, without CRLF
        self.port = 0
        self.protocols: set[_CountingSmtp] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SmtpPeer:
        loop = asyncio.get_running_loop()

        def serve() -> _CountingSmtp:
            return _CountingSmtp(self, hostname="peer.test", tls_context=self.tls, require_starttls=True, loop=loop)

        self._server = await loop.create_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await close_smtp_server(self._server, self.protocols)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.requests += 1
        if self.answer == "silent":
            # No reply until the client gives up: aiosmtpd cancels this when the connection closes.
            await asyncio.get_running_loop().create_future()
        self.answers.append(self._FINAL[self.answer].encode())
        return self._FINAL[self.answer]


def _stream(respond: Callable[..., Any]) -> Callable[[Answer, ssl.SSLContext | None], Peer]:
    """A kit's peer made of a responder on a plain (or TLS from the first byte) stream server."""
    return lambda answer, tls: Peer(answer, tls, respond)


@dataclass(frozen=True)
class PeerKit:
    """How to run one outbound adapter against its peer: the peer's answers, the adapter's config, a message."""

    peer: Callable[[Answer, ssl.SSLContext | None], Peer | SmtpPeer]
    config: Callable[[int, TlsConfig | None, float], dict[str, Any]]
    message: Callable[[], Message]
    scheme: str = ""
    tls_required: bool = False  # the protocol never goes without TLS: every case runs over it


def _hl7_message() -> Message:
    body = adt("CONF1")
    _, header = read_header(body)
    return Message.new(body, content_type=ContentType.HL7V2, metadata=header.metadata())


def _fhir_message() -> Message:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "P1"}]}
    body = json.dumps(patient).encode()
    return Message.new(body, content_type=ContentType.FHIR, metadata={"resource_type": "Patient"})


def _mllp_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    return {"endpoint": f"127.0.0.1:{port}", "tls": tls, "connect_timeout_secs": timeout, "ack_timeout_secs": timeout}


def _fhir_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    return {"endpoint": f"{scheme}://127.0.0.1:{port}/fhir", "tls": tls, "connect_timeout_secs": timeout,
            "timeout_secs": timeout}  # fmt: skip


def _http_post_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    return {"url": f"{scheme}://127.0.0.1:{port}/inbox", "tls": tls, "connect_timeout_secs": timeout,
            "timeout_secs": timeout}  # fmt: skip


def _cda_message() -> Message:
    return Message.new(synthetic_cda(), content_type=ContentType.CDA)


def _xds_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    return {"endpoint": f"{scheme}://127.0.0.1:{port}/repository", "tls": tls, "connect_timeout_secs": timeout,
            "response_timeout_secs": timeout, "metadata": xds_config()}  # fmt: skip


def _mail_message() -> Message:
    mail = (
        f"From: <{_LOCAL}>\r\nTo: <{_REMOTE}>\r\nSubject: conformance\r\nMessage-ID: <conf-1@hub.test>\r\n"
        "Date: Wed, 01 Jan 2025 12:00:00 +0000\r\n\r\nBonjour.\r\n"
    )
    return Message.new(
        mail.encode(), content_type=ContentType.MAIL, metadata={"mail_from": _LOCAL, "rcpt_remote": _REMOTE}
    )


def _mssante_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    return {"from_address": _LOCAL, "hostname": "mx.hub.test", "next_hops": {"peer.test": f"127.0.0.1:{port}"},
            "tls": tls, "connect_timeout_secs": timeout, "timeout_secs": timeout}  # fmt: skip


_LOCAL, _REMOTE = "labo@hub.test", "dr.who@peer.test"

PEERS: dict[str, PeerKit] = {
    "mllp": PeerKit(_stream(_mllp_peer), _mllp_config, _hl7_message),
    "fhir": PeerKit(_stream(_http_peer), _fhir_config, _fhir_message),
    "http_post": PeerKit(_stream(_http_peer), _http_post_config, _hl7_message),
    "xds": PeerKit(_stream(_xds_peer), _xds_config, _cda_message),
    "mssante": PeerKit(SmtpPeer, _mssante_config, _mail_message, tls_required=True),
}

OUTBOUND = [n for n in registry.names("outbound") if n not in NO_NETWORK_PEER]


def _kit(name: str) -> PeerKit:
    if name in PEER_MISSING:
        pytest.xfail(f"no conformance peer for outbound adapter {name!r} yet: {PEER_MISSING[name]}")
    if name not in PEERS:
        pytest.fail(f"outbound adapter {name!r} has no conformance peer: add one to PEERS")
    return PEERS[name]


def _adapter(name: str, options: dict[str, Any]) -> Any:
    component = registry.get("outbound", name)
    assert component is not None and component.config is not None
    config = component.config(**options)
    return component.factory(name, config)


@contextlib.asynccontextmanager
async def _started(name: str, options: dict[str, Any]) -> AsyncIterator[Any]:
    adapter = _adapter(name, options)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    folder: Path = tmp_path_factory.mktemp("pki")
    return make_pki(folder / "trusted"), make_pki(folder / "other", ca_name="Untrusted CA")


def _server_tls(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


def _plain(kit: PeerKit, pkis: tuple[Pki, Pki]) -> tuple[ssl.SSLContext | None, TlsConfig | None]:
    """(peer's server context, adapter's TLS) for a case that is not about TLS: none unless the protocol needs it."""
    if not kit.tls_required:
        return None, None
    return _server_tls(pkis[0]), TlsConfig(ca_file=str(pkis[0].ca))


def _peer(kit: PeerKit, answer: Answer, tls: ssl.SSLContext | None) -> Peer | SmtpPeer:
    return kit.peer(answer, tls)


def test_every_outbound_adapter_has_a_peer() -> None:
    """A new outbound adapter is under this suite: it needs a peer here, or a stated reason to have none."""
    registered = set(registry.names("outbound"))
    assert registered, "no outbound adapter registered"
    unaccounted = registered - set(PEERS) - set(NO_NETWORK_PEER) - set(PEER_MISSING)
    assert not unaccounted, f"outbound adapters without a conformance peer: {sorted(unaccounted)}"
    assert not (set(PEERS) | set(NO_NETWORK_PEER) | set(PEER_MISSING)) - registered, "a peer for no adapter"


@pytest.mark.parametrize("name", OUTBOUND)
@pytest.mark.parametrize(
    ("answer", "expected"),
    [("accept", None), ("retry", Retryable), ("reject", Rejected)],
    ids=["accept", "retry", "reject"],
)
async def test_the_peer_answer_is_classified(
    name: str, answer: Answer, expected: type[Exception] | None, pkis: tuple[Pki, Pki]
) -> None:
    kit = _kit(name)
    server, tls = _plain(kit, pkis)
    async with _peer(kit, answer, server) as peer, _started(name, kit.config(peer.port, tls, 5)) as adapter:
        if expected is None:
            reply = await adapter.send(kit.message())
        else:
            with pytest.raises(expected) as caught:
                await adapter.send(kit.message())
            assert not isinstance(caught.value, Rejected if expected is Retryable else Retryable)
            reply = caught.value.reply
        assert peer.requests == 1  # classified, never retried by the adapter
    # What the peer answered comes back with the outcome: its bytes, a summary, how to read them.
    assert isinstance(reply, PeerReply), f"{name} gave no PeerReply for {answer}"
    assert reply.kind and reply.summary and reply.body and reply.content_type and not reply.truncated
    assert reply.body in peer.answers, "the reply is not the bytes the peer sent"


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_refused_connection_is_unreachable(name: str, pkis: tuple[Pki, Pki]) -> None:
    kit = _kit(name)
    _, tls = _plain(kit, pkis)
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with _started(name, kit.config(port, tls, 5)) as adapter:
            with pytest.raises(Unreachable):
                await adapter.send(kit.message())


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_connection_that_cannot_open_times_out(name: str, pkis: tuple[Pki, Pki]) -> None:
    """A listener whose backlog is full drops new SYNs: the connect hangs until connect_timeout_secs."""
    kit = _kit(name)
    _, tls = _plain(kit, pkis)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fill the accept queue (never accepted) so that the next SYN is dropped
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                fillers.append(filler)
            async with _started(name, kit.config(port, tls, 0.5)) as adapter:
                async with asyncio.timeout(10):  # far above the adapter's own 0.5 s: it gives up by itself
                    with pytest.raises(Retryable):
                        await adapter.send(kit.message())
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_silent_peer_times_out_and_is_not_left_open(name: str, pkis: tuple[Pki, Pki]) -> None:
    kit = _kit(name)
    server, tls = _plain(kit, pkis)
    async with _peer(kit, "silent", server) as peer, _started(name, kit.config(peer.port, tls, 0.5)) as adapter:
        async with asyncio.timeout(10):
            with pytest.raises(Retryable) as caught:
                await adapter.send(kit.message())
        assert not isinstance(caught.value, Unreachable)  # the message went out: not "nothing was sent"
        assert caught.value.reply is None  # and the peer said nothing: no reply to keep
        await wait_until(lambda: peer.open == 0, timeout=5)  # the connection in an unknown state is dropped


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_cancelled_send_leaves_no_connection_open(name: str, pkis: tuple[Pki, Pki]) -> None:
    kit = _kit(name)
    server, tls = _plain(kit, pkis)
    async with _peer(kit, "silent", server) as peer, _started(name, kit.config(peer.port, tls, 30)) as adapter:
        task = asyncio.create_task(adapter.send(kit.message()))
        await wait_until(lambda: peer.requests == 1, timeout=5)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)  # far below the adapter's 30 s: no wait on the peer
        assert done, "the cancelled send still waits on the peer"
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: peer.open == 0, timeout=5)
        peer.answer = "accept"  # and the next send starts clean
        await adapter.send(kit.message())
        assert peer.requests == 2


@pytest.mark.parametrize("name", OUTBOUND)
async def test_tls_verifies_the_peer_and_refuses_a_wrong_ca(name: str, pkis: tuple[Pki, Pki]) -> None:
    kit = _kit(name)
    trusted, other = pkis
    async with _peer(kit, "accept", _server_tls(trusted)) as peer:
        async with _started(name, kit.config(peer.port, TlsConfig(ca_file=str(trusted.ca)), 5)) as adapter:
            await adapter.send(kit.message())
        assert peer.requests == 1
        async with _started(name, kit.config(peer.port, TlsConfig(ca_file=str(other.ca)), 5)) as adapter:
            # A peer the hub cannot verify is one it cannot reach (nothing was sent): retried, counted by the circuit.
            with pytest.raises(Unreachable):
                await adapter.send(kit.message())
        assert peer.requests == 1  # nothing reached a peer the hub could not verify
        await wait_until(lambda: peer.open == 0, timeout=5)  # and the refused handshake left no connection


# -- http_post: what the suite above does not exercise -------------------------------------------------------------


@dataclass
class _Scripted:
    """An HTTP/1.1 peer giving every request one answer; it keeps what it received and counts its connections."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok": true}'
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    endless: bool = False

    async def __call__(self, peer: Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            self.received.append(await _read_http_request(reader))
            peer.requests += 1
            head = f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            if self.endless:  # chunks until the client hangs up
                writer.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                while True:
                    writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
                    await writer.drain()
            writer.write(f"{head}Content-Length: {len(self.body)}\r\n\r\n".encode() + self.body)
            await writer.drain()


def _http_post(port: int, **options: Any) -> dict[str, Any]:
    return {**_http_post_config(port, None, 5), **options}


async def test_http_post_sends_the_body_its_headers_and_content_type_on_one_connection() -> None:
    scripted = _Scripted(201)
    options = _http_post(0, headers={"Authorization": "Bearer s3cret", "X-Partner": "hub"},
                         idempotency_header="Idempotency-Key")  # fmt: skip
    message = _hl7_message()
    async with Peer("accept", None, scripted) as peer:
        async with _started("http_post", {**options, "url": f"http://127.0.0.1:{peer.port}/inbox"}) as adapter:
            await adapter.send(message)
            await adapter.send(message)  # the same message again, as after a lost answer
        async with _started("http_post", {**options, "url": f"http://127.0.0.1:{peer.port}/inbox",
                                          "content_type": "application/hl7-v2"}) as adapter:  # fmt: skip
            await adapter.send(message)
    (first, body), (second, _), (third, _) = scripted.received
    assert body == message.body
    assert first["content-type"] == message.content_type == ContentType.HL7V2  # the message's own type by default
    assert third["content-type"] == "application/hl7-v2"
    assert first["authorization"] == "Bearer s3cret" and first["x-partner"] == "hub"
    assert first["idempotency-key"] == second["idempotency-key"] == message.id  # the same on every attempt
    assert scripted.connections == 2  # the first two sends over one kept-alive connection, the third adapter's own


@pytest.mark.parametrize(
    ("status", "headers", "options", "expected"),
    [
        (200, {}, {}, None),
        (429, {"Retry-After": "7"}, {}, Retryable),
        (408, {}, {}, Retryable),
        (425, {}, {}, Retryable),
        (500, {}, {}, Retryable),
        (301, {"Location": "/elsewhere"}, {}, Rejected),  # not followed
        (404, {}, {}, Rejected),
        (409, {}, {"status_outcomes": {409: "accept"}}, None),  # "already have it"
        (501, {}, {"status_outcomes": {"501": "reject"}}, Rejected),
    ],
)
async def test_http_post_classifies_the_status(
    status: int, headers: dict[str, str], options: dict[str, Any], expected: type[Exception] | None
) -> None:
    scripted = _Scripted(status, headers, body=b'{"detail": "x"}')
    async with Peer("accept", None, scripted) as peer, _started("http_post", _http_post(peer.port, **options)) as a:
        if expected is None:
            reply = await a.send(_hl7_message())
        else:
            with pytest.raises(expected) as caught:
                await a.send(_hl7_message())
            assert not isinstance(caught.value, Unreachable)  # the peer answered
            reply = caught.value.reply
            if status == 429:
                assert isinstance(caught.value, Retryable) and caught.value.retry_after_secs == 7
        assert peer.requests == 1  # never retried, never redirected
    assert isinstance(reply, PeerReply)
    assert (reply.kind, reply.summary, reply.body, reply.content_type) == ("http", str(status), scripted.body,
                                                                           "application/json")  # fmt: skip


async def test_http_post_cuts_a_long_answer_and_drops_an_endless_one() -> None:
    scripted = _Scripted(200, body=b"x" * 10_000)
    options = {"max_reply_bytes": 1024}
    async with Peer("accept", None, scripted) as peer, _started("http_post", _http_post(peer.port, **options)) as a:
        reply = await a.send(_hl7_message())
        assert reply.truncated and len(reply.body) == 1024 and reply.size == 10_000  # the announced length
        scripted.endless = True  # an answer that never ends: read up to the bound, then its connection closed
        reply = await a.send(_hl7_message())
        assert reply.truncated and len(reply.body) == 1024
        await wait_until(lambda: peer.open == 0, timeout=5)
        scripted.endless = False
        await a.send(_hl7_message())  # and the next send starts clean, on a fresh connection
    assert peer.requests == 3 and scripted.connections == 2


async def test_http_post_keeps_header_values_and_answers_out_of_its_texts() -> None:
    scripted = _Scripted(403, body=b'{"patient": "DUPONT"}')
    async with Peer("accept", None, scripted) as peer:
        url = f"http://127.0.0.1:{peer.port}/inbox?token=t0ken"
        async with _started("http_post", _http_post(peer.port, url=url, headers={"Authorization": "s3cret"})) as a:
            with pytest.raises(Rejected) as caught:
                await a.send(_hl7_message())
            shown = f"{caught.value} {caught.value!r} {a.describe()}"
    for secret in ("s3cret", "DUPONT", "t0ken"):
        assert secret not in shown
    assert "s3cret" not in repr(a.config)  # a header value is a SecretStr
    assert a.describe()["to"] == f"http://127.0.0.1:{peer.port}/inbox"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "http:// or https://"),
        ({"url": "https://user:pw@127.0.0.1/x"}, "Authorization header"),
        ({"headers": {"Content-Type": "text/plain"}}, "content_type"),
        ({"headers": {"X-Key": "a\r\nInjected: 1"}}, "CR, LF"),
        ({"headers": {"Bad Name": "v"}}, "not an HTTP header name"),
        ({"content_type": "text/plain\r\nX-Injected: 1"}, "one non-empty line"),
        ({"idempotency_header": "Content-Length"}, "set by the adapter"),
        ({"status_outcomes": {700: "accept"}}, "200-599"),
        ({"status_outcomes": {404: "maybe"}}, "accept"),
    ],
)
def test_http_post_refuses_a_bad_config(options: dict[str, Any], problem: str) -> None:
    component = registry.get("outbound", "http_post")
    assert component is not None
    with pytest.raises(ValueError, match=problem) as caught:
        component.config(**_http_post(1, **options))
    assert "Injected" not in str(caught.value.errors(include_input=False))  # the text names no value
