"""MLLP listener: frames in, durable commit, original-mode ACK out (HL7 v2.5 §2.9.2).

AA only after the message and its deliveries are committed. AE when the hub
cannot take it now (store down, above the high-water mark): the sender keeps
the message and resends. AR when the message itself is unusable: it is
stored with status ``rejected`` and the reason, and the ERR segment says why
(HL7 table 0357 code, location, text). A message whose MSH-10 was already
received from the same sending application and facility is acknowledged AA
again and not routed twice (the sender lost our first ACK).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from pydantic import Field

from adapters.connections import Connections
from adapters.mllp.framing import Frame, FrameReader, FrameTimeout, frame
from adapters.tls import RevocationError, TlsConfig, server_context, verify_peer
from hub import registry
from hub.content_types import ContentType
from hub.errors import ConfigError, MessageError, Retryable
from hub.message import Message
from hub.ports import InboundContext
from hub.registry import ComponentConfig, register
from hub.slots import Slots
from mappings.hl7v2 import build_ack, build_bare_ack, check_header, read_header
from mappings.hl7v2.er7 import Header

__all__ = ["MllpInbound", "MllpInboundConfig"]

log = structlog.get_logger("hub.mllp.in")


class MllpInboundConfig(ComponentConfig):
    listen: str = Field("127.0.0.1:2575", description="host:port to listen on (2575 is the MLLP default).")
    tls: TlsConfig | None = Field(None, description="Serve MLLP over TLS (mutual TLS with require_client_cert).")
    max_connections: int = Field(
        64,
        ge=1,
        description="Connections served at once. A newcomer over the limit takes the slot of the oldest "
        "connection that has not yet sent a frame answered AA; when there is none it is closed at once.",
    )
    max_connections_per_peer: int = Field(
        16, ge=1, description="Connections one peer address may hold at once (same rule over its own share)."
    )
    first_frame_timeout_secs: float = Field(
        30.0,
        gt=0,
        description="Close a new connection (TLS handshake included) that has not started its first frame this "
        "long after connecting; receive_timeout_secs applies once a frame was answered AA.",
    )
    max_frame_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Largest message accepted; larger ones are answered AR and stored cut.",
    )
    receive_timeout_secs: float | None = Field(
        600.0, gt=0, description="Close a connection idle this long between frames (none: wait forever)."
    )
    read_timeout_secs: float = Field(
        30.0, gt=0, description="Close a connection silent this long in the middle of a frame."
    )
    frame_timeout_secs: float = Field(
        300.0, gt=0, description="Close a connection whose frame is not complete this long after it started."
    )
    dedup: bool = Field(
        True, description="Acknowledge a repeated MSH-10 from the same sender AA without routing it again."
    )
    checks: list[str] = Field(
        default_factory=list,
        description="Registered checks run on each message before the ACK (off the event loop), e.g. "
        "v2_documents (the Segur volet's rules on ORU/MDM documents): a refused message is answered AR + ERR "
        "and stored as rejected; the metadata a check returns is added before routing.",
    )


def _shortest(a: float, b: float | None) -> float:
    return a if b is None else min(a, b)


def ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK built by the hub (written with the sender's field separator, MSH-1)."""
    marker = b"\rMSA" + ack[3:4]
    start = ack.find(marker)
    return ack[start + 5 : start + 7].decode("ascii", "replace") if start >= 0 else ""


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@register("inbound", "mllp", config=MllpInboundConfig)
class MllpInbound:
    """HL7 v2 over MLLP: commit, then AA; AE when full or down; AR (stored) when unusable."""

    def __init__(self, name: str, config: MllpInboundConfig, ctx: InboundContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self._server: asyncio.Server | None = None
        self._connections = Connections()
        self.slots = Slots(max_connections=config.max_connections, max_per_peer=config.max_connections_per_peer)
        self.port: int | None = None
        self._checks: list[tuple[str, Any]] = []  # (name, check(body) -> metadata)
        for check in config.checks:
            comp = registry.get("check", check)
            if comp is None:
                raise ConfigError(f"listener {name}: no registered check {check!r}")
            self._checks.append((check, comp.factory))

    def is_serving(self) -> bool:
        """True while the listening socket accepts connections (for /healthz)."""
        return self._server is not None and self._server.is_serving()

    def describe(self) -> dict[str, Any]:
        return {
            "listener": self.name,
            "protocol": "mllp+tls" if self.config.tls else "mllp",
            "listen": self.config.listen,
            "port": self.port,
        }

    async def start(self) -> None:
        host, port = _host_port(self.config.listen)
        ssl_ctx = server_context(self.config.tls) if self.config.tls else None
        self._server = await asyncio.start_server(
            self._on_connection,
            host,
            port,
            ssl=ssl_ctx,
            limit=2**16,
            ssl_handshake_timeout=self.config.first_frame_timeout_secs if ssl_ctx else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._connections.close_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        slot = self.slots.admit(str(peername[0]) if peername else "", writer.transport.abort)
        if slot is None:
            log.warning("mllp_connection_refused", listener=self.name, reason="max_connections")
            writer.transport.abort()
            return
        if self.config.tls is not None:
            try:
                await verify_peer(writer.get_extra_info("ssl_object"))
            except RevocationError as exc:
                # Before a frame is read: nothing of a revoked peer is taken (no ACK, the connection closed).
                log.warning("mllp_peer_refused", listener=self.name, reason=str(exc))
                slot.release()
                writer.transport.abort()
                return
        task = self._connections.add(writer)
        frames = FrameReader(
            reader,
            max_frame_bytes=self.config.max_frame_bytes,
            receive_timeout_secs=_shortest(self.config.first_frame_timeout_secs, self.config.receive_timeout_secs),
            read_timeout_secs=self.config.read_timeout_secs,
            frame_timeout_secs=self.config.frame_timeout_secs,
        )
        try:
            while True:
                got = await frames.read_frame()
                if got is None:
                    break
                ack = await self._handle(got)
                writer.write(frame(ack))
                await writer.drain()
                if not slot.proven and ack_code(ack) == "AA":
                    # A real sender now: it keeps its slot and gets the long idle timeout.
                    slot.prove()
                    frames.receive_timeout_secs = self.config.receive_timeout_secs
        except FrameTimeout as exc:
            log.info("mllp_connection_timeout", listener=self.name, reason=str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a listener never dies of one connection
            log.error("mllp_connection_error", listener=self.name, error=type(exc).__name__)
        finally:
            if frames.garbage_bytes or frames.truncated_frames:
                log.warning(
                    "mllp_framing_anomaly",
                    listener=self.name,
                    garbage_bytes=frames.garbage_bytes,
                    truncated_frames=frames.truncated_frames,
                )
            slot.release()
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, got: Frame) -> bytes:
        """Process one frame and return the ACK to send."""
        header: Header | None = None
        try:
            er7, header = read_header(got.body)
            if got.oversized:
                raise MessageError(
                    f"message of {got.size} bytes exceeds max_frame_bytes ({self.config.max_frame_bytes})"
                )
            check_header(er7, header)
            extra = await self._run_checks(got.body)
        except MessageError as exc:
            return await self._refuse(got, header, exc)
        message = Message.new(
            got.body, content_type=ContentType.HL7V2, metadata={**header.metadata(), **extra, "endpoint": self.name}
        )
        dedup_key = (
            f"{self.name}|{header.sending_app}|{header.sending_facility}|{header.control_id}"
            if self.config.dedup
            else None
        )
        try:
            result = await self.ctx.submit(message, dedup_key=dedup_key)
        except Retryable as exc:
            return build_ack(header, "AE", error_code="207", error_text=str(exc))
        if result.duplicate:
            log.info("mllp_duplicate", listener=self.name, message_id=result.message_id)
        return build_ack(header, "AA")

    async def _run_checks(self, body: bytes) -> dict[str, str]:
        """The configured checks, in a worker thread (a document check parses XML); MessageError refuses."""
        out: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        for name, check in self._checks:
            try:
                out.update(await loop.run_in_executor(None, check, body))
            except MessageError:
                raise
            except Exception as exc:  # a check's bug refuses one message (stored, replayable), not the listener
                log.error("mllp_check_error", listener=self.name, check=name, error=type(exc).__name__)
                raise MessageError(f"check {name} failed on this message (internal error)", code="207") from None
        return out

    async def _refuse(self, got: Frame, header: Header | None, exc: MessageError) -> bytes:
        metadata = {**(header.metadata() if header else {}), "endpoint": self.name}
        if got.oversized:
            metadata["truncated_from_bytes"] = str(got.size)
        message = Message.new(got.body, content_type=ContentType.HL7V2, metadata=metadata)
        try:
            await self.ctx.reject(message, reason=exc.reason)
        except Retryable as store_exc:
            # Not stored, so not refused for good: the sender must keep it and try again.
            if header:
                return build_ack(header, "AE", error_code="207", error_text=str(store_exc))
            return build_bare_ack("AE", error_code="207", error_text=str(store_exc))
        log.info("mllp_rejected", listener=self.name, message_id=message.id, code=exc.code, reason=exc.reason)
        if header:
            return build_ack(header, "AR", error_code=exc.code, error_text=exc.reason, error_location=exc.location)
        return build_bare_ack("AR", error_code=exc.code, error_text=exc.reason)
