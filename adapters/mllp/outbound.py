"""MLLP client: persistent connections to one destination, one message at a time on each, ACK classified.

MLLP is strictly one message, then its ACK, on a connection (HL7 v2.5.1
Appendix C.4.3), so parallel sends need parallel connections: the adapter
keeps a pool of idle connections and opens another when every one is busy,
up to `max_connections`. How many sends run at once is the delivery worker's
`max_in_flight`, which also keeps FIFO per ordering key (a key never has two
messages in flight), so the pool needs no ordering of its own.

AA (and CA) → accept; AE/CE, no ACK in time, a lost connection → retry;
AR/CR → reject. An ACK whose MSA-2 does not echo our MSH-10 means the stream
is out of step: the connection is dropped and the attempt retried.

The ACK's bytes are the attempt's reply (:class:`hub.PeerReply`, kind ``hl7v2-ack``, summary
MSA-1): returned on AA/CA, attached to the error otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from pydantic import Field

from adapters.mllp.framing import CR, FS, VT, FrameReader, FrameTimeout
from adapters.tls import RevocationError, TlsConfig, client_context, verify_peer
from hub.content_types import ContentType
from hub.errors import MessageError, NotConnected, Rejected, Retryable, Unreachable
from hub.message import Message
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind
from mappings.hl7v2.er7 import Er7Message

__all__ = ["MllpOutbound", "MllpOutboundConfig", "classify_ack"]


class MllpOutboundConfig(ComponentConfig):
    endpoint: str = Field(description="host:port of the receiving MLLP listener.")
    tls: TlsConfig | None = Field(None, description="Connect with TLS (client certificate for mutual TLS).")
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up opening the connection after this.")
    ack_timeout_secs: float = Field(30.0, gt=0, description="Give up waiting for the ACK after this.")
    max_frame_bytes: int = Field(1 * 2**20, ge=1024, description="Largest ACK accepted from the peer.")
    max_connections: int = Field(
        64,
        ge=1,
        le=1000,
        description="Most connections open at once to the receiver (sends beyond wait for one); the routes' "
        "`max_in_flight` decides how many are used. 1 for a receiver that serves one connection at a time.",
    )


def classify_ack(ack: bytes, control_id: str) -> tuple[str, str]:
    """(MSA-1, error text) of an ACK; raise Retryable when it is not an ACK for `control_id`."""
    try:
        er7 = Er7Message(ack, lenient=True)  # an ACK whose MSH-18 lies still says AA or AE
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


class _Connection:
    """One open MLLP connection: its stream and the frame reader over it."""

    __slots__ = ("frames", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: FrameReader) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = frames

    def usable(self) -> bool:
        # A receiver may close an idle connection; its EOF is already buffered by then.
        return not self.writer.is_closing() and not self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@register("outbound", "mllp", config=MllpOutboundConfig)
class MllpOutbound:
    """Send HL7 v2 over MLLP on a pool of persistent connections and classify the ACK."""

    def __init__(self, name: str, config: MllpOutboundConfig) -> None:
        self.name = name
        self.config = config
        self._slots = asyncio.Semaphore(config.max_connections)
        self._idle: list[_Connection] = []

    async def start(self) -> None:
        """Connections are opened on first use, so a peer that is down does not stop the hub."""

    async def stop(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(c.close() for c in idle))

    async def _connect(self) -> _Connection:
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
        try:
            await verify_peer(writer.get_extra_info("ssl_object"))
        except RevocationError as exc:
            writer.transport.abort()
            raise Unreachable(f"refused {self.config.endpoint}'s certificate: {exc}") from None
        frames = FrameReader(
            reader,
            max_frame_bytes=self.config.max_frame_bytes,
            read_timeout_secs=self.config.ack_timeout_secs,
        )
        return _Connection(reader, writer, frames)

    async def _take(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            await conn.close()
        return await self._connect()

    async def send(self, message: Message) -> PeerReply:
        control_id = message.metadata.get("control_id", "")
        async with self._slots:
            conn = await self._take()
            reply: PeerReply | None = None
            try:
                ack = await self._exchange(conn, message.body)
                reply = PeerReply.of(ReplyKind.HL7V2_ACK, "", ack, content_type=ContentType.HL7V2)
                code, err = classify_ack(ack, control_id)
            except Retryable as exc:
                await conn.close()  # out of step or timed out: this connection is not reused
                raise exc.with_reply(reply) from None
            except BaseException:
                # Lost or cancelled mid-exchange: this connection is not reused.
                await conn.close()
                raise
            self._idle.append(conn)
        reply = dataclasses.replace(reply, summary=code[:8])
        if code in ("AA", "CA"):
            return reply
        if code in ("AR", "CR"):
            raise Rejected(f"{code} {err}".strip(), ack_code=code, reply=reply)
        raise Retryable(f"{code} {err}".strip(), reply=reply)

    async def _exchange(self, conn: _Connection, body: bytes) -> bytes:
        """Write one frame and read its ACK frame."""
        try:
            # Three writes rather than one framed copy of a message that may weigh megabytes.
            conn.writer.write(VT)
            conn.writer.write(body)
            conn.writer.write(FS + CR)
            await conn.writer.drain()
            async with asyncio.timeout(self.config.ack_timeout_secs):
                ack = await conn.frames.read_frame()
        except (TimeoutError, FrameTimeout):
            raise Retryable(f"no ACK within {self.config.ack_timeout_secs:g}s") from None
        except (OSError, ConnectionError) as exc:
            raise NotConnected(f"connection lost: {type(exc).__name__}") from None
        if ack is None:
            raise NotConnected("peer closed the connection before acknowledging")
        return ack.body

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "protocol": "mllp", "to": self.config.endpoint}
