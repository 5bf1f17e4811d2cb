"""An MLLP receiver with fault knobs: the fake DPI of `make run` and of the tests.

It acknowledges every frame with the configured code (AA / AE / AR), can
answer late, drop the connection without answering, or leave out the
trailing CR, and keeps the last messages it received (bounded) for listing
over HTTP at ``/sandboxes/<name>/messages``. Knobs can be changed while it
runs with ``POST /sandboxes/<name>/faults``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from adapters.connections import Connections
from adapters.mllp.framing import CR, FS, VT, FrameReader, FrameTimeout
from hub.errors import MessageError
from hub.message import utcnow
from hub.registry import ComponentConfig, register
from mappings.hl7v2 import build_ack, decode_er7, read_header

__all__ = ["MllpPeer", "MllpPeerConfig"]


class MllpPeerConfig(ComponentConfig):
    listen: str = Field("127.0.0.1:2576", description="host:port to listen on.")
    ack: Literal["AA", "AE", "AR"] = Field("AA", description="Acknowledgement code answered to every message.")
    delay_secs: float = Field(0.0, ge=0, description="Wait this long before answering.")
    drop_every: int = Field(0, ge=0, description="Close the connection without answering every Nth message.")
    omit_trailing_cr: bool = Field(False, description="Send ACK frames without the final CR.")
    keep: int = Field(1000, ge=1, le=100_000, description="How many received messages are kept for listing.")


@register("sandbox", "mllp_receiver", config=MllpPeerConfig)
class MllpPeer:
    """Fake MLLP receiver (a DPI, a lab) with fault knobs and a listing of what it received."""

    def __init__(self, name: str = "mllp_peer", config: MllpPeerConfig | None = None) -> None:
        self.name = name
        self.config = config or MllpPeerConfig(listen="127.0.0.1:0")
        self.ack = self.config.ack
        self.delay_secs = self.config.delay_secs
        self.drop_every = self.config.drop_every
        self.omit_trailing_cr = self.config.omit_trailing_cr
        self.received: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.config.keep)
        self.count = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._connections = Connections()
        self.port = 0

    @property
    def bodies(self) -> list[bytes]:
        return [r["raw"] for r in self.received]

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": self.name,
            "kind": "mllp_receiver",
            "listen": self.config.listen,
            "port": self.port,
            "messages": f"/sandboxes/{self.name}/messages",
        }

    async def start(self) -> None:
        host, _, port = self.config.listen.rpartition(":")
        self._server = await asyncio.start_server(self._serve, host or "127.0.0.1", int(port))
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._connections.close_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._connections.add(writer)
        self.connections += 1
        frames = FrameReader(reader, max_frame_bytes=64 * 2**20, read_timeout_secs=60)
        try:
            while (got := await frames.read_frame()) is not None:
                self.count += 1
                if self.drop_every and self.count % self.drop_every == 0:
                    break
                if self.delay_secs:
                    await asyncio.sleep(self.delay_secs)
                ack = self._record_and_ack(got.body)
                writer.write(VT + ack + FS + (b"" if self.omit_trailing_cr else CR))
                await writer.drain()
        except (ConnectionError, FrameTimeout):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _record_and_ack(self, body: bytes) -> bytes:
        try:
            _, header = read_header(body)
        except MessageError:
            return VT  # not HL7: answer nothing sensible; the sender will time out
        if self.ack == "AA":
            self.received.append(
                {
                    "seq": self.count,
                    "received_at": utcnow().isoformat(),
                    "control_id": header.control_id,
                    "message_type": header.type_trigger,
                    "size": len(body),
                    "raw": body,
                }
            )
            return build_ack(header, "AA")
        return build_ack(header, self.ack, error_code="207", error_text=f"sandbox answers {self.ack}")

    # -- HTTP ---------------------------------------------------------------------------------------
    def http_routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", "messages", self._list), ("POST", "faults", self._faults)]

    async def _list(self, request: web.Request) -> web.Response:
        out = [{k: v for k, v in r.items() if k != "raw"} | _text(r["raw"]) for r in self.received]
        return web.json_response(out)

    async def _faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        knobs = MllpPeerConfig.model_validate({**self.config.model_dump(), **data})
        self.ack, self.delay_secs, self.drop_every = knobs.ack, knobs.delay_secs, knobs.drop_every
        self.omit_trailing_cr = knobs.omit_trailing_cr
        return web.json_response(
            {
                "ack": self.ack,
                "delay_secs": self.delay_secs,
                "drop_every": self.drop_every,
                "omit_trailing_cr": self.omit_trailing_cr,
            }
        )


def _text(raw: bytes) -> dict[str, str]:
    """The body as text in its MSH-18 character set (the one HL7 v2 text layer), and that set."""
    try:
        text, codec = decode_er7(raw)
    except MessageError:
        return {"body": raw.decode("utf-8", "replace"), "charset": "invalid"}
    return {"body": text, "charset": codec}
