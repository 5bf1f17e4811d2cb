"""The contract every registered inbound adapter (listener) keeps, each in a real hub on loopback sockets.

Parametrised over the registry's inbound adapters: registering a new one puts it under this suite, and
`test_every_inbound_adapter_has_a_sender` fails until it has a sender here (or a stated reason to have none).
The contract (hub/ports.py, DESIGN.md): commit before acknowledge (a hub that cannot take the message
answers the protocol's "try again" and acknowledges nothing); a refused message is stored with its reason;
oversize input is refused with the protocol's error; a slow peer is cut off by its timeout without blocking
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from adapters.mllp.framing import frame
from hub import registry
from hub.runtime import Hub
from hub.store import SearchQuery
from tests.conftest import free_port
from tests.hubkit import MllpClient, ack_fields, adt, running_hub, write_config

Answer = Literal["accepted", "retry", "refused", "too_large"]

NO_MESSAGE_INTAKE = {"imap": "serves mailboxes to their owners: it takes no message into the hub"}
SENDER_MISSING = {
    "smtp_mta": "an SMTP sender (250/451/552/554 over STARTTLS with a peer certificate) is still to write here",
    "smtp_submission": "an SMTP submission sender (AUTH, 250/451/552) is still to write here",
}

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


@dataclass(frozen=True)
class SenderKit:
    """How to run one inbound adapter in a hub and talk its protocol to it."""

    listener: dict[str, Any]
    route_when: dict[str, Any]
    send: Callable[[Hub, bytes], Awaitable[Answer]]
    good: Callable[[int], bytes]
    bad: bytes  # a message the listener refuses (protocol-correct error, stored with its reason)
    port: Callable[[Hub], int]
    slow_timeout: float  # the listener's timeout on a peer that opens a connection and says nothing


SENDERS: dict[str, SenderKit] = {
    "mllp": SenderKit(
        listener={
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
    ),
    "fhir": SenderKit(
        listener={"type": "fhir", "max_body_bytes": SMALL},
        route_when={},
        send=_fhir_send,
        good=_patient,
        bad=_patient(0, valid=False),
        port=lambda hub: int(hub.http_port or 0),
        slow_timeout=0.5,
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
        listeners={"in": kit.listener},
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
    big = kit.good(3)
    big = big + b" " * (SMALL + 1) if name == "fhir" else big + b"NTE|1||" + b"x" * (SMALL + 1) + b"\r"
    async with running_hub(_config(tmp_path, kit)) as hub:
        assert hub.store is not None
        assert await kit.send(hub, big) == "too_large"
        [rec] = await hub.store.search(SearchQuery())
        assert rec.status == "rejected" and rec.reason  # what was received of it is kept, with the reason
        assert await kit.send(hub, kit.good(4)) == "accepted"  # the listener is still serving


@pytest.mark.parametrize("name", INBOUND)
async def test_a_slow_peer_is_cut_off_without_blocking_the_others(name: str, tmp_path: Path) -> None:
    kit = _kit(name)
    async with running_hub(_config(tmp_path, kit)) as hub:
        reader, writer = await asyncio.open_connection("127.0.0.1", kit.port(hub))
        try:
            writer.write(frame(b"")[:1] if name == "mllp" else b"POST /fhir/Patient HTTP/1.1\r\n")
            await writer.drain()
            assert await kit.send(hub, kit.good(5)) == "accepted"  # served while the slow peer holds its socket
            async with asyncio.timeout(kit.slow_timeout * 20):  # closed by the listener's own timeout
                await reader.read()  # returns at the end of stream only
            assert reader.at_eof()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
