"""The hub's HTTP server: health, queue status, and the sandboxes' listings.

The admin API, console, FHIR endpoint and metrics grow here; for now it
serves what `make run` users and scripts need to watch messages flow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["build_app"]

HUB_KEY: web.AppKey[Any] = web.AppKey("hub", object)


async def _health(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    return web.json_response(
        {"status": "ok", "node": hub.config.node, "undelivered": hub.undelivered, "counters": hub.counters}
    )


async def _queues(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    out = []
    for (route, destination), worker in hub.workers.items():
        out.append(
            {
                "route": route,
                "destination": destination,
                "in_flight": worker.in_flight,
                "paused": worker.paused,
                "outcomes": {o: n for (r, d, o), n in hub.outcomes.items() if (r, d) == (route, destination)},
            }
        )
    return web.json_response(out)


async def _sandboxes(request: web.Request) -> web.Response:
    return web.json_response(request.app[HUB_KEY].describe_sandboxes())


def build_app(hub: Hub) -> web.Application:
    app = web.Application(client_max_size=16 * 2**20)
    app[HUB_KEY] = hub
    app.router.add_get("/healthz", _health)
    app.router.add_get("/api/queues", _queues)
    app.router.add_get("/sandboxes", _sandboxes)
    for name, sandbox in hub.sandboxes.items():
        for method, path, handler in sandbox.http_routes():
            app.router.add_route(method, f"/sandboxes/{name}/{path}", handler)
    # Inbound adapters served on this port give absolute paths (e.g. /fhir/Bundle).
    for listener in hub.listeners.values():
        for method, path, handler in getattr(listener, "http_routes", list)():
            app.router.add_route(method, path, handler)
    return app
