"""The HTTP port does not keep idle connections: one that sends nothing is closed after http.idle_timeout_secs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.adapters.test_fhir import intake_config
from tests.hubkit import running_hub


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
