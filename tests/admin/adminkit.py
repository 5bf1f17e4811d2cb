"""Test kit for the admin API: a hub with one token per role and a local user, and a small JSON client."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from hub.admin.auth import hash_password, hash_token
from hub.runtime import Hub
from tests.hubkit import running_hub, running_peer, write_config

TOKENS = {role: f"{role}-{secrets.token_urlsafe(24)}" for role in ("viewer", "operator", "admin")}
NAMES = {"viewer": "vera", "operator": "oscar", "admin": "ada"}
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)


def admin_section(**over: Any) -> dict[str, Any]:
    return {
        "tokens": [{"name": NAMES[role], "role": role, "token_hash": hash_token(t)} for role, t in TOKENS.items()],
        "users": {"uma": {"role": "operator", "password_hash": PASSWORD_HASH}},
        **over,
    }


class Api:
    """JSON over HTTP to the hub, as one role."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session, self.base, self.token = session, base, token

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def get(self, path: str, expect: int = 200, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        async with self.session.get(self.base + path, params=query, headers=self._headers()) as r:
            data = await r.json(content_type=None) if r.content_type == "application/json" else await r.text()
            assert r.status == expect, (r.status, data)
            return data

    async def post(self, path: str, body: Any = None, expect: int = 200) -> Any:
        async with self.session.post(self.base + path, json=body, headers=self._headers()) as r:
            data = await r.json(content_type=None)
            assert r.status == expect, (r.status, data)
            return data


@contextlib.asynccontextmanager
async def admin_hub(
    folder: Path, *, routes: list[dict[str, Any]] | None = None, peer: dict[str, Any] | None = None, **hub: Any
) -> AsyncIterator[tuple[Hub, Any, dict[str, Api]]]:
    """A running peer and hub; `apis` has one client per role, plus `anonymous`."""
    async with running_peer(**(peer or {})) as fake:
        admin = hub.pop("admin", admin_section())
        config = write_config(folder, peer_port=fake.port, routes=routes, admin=admin, **hub)
        async with running_hub(config) as h, aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{h.http_port}"
            apis = {role: Api(session, base, token) for role, token in TOKENS.items()}
            apis["anonymous"] = Api(session, base, None)
            yield h, fake, apis
