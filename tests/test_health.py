"""/healthz tells the truth: 200 when the node can keep and move messages, 503 with the reason when not.

(The store's side is proven against a real PostgreSQL going down: tests/integration/test_store_outage.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.hubkit import running_hub, running_peer, write_config


async def _health(port: int | None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
        return r.status, await r.json()


async def test_health_is_ok_then_names_a_listener_that_stopped_accepting(tmp_path: Path) -> None:
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        status, body = await _health(hub.http_port)
        assert status == 200 and body["status"] == "ok" and body["problems"] == {}
        listener = hub.listeners["mllp_in"]
        listener._server.close()  # the listening socket goes away (as after a bind failure or a crash)
        status, body = await _health(hub.http_port)
        assert status == 503 and body["status"] == "unavailable"
        assert body["problems"] == {"listener mllp_in": "not accepting connections"}

