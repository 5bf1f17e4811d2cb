"""The hub's HTTP server: health, the admin API, the web console, metrics, sandboxes, HTTP listeners.

============================  ============================================================================
``/healthz``                  liveness and counters (public)
``/api/...``                  the admin API (bearer token, roles; :mod:`hub.admin.api`), its OpenAPI
                              document at ``/api/openapi.json``
``/``, ``/console/<file>``    the web console: plain HTML, CSS and JavaScript modules (``hub/console``)
``/metrics``                  Prometheus text format (:mod:`hub.metrics`); a token when
                              ``admin.metrics_auth`` is set
``/sandboxes/<name>/...``     the sandboxes' listings and knobs: the admin API's token, audited
                              (:mod:`hub.admin.sandbox_guard`)
(absolute paths)              inbound adapters served on this port, e.g. FHIR under ``/fhir``
============================  ============================================================================
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hub.http_slots import SLOTS_KEY, prove_connection
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hub.tls import RevocationError, verify_peer

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["build_app"]


@web.middleware
async def refuse_revoked_clients(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A client certificate that is revoked (or of unknown status, in hard mode) gets 403 (hub.revocation).

    Asked on every request of a TLS connection, because aiohttp has no hook after the handshake: a
    certificate already checked costs one cached lookup.
    """
    transport = request.transport
    if transport is not None:
        try:
            await verify_peer(transport.get_extra_info("ssl_object"))
        except RevocationError as exc:
            return web.json_response(
                {"error": "client certificate refused", "detail": str(exc)}, status=403, headers={"Connection": "close"}
            )
    return await handler(request)

HUB_KEY: web.AppKey[Any] = web.AppKey("hub", object)

_CONSOLE_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# The console loads nothing but its own files and talks only to this server.
_CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def _health(request: web.Request) -> web.Response:
    """200 "ok" when the node can keep and move messages; 503 "unavailable" with the reasons otherwise."""
    hub = request.app[HUB_KEY]
    health = await hub.health()
    ok = not health["problems"]
    return web.json_response(
        {
            "status": "ok" if ok else "unavailable",
            "node": hub.config.node,
            "undelivered": hub.undelivered,
            "counters": hub.counters,
            **health,
        },
        status=200 if ok else 503,
    )


async def _sandboxes(request: web.Request) -> web.Response:
    return web.json_response(request.app[HUB_KEY].describe_sandboxes())


async def _metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    if hub.config.admin.metrics_auth:
        from hub.admin.api import ADMIN_KEY

        state = request.app.get(ADMIN_KEY)
        if state is None or await state.auth.authenticate(request.headers.get("Authorization")) is None:
            return web.json_response(
                {"error": "authentication required"}, status=401, headers={"WWW-Authenticate": 'Bearer realm="hub"'}
            )
    return web.Response(body=await hub.metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


def _console_files() -> dict[str, tuple[bytes, str]]:
    """The console's files by name, read once from the package (works from a wheel or a checkout)."""
    root = importlib.resources.files("hub.console")
    files: dict[str, tuple[bytes, str]] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONSOLE_TYPES:
            files[entry.name] = (entry.read_bytes(), _CONSOLE_TYPES[suffix])
    return files


def _console_handlers(files: dict[str, tuple[bytes, str]]) -> tuple[Any, Any]:
    def respond(name: str) -> web.Response:
        body, ctype = files[name]
        return web.Response(
            body=body,
            content_type=ctype,
            charset="utf-8",
            headers={
                "Content-Security-Policy": _CONSOLE_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    async def index(_request: web.Request) -> web.Response:
        return respond("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files:  # only the packaged files: no path ever reaches the file system
            raise web.HTTPNotFound()
        return respond(name)

    return index, asset


def build_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=16 * 2**20, middlewares=[refuse_revoked_clients, prove_connection])
    app[HUB_KEY] = hub
    app[SLOTS_KEY] = {}
    app.router.add_get("/healthz", _health)
    app.router.add_get("/metrics", _metrics)
    if hub.config.admin.enabled:
        from hub.admin.api import mount

        mount(app, hub)
        index, asset = _console_handlers(_console_files())
        app.router.add_get("/", index)
        app.router.add_get("/console/{name}", asset)
    from hub.admin.sandbox_guard import guard_index, guard_route

    # In every environment: a sandbox's listings show patient data (issue #18, "production means production").
    app.router.add_get("/sandboxes", guard_index(_sandboxes))
    for name, sandbox in hub.sandboxes.items():
        for method, path, handler in sandbox.http_routes():
            guarded = guard_route(hub, sandbox, name, method, path, handler)
            app.router.add_route(method, f"/sandboxes/{name}/{path}", guarded)
    # Inbound adapters served on this port give absolute paths (e.g. /fhir/Bundle).
    for listener in hub.listeners.values():
        for method, path, handler in getattr(listener, "http_routes", list)():
            app.router.add_route(method, path, handler)
    return app
