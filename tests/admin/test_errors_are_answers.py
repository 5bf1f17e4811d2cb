"""Malformed input to the admin API gets a 4xx answer, never a 500: each request as an attacker would send it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.admin.adminkit import TOKENS, admin_hub
from tests.hubkit import MllpClient, adt, mllp_port, wait_until


async def raw_request(port: int, request: bytes) -> int:
    """Send raw HTTP/1.1 bytes (headers a client library would refuse to write); the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_non_ascii_tokens_and_huge_cursors_are_refused_not_crashed(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _peer, apis):
        port = hub.http_port
        assert port is not None
        for token in ("t\xc3\xa9st".encode("latin-1"), b"hs1.\xff\xfe.abc", "hs1.é.é".encode()):
            request = b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
            assert await raw_request(port, request) == 401, token
        for path in ("/api/dead", "/api/audit"):
            cursor = "after" if path == "/api/dead" else "before"
            await apis["admin"].get(path, expect=400, **{cursor: "9" * 40})
            await apis["admin"].get(path, expect=400, **{cursor: str(2**63)})
        await apis["admin"].get("/api/dead", after=str(2**63 - 1))
        assert TOKENS  # the configured tokens still work after all that
        await apis["viewer"].get("/api/whoami")


async def test_replay_of_a_replay_is_an_answer(tmp_path: Path) -> None:
    async with admin_hub(tmp_path) as (hub, _peer, apis):
        client = await MllpClient.connect(mllp_port(hub))
        await client.send(adt("R1"))
        await client.close()
        [first] = (await apis["viewer"].get("/api/messages", control_id="R1"))["items"]
        again = await apis["operator"].post(f"/api/messages/{first['id']}/replay")
        twice = await apis["operator"].post(f"/api/messages/{again['new_id']}/replay")
        assert twice["replayed"] == again["new_id"] and twice["new_id"] not in (first["id"], again["new_id"])

        async def delivered() -> bool:
            return len(await hub.store.find_deliveries(status="delivered")) == 3  # type: ignore[union-attr]

        await wait_until(delivered, timeout=20)
