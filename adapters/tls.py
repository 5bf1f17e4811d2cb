"""TLS for adapters: the hub's settings and contexts (`hub.tls`), and the online revocation check wired into
aiohttp's client connections."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from hub.tls import RevocationError, TlsConfig, client_context, server_context, verify_peer

__all__ = ["RevocationError", "TlsConfig", "VerifyingConnector", "client_context", "server_context", "verify_peer"]


class VerifyingConnector(aiohttp.TCPConnector):
    """A TCPConnector whose new TLS connections pass :func:`verify_peer` before a request is written on them.

    aiohttp offers no public hook between the handshake and the first request byte; its own certificate
    fingerprint check sits at this point (``_wrap_create_connection``, aiohttp 3.x), so the revocation check
    goes there too. A refused server surfaces as the connection error it is (``ClientConnectorError``),
    which the adapters already classify as an unreachable destination: nothing was sent.
    """

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> tuple[asyncio.Transport, Any]:
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        try:
            await verify_peer(transport.get_extra_info("ssl_object"))
        except RevocationError as exc:
            transport.abort()
            raise aiohttp.ClientConnectorError(kwargs["req"].connection_key, ConnectionRefusedError(str(exc))) from None
        return transport, protocol
