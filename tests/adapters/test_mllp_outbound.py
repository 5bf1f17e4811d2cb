"""The MLLP client against a fake receiver with fault knobs: ACK classification and the connection."""

from __future__ import annotations

import asyncio

import pytest

from adapters.mllp.outbound import MllpOutbound, MllpOutboundConfig, classify_ack
from hub.content_types import ContentType
from hub.errors import NotConnected, Rejected, Retryable
from hub.message import Message
from mappings.hl7v2 import build_ack, read_header
from tests.hubkit import adt, running_peer


def message(control_id: str) -> Message:
    _, header = read_header(adt(control_id))
    return Message.new(adt(control_id), content_type=ContentType.HL7V2, metadata=header.metadata())


def client(port: int, **kw: float) -> MllpOutbound:
    return MllpOutbound("dpi", MllpOutboundConfig(endpoint=f"127.0.0.1:{port}", **kw))


async def test_aa_accepts_on_one_persistent_connection() -> None:
    async with running_peer() as peer:
        out = client(peer.port)
        for i in range(5):
            await out.send(message(f"M{i}"))
        assert [b.split(b"|")[9] for b in peer.bodies] == [f"M{i}".encode() for i in range(5)]
        assert peer.connections == 1
        await out.stop()


@pytest.mark.parametrize(("code", "error"), [("AE", Retryable), ("AR", Rejected)])
async def test_ae_retries_and_ar_rejects(code: str, error: type[Exception]) -> None:
    async with running_peer(ack=code) as peer:
        out = client(peer.port)
        with pytest.raises(error) as info:
            await out.send(message("X"))
        assert code in str(info.value) and "207" in str(info.value)
        if code == "AR":
            assert info.value.ack_code == "AR"  # type: ignore[attr-defined]
            assert not isinstance(info.value, Retryable)
        await out.stop()


async def test_ack_timeout_retries_and_reconnects() -> None:
    async with running_peer(delay_secs=0.5) as peer:
        out = client(peer.port, ack_timeout_secs=0.1)
        with pytest.raises(Retryable, match="no ACK within"):
            await out.send(message("SLOW"))
        peer.delay_secs = 0
        await out.send(message("FAST"))
        assert peer.connections == 2  # the late stream was abandoned
        await out.stop()


async def test_dropped_connection_is_not_connected_then_recovers() -> None:
    async with running_peer(drop_every=2) as peer:
        out = client(peer.port)
        await out.send(message("ONE"))
        with pytest.raises(NotConnected):
            await out.send(message("TWO"))
        await out.send(message("THREE"))
        assert peer.connections == 2
        await out.stop()


async def test_peer_down_is_not_connected() -> None:
    async with running_peer() as peer:
        port = peer.port
    out = client(port, connect_timeout_secs=1)
    with pytest.raises(NotConnected):
        await out.send(message("NOBODY"))


async def test_ack_without_trailing_cr_is_read() -> None:
    async with running_peer(omit_trailing_cr=True) as peer:
        out = client(peer.port)
        await out.send(message("A"))
        await out.send(message("B"))
        assert len(peer.bodies) == 2
        await out.stop()


def test_classify_ack_checks_msa2_and_reads_err() -> None:
    _, header = read_header(adt("C1"))
    assert classify_ack(build_ack(header, "AA"), "C1") == ("AA", "")
    code, err = classify_ack(build_ack(header, "AR", error_code="103", error_text="bad table"), "C1")
    assert code == "AR" and "103" in err
    with pytest.raises(Retryable, match="another message"):
        classify_ack(build_ack(header, "AA"), "OTHER")
    with pytest.raises(Retryable):
        classify_ack(b"not an ack", "C1")


async def test_concurrent_sends_use_parallel_connections_and_reuse_them() -> None:
    # MLLP allows one message then its ACK per connection: four at once need four connections.
    async with running_peer(delay_secs=0.2) as peer:
        out = client(peer.port)
        await asyncio.gather(*(out.send(message(f"P{i}")) for i in range(4)))
        assert peer.connections == 4
        await asyncio.gather(*(out.send(message(f"Q{i}")) for i in range(4)))
        assert peer.connections == 4  # the idle ones were reused
        assert sorted(b.split(b"|")[9] for b in peer.bodies) == sorted(
            f"{p}{i}".encode() for p in "PQ" for i in range(4)
        )
        await out.stop()


async def test_max_connections_caps_the_pool() -> None:
    async with running_peer(delay_secs=0.05) as peer:
        out = client(peer.port, max_connections=1)
        await asyncio.gather(*(out.send(message(f"S{i}")) for i in range(4)))
        assert peer.connections == 1
        assert len(peer.bodies) == 4
        await out.stop()
