"""Fair connection slots on the hub's HTTP port (the rules of `hub.slots`, for aiohttp).

A connection is admitted before aiohttp sees it; it is *proven* once it has
sent one complete request head (the middleware :func:`prove_connection`),
until then the oldest unproven connection gives its slot to a newcomer when
the port, or the peer address's share, is full. aiohttp itself closes a
connection idle for ``http.idle_timeout_secs``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any

from aiohttp import web
from aiohttp.web_runner import BaseSite

from hub.slots import Slot, Slots

__all__ = ["SLOTS_KEY", "SlottedSite", "prove_connection"]

#: The app's map of open transports to their slots (filled by SlottedSite, read by prove_connection).
SLOTS_KEY: web.AppKey[dict[Any, Slot]] = web.AppKey("http_slots", dict)


class _Admitting(asyncio.Protocol):
    """Stands before aiohttp's protocol: takes a slot first, forwards everything, gives the slot back."""

    def __init__(self, inner: asyncio.Protocol, slots: Slots, by_transport: dict[Any, Slot]) -> None:
        self._inner = inner
        self._slots = slots
        self._by_transport = by_transport
        self._slot: Slot | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        self._slot = self._slots.admit(str(peername[0]) if peername else "", transport.abort)  # type: ignore[attr-defined]
        if self._slot is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport
        self._by_transport[transport] = self._slot
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._slot is None:
            return
        self._slot.release()
        self._by_transport.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class SlottedSite(BaseSite):
    """aiohttp's TCPSite, with every connection admitted into `slots` first."""

    __slots__ = ("_by_transport", "_host", "_port", "bound_port", "slots")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        slots: Slots,
        ssl_context: SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port = host, port
        self.slots = slots
        self._by_transport: dict[Any, Slot] = runner.app[SLOTS_KEY]
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Admitting(server(), self.slots, self._by_transport),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
        if self._server.sockets:
            self.bound_port = self._server.sockets[0].getsockname()[1]


@web.middleware
async def prove_connection(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A complete request head arrived: the connection is a real client's, and keeps its slot."""
    slot = request.app[SLOTS_KEY].get(request.transport)
    if slot is not None:
        slot.prove()
    return await handler(request)
