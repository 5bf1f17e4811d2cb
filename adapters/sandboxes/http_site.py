"""Serving a sandbox's own aiohttp application on its `listen` address (optionally over TLS)."""

from __future__ import annotations

from aiohttp import web

from adapters.tls import TlsConfig, server_context

__all__ = ["serve_app"]


async def serve_app(app: web.Application, listen: str, tls: TlsConfig | None = None) -> tuple[web.AppRunner, int]:
    """Start `app` on `listen` (``host:port``, port 0 for any); the runner to clean up and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    ssl_ctx = server_context(tls) if tls else None
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port), ssl_context=ssl_ctx)
    await site.start()
    return runner, int(runner.addresses[0][1])
