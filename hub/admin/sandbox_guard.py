"""The sandboxes' HTTP routes on the hub's port answer only with the admin API's bearer token.

A sandbox's listings show what it received: HL7 v2 messages with patient names (the DPI), documents
and their INS (the DMP), identities looked up from traits (INSi), mail (the peer MSSanté operator).
So, in every environment, ``/sandboxes`` and ``/sandboxes/<name>/...`` take the same tokens as the
admin API (:mod:`hub.admin.auth`):

============================================  ==========  ===========================================
request                                       role        audit entry
============================================  ==========  ===========================================
``GET /sandboxes`` (which sandboxes run)      viewer      none (no patient data)
``GET /sandboxes/<name>/...`` (listings)      viewer      ``sandbox_view``, target = the path
reads by POST (``http_reads``, INSi search)   viewer      ``sandbox_view``
other ``POST`` (fault knobs, ``send``)        operator    ``sandbox_action``
============================================  ==========  ===========================================

A missing or unknown token gets 401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3); a role too low
gets 403, and that refusal is in the trail too (the entry's outcome ``denied``: a known user tried what
their role does not allow, as the admin API records it). The audit entry of an allowed request is
written before the answer; when the trail cannot be written the request is refused (503), as the admin
API does. With the admin API off (``admin.enabled: false``) there is
no token to give, so the sandboxes answer 401.

Only these listings and knobs are guarded here: the protocol ports on which sandboxes emulate national
services (INSi, the DMP's XDS.b with mutual TLS, SMTP, e-Parcours FHIR with OAuth) keep the
authentication the real service has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hub.admin import audit
from hub.admin.api import ADMIN_KEY
from hub.admin.auth import Principal
from hub.errors import StoreError

__all__ = ["guard_index", "guard_route", "required_role"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="hub"'}


def required_role(sandbox: Any, method: str, path: str) -> str:
    """viewer for reads (GET, and the POST paths a sandbox lists in ``http_reads``), operator otherwise."""
    if method.upper() in ("GET", "HEAD") or path in getattr(sandbox, "http_reads", ()):
        return "viewer"
    return "operator"


def _answer(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": error, "detail": detail}, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


async def _principal(request: web.Request, role: str, action: str | None = None) -> Principal | web.Response:
    """The caller, or the refusal to send back; with `action`, a refusal for the role is audited as denied."""
    state = request.app.get(ADMIN_KEY)
    if state is None:
        return _answer(
            401, "authentication required", "sandboxes take the admin API's tokens; the admin API is off",
            headers=_UNAUTHENTICATED,
        )  # fmt: skip
    principal = await state.auth.authenticate(request.headers.get("Authorization"))
    if principal is None:
        return _answer(401, "authentication required", headers=_UNAUTHENTICATED)
    if not principal.can(role):
        if action is not None and state.hub.store is not None:
            # Best effort: the request is refused whether or not the entry could be written.
            with contextlib.suppress(StoreError):
                await audit.record(
                    state.hub.store, principal, action, outcome="denied", target=request.path[:200],
                    detail={"needs": role},
                )  # fmt: skip
        return _answer(403, "forbidden", {"needs": role, "role": principal.role})
    return principal


def guard_index(handler: Handler) -> Handler:
    """``GET /sandboxes``: a viewer token, no audit entry (names, kinds and ports only)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        who = await _principal(request, "viewer")
        return who if isinstance(who, web.Response) else await handler(request)

    return handle


def guard_route(hub: Any, sandbox: Any, name: str, method: str, path: str, handler: Handler) -> Handler:
    """`handler` of sandbox `name`, behind a token of the role its request needs, audited before it runs."""
    role = required_role(sandbox, method, path)
    action = "sandbox_view" if role == "viewer" else "sandbox_action"

    async def handle(request: web.Request) -> web.StreamResponse:
        who = await _principal(request, role, action)
        if isinstance(who, web.Response):
            return who
        if hub.store is None:
            return _answer(503, "audit trail unavailable: nothing was done")
        try:
            # The path only: a query string may carry an INS (DMP patient-view), which the trail need not hold.
            await audit.record(hub.store, who, action, target=request.path[:200], detail={"sandbox": name})
        except StoreError:
            return _answer(503, "audit trail unavailable: nothing was done")
        return await handler(request)

    return handle
