"""The HTTP port does not keep idle connections: one that sends nothing is closed after http.idle_timeout_secs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.adapters.test_fhir import intake_config
from tests.hubkit import running_hub, wait_until


async def test_an_idle_http_connection_is_closed_after_idle_timeout(tmp_path: Path) -> None:
    config = intake_config(tmp_path, "http://127.0.0.1:1", http={"listen": "127.0.0.1:0", "idle_timeout_secs": 0.3})
    async with running_hub(config) as hub:
        assert hub.http_port is not None
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.http_port)
        try:
            async with asyncio.timeout(10):  # the library's default would hold it for an hour
                assert await reader.read() == b""
            assert time.monotonic() - started < 5
        finally:
            writer.close()


async def test_an_idle_crowd_never_blocks_a_real_http_client(tmp_path: Path) -> None:
    http = {"listen": "127.0.0.1:0", "max_connections": 8, "max_connections_per_peer": 4}
    async with running_hub(intake_config(tmp_path, "http://127.0.0.1:1", http=http)) as hub:
        assert hub.http_port is not None and hub.http_slots is not None
        port, slots = hub.http_port, hub.http_slots
        # A client that made a request on a kept-alive connection: proven, never evicted.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        assert await get_health(reader, writer)
        crowd = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0)) for _ in range(12)]
        crowd += [
            await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.1.{i}", 0)) for i in range(1, 11)
        ]
        await wait_until(lambda: slots.admitted == 1 + 22)  # every connection seen by the listener
        assert len(slots) == 8
        assert slots.count("127.0.0.1") <= 4 and slots.evicted >= 15
        fresh = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
        assert await get_health(*fresh)
        assert await get_health(reader, writer)  # the proven one is still served
        for _, w in [*crowd, fresh, (reader, writer)]:
            w.close()


async def get_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    return status.startswith(b"HTTP/1.1 200")
