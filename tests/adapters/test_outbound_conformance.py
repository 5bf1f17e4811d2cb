"""The contract every registered outbound adapter keeps, each run against a real peer on a loopback socket.

Parametrised over the registry's outbound adapters: registering a new one puts it under this suite, and
`test_every_outbound_adapter_has_a_peer` fails until it has a peer here (or a stated reason not to need one).
The contract (hub/ports.py): `send` returns on ACCEPT, raises Retryable (Unreachable when nothing was sent)
or Rejected, and never retries nor sleeps; it gives up within its timeouts; a cancelled send leaves no
connection open; TLS verifies the peer against the configured CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from adapters.mllp.framing import frame
from adapters.tls import TlsConfig
from hub import registry
from hub.errors import Rejected, Retryable, Unreachable
from hub.message import CONTENT_HL7V2, Message
from mappings.fhir.common import CONTENT_FHIR
from mappings.hl7v2 import read_header
from tests.hubkit import adt, wait_until
from tests.tlskit import Pki, make_pki

Answer = Literal["accept", "retry", "reject", "silent"]

# Outbound adapters with no network peer to classify: the contract above is about a remote service.
NO_NETWORK_PEER = {
    "mailbox": "writes into the hub's own Maildir (tests/smtp cover it)",
    "identity_registry": "writes into the hub's own store (tests/integration/test_identity_flow.py covers it)",
}
# Registered adapters whose peer this suite does not have yet: each is a known gap, failing here once it has one.
PEER_MISSING = {
    "mssante": "an SMTP peer answering 250/451/550 over STARTTLS is still to write",
    "xds": "an ITI-41 peer answering RegistryResponse Success/Failure is still to write",
}

registry.load_builtin()


class Peer:
    """A loopback TCP server that answers as told and counts the connections it holds open."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None, respond: Callable[..., Any]) -> None:
        self.answer: Answer = answer
        self._tls = tls
        self._respond = respond
        self.open = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
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
        response = (
            f"HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(response.encode() + payload)
        await writer.drain()


@dataclass(frozen=True)
class PeerKit:
    """How to run one outbound adapter against its peer: the peer's answers, the adapter's config, a message."""

    respond: Callable[..., Any]
    config: Callable[[int, TlsConfig | None, float], dict[str, Any]]
    message: Callable[[], Message]
    scheme: str = ""


def _hl7_message() -> Message:
    body = adt("CONF1")
    _, header = read_header(body)
    return Message.new(body, content_type=CONTENT_HL7V2, metadata=header.metadata())


def _fhir_message() -> Message:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.3", "value": "P1"}]}
    return Message.new(json.dumps(patient).encode(), content_type=CONTENT_FHIR, metadata={"resource_type": "Patient"})


def _mllp_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    return {"endpoint": f"127.0.0.1:{port}", "tls": tls, "connect_timeout_secs": timeout, "ack_timeout_secs": timeout}


def _fhir_config(port: int, tls: TlsConfig | None, timeout: float) -> dict[str, Any]:
    scheme = "https" if tls else "http"
    return {"endpoint": f"{scheme}://127.0.0.1:{port}/fhir", "tls": tls, "connect_timeout_secs": timeout,
            "timeout_secs": timeout}  # fmt: skip


PEERS: dict[str, PeerKit] = {
    "mllp": PeerKit(_mllp_peer, _mllp_config, _hl7_message),
    "fhir": PeerKit(_http_peer, _fhir_config, _fhir_message),
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
async def test_the_peer_answer_is_classified(name: str, answer: Answer, expected: type[Exception] | None) -> None:
    kit = _kit(name)
    async with Peer(answer, None, kit.respond) as peer, _started(name, kit.config(peer.port, None, 5)) as adapter:
        if expected is None:
            await adapter.send(kit.message())
        else:
            with pytest.raises(expected) as caught:
                await adapter.send(kit.message())
            assert not isinstance(caught.value, Rejected if expected is Retryable else Retryable)
        assert peer.requests == 1  # classified, never retried by the adapter


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_refused_connection_is_unreachable(name: str) -> None:
    kit = _kit(name)
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        async with _started(name, kit.config(port, None, 5)) as adapter:
            with pytest.raises(Unreachable):
                await adapter.send(kit.message())


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_connection_that_cannot_open_times_out(name: str) -> None:
    """A listener whose backlog is full drops new SYNs: the connect hangs until connect_timeout_secs."""
    kit = _kit(name)
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
            async with _started(name, kit.config(port, None, 0.5)) as adapter:
                async with asyncio.timeout(10):  # far above the adapter's own 0.5 s: it gives up by itself
                    with pytest.raises(Retryable):
                        await adapter.send(kit.message())
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_silent_peer_times_out_and_is_not_left_open(name: str) -> None:
    kit = _kit(name)
    async with Peer("silent", None, kit.respond) as peer, _started(name, kit.config(peer.port, None, 0.5)) as adapter:
        async with asyncio.timeout(10):
            with pytest.raises(Retryable) as caught:
                await adapter.send(kit.message())
        assert not isinstance(caught.value, Unreachable)  # the message went out: not "nothing was sent"
        await wait_until(lambda: peer.open == 0, timeout=5)  # the connection in an unknown state is dropped


@pytest.mark.parametrize("name", OUTBOUND)
async def test_a_cancelled_send_leaves_no_connection_open(name: str) -> None:
    kit = _kit(name)
    async with Peer("silent", None, kit.respond) as peer, _started(name, kit.config(peer.port, None, 30)) as adapter:
        task = asyncio.create_task(adapter.send(kit.message()))
        await wait_until(lambda: peer.requests == 1, timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: peer.open == 0, timeout=5)
        peer.answer = "accept"  # and the next send starts clean
        await adapter.send(kit.message())
        assert peer.requests == 2


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    folder: Path = tmp_path_factory.mktemp("pki")
    return make_pki(folder / "trusted"), make_pki(folder / "other", ca_name="Untrusted CA")


def _server_tls(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


@pytest.mark.parametrize("name", OUTBOUND)
async def test_tls_verifies_the_peer_and_refuses_a_wrong_ca(name: str, pkis: tuple[Pki, Pki]) -> None:
    kit = _kit(name)
    trusted, other = pkis
    async with Peer("accept", _server_tls(trusted), kit.respond) as peer:
        async with _started(name, kit.config(peer.port, TlsConfig(ca_file=str(trusted.ca)), 5)) as adapter:
            await adapter.send(kit.message())
        assert peer.requests == 1
        async with _started(name, kit.config(peer.port, TlsConfig(ca_file=str(other.ca)), 5)) as adapter:
            with pytest.raises(Retryable):
                await adapter.send(kit.message())
        assert peer.requests == 1  # nothing reached a peer the hub could not verify
