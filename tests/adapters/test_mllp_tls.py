"""MLLP over mutual TLS, listener and client, with a test PKI made on the fly."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from adapters.mllp.framing import frame
from adapters.mllp.outbound import MllpOutbound, MllpOutboundConfig
from adapters.tls import TlsConfig, client_context
from hub.content_types import ContentType
from hub.errors import NotConnected
from hub.message import Message
from hub.store import SearchQuery
from mappings.hl7v2 import read_header
from tests.hubkit import MllpClient, adt, mllp_port, running_hub, running_peer, wait_until, write_config
from tests.tlskit import make_pki


async def refused(port: int, ctx: ssl.SSLContext | None) -> bool:
    """True when the listener answers no ACK: handshake refused, connection closed, or silence."""
    try:
        client = await MllpClient.connect(port, ssl=ctx, server_hostname="127.0.0.1" if ctx else None)
        await client.send_raw(frame(adt("REFUSED")))
        ack = await client.ack(timeout=3)
        await client.close()
    except (ssl.SSLError, ConnectionError, TimeoutError):
        return True
    return ack is None


async def test_mutual_tls_listener_and_client(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", ca_name="Untrusted CA")
    tls = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
        "require_client_cert": True,
    }
    async with running_peer() as peer:
        config = write_config(tmp_path, peer_port=peer.port, listener={"tls": tls})
        async with running_hub(config) as hub:
            port = mllp_port(hub)
            # The hub's own MLLP client, with a client certificate: accepted end to end.
            out = MllpOutbound(
                "partner",
                MllpOutboundConfig(
                    endpoint=f"127.0.0.1:{port}",
                    tls=TlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)),
                ),
            )
            _, header = read_header(adt("TLS1"))
            await out.send(Message.new(adt("TLS1"), content_type=ContentType.HL7V2, metadata=header.metadata()))
            await out.stop()
            await wait_until(lambda: len(peer.bodies) == 1)
            assert hub.describe_sandboxes() == [] and hub.listeners["mllp_in"].describe()["protocol"] == "mllp+tls"

            # A client whose certificate comes from another CA is refused during the handshake.
            bad = client_context(
                TlsConfig(ca_file=str(pki.ca), cert_file=str(other.client_cert), key_file=str(other.client_key))
            )
            assert await refused(port, bad)
            # A client that does not trust the hub's CA refuses the hub.
            stranger = MllpOutbound(
                "x",
                MllpOutboundConfig(
                    endpoint=f"127.0.0.1:{port}",
                    tls=TlsConfig(ca_file=str(other.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)),
                ),
            )
            with pytest.raises(NotConnected):
                await stranger.send(Message.new(adt("TLS3"), content_type=ContentType.HL7V2, metadata={}))
            # Plain MLLP on the TLS port gets nothing.
            assert await refused(port, None)
            stored = await hub.store.search(SearchQuery())  # type: ignore[union-attr]
            assert [r.message.metadata["control_id"] for r in stored] == ["TLS1"]
