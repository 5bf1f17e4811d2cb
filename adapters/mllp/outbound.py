"""MLLP client: one persistent connection per destination, one message at a time, ACK classified.

AA (and CA) → accept; AE/CE, no ACK in time, a lost connection → retry;
AR/CR → reject. An ACK whose MSA-2 does not echo our MSH-10 means the stream
is out of step: the connection is dropped and the attempt retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import Field

from adapters.mllp.framing import CR, FS, VT, FrameReader, FrameTimeout
from adapters.tls import TlsConfig, client_context
from hub.errors import MessageError, NotConnected, Rejected, Retryable, Unreachable
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.hl7v2.er7 import Er7Message

__all__ = ["MllpOutbound", "MllpOutboundConfig", "classify_ack"]


class MllpOutboundConfig(ComponentConfig):
    endpoint: str = Field(description="host:port of the receiving MLLP listener.")
    tls: TlsConfig | None = Field(None, description="Connect with TLS (client certificate for mutual TLS).")
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up opening the connection after this.")
    ack_timeout_secs: float = Field(30.0, gt=0, description="Give up waiting for the ACK after this.")
    max_frame_bytes: int = Field(1 * 2**20, ge=1024, description="Largest ACK accepted from the peer.")


def classify_ack(ack: bytes, control_id: str) -> tuple[str, str]:
    """(MSA-1, error text) of an ACK; raise Retryable when it is not an ACK for `control_id`."""
    try:
        er7 = Er7Message(ack)
    except MessageError:
        raise Retryable("peer answered with something that is not an HL7 message") from None
    code = er7.value("MSA", 1)
    echoed = er7.value("MSA", 2)
    if not code:
        raise Retryable("peer ACK has no MSA-1")
    if echoed and control_id and echoed != control_id:
        raise Retryable("peer ACK is for another message (MSA-2 differs)")
    err = " ".join(p for p in (er7.value("ERR", 3, 1), er7.value("ERR", 3, 2), er7.value("MSA", 3)) if p)
    return code, err


@register("outbound", "mllp", config=MllpOutboundConfig)
class MllpOutbound:
    """Send HL7 v2 over MLLP on one persistent connection and classify the ACK."""

    def __init__(self, name: str, config: MllpOutboundConfig) -> None:
        self.name = name
        self.config = config
        self._lock = asyncio.Lock()
        self._reader: FrameReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        """Connections are opened on first use, so a peer that is down does not stop the hub."""

    async def stop(self) -> None:
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connect(self) -> None:
        host, _, port = self.config.endpoint.rpartition(":")
        ssl_ctx = client_context(self.config.tls) if self.config.tls else None
        server_hostname = (self.config.tls.server_hostname or host) if self.config.tls else None
        try:
            async with asyncio.timeout(self.config.connect_timeout_secs):
                reader, writer = await asyncio.open_connection(
                    host.strip("[]"), int(port), ssl=ssl_ctx, server_hostname=server_hostname
                )
        except (OSError, TimeoutError) as exc:
            # Nothing was sent: an outage, not an attempt (the worker's circuit takes it from here).
            raise Unreachable(f"cannot connect to {self.config.endpoint}: {type(exc).__name__}") from None
        self._writer = writer
        self._reader = FrameReader(
            reader,
            max_frame_bytes=self.config.max_frame_bytes,
            read_timeout_secs=self.config.ack_timeout_secs,
        )

    async def send(self, message: Message) -> None:
        control_id = message.metadata.get("control_id", "")
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                await self._connect()
            assert self._writer is not None and self._reader is not None
            try:
                # Three writes rather than one framed copy of a message that may weigh megabytes.
                self._writer.write(VT)
                self._writer.write(message.body)
                self._writer.write(FS + CR)
                await self._writer.drain()
                async with asyncio.timeout(self.config.ack_timeout_secs):
                    ack = await self._reader.read_frame()
            except (TimeoutError, FrameTimeout):
                await self._close()
                raise Retryable(f"no ACK within {self.config.ack_timeout_secs:g}s") from None
            except (OSError, ConnectionError) as exc:
                await self._close()
                raise NotConnected(f"connection lost: {type(exc).__name__}") from None
            if ack is None:
                await self._close()
                raise NotConnected("peer closed the connection before acknowledging")
            try:
                code, err = classify_ack(ack.body, control_id)
            except Retryable:
                await self._close()
                raise
        if code in ("AA", "CA"):
            return
        if code in ("AR", "CR"):
            raise Rejected(f"{code} {err}".strip(), ack_code=code)
        raise Retryable(f"{code} {err}".strip())

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "protocol": "mllp", "to": self.config.endpoint}
