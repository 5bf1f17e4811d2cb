"""Slot exhaustion on the MLLP listener: crowds of idle connections never lock a real sender out.

Loopback answers on the whole of 127.0.0.0/8, so each test peer gets its own
source address (``local_addr``), as distinct hosts would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.hubkit import MllpClient, ack_fields, adt, mllp_port, running_hub, wait_until, write_config

LIMITS = {"max_connections": 8, "max_connections_per_peer": 4, "first_frame_timeout_secs": 30}


async def connect_from(port: int, source: str) -> MllpClient:
    return await MllpClient.connect(port, local_addr=(source, 0))


async def closed_by_listener(client: MllpClient, timeout: float = 5.0) -> bool:
    """True when the listener ended the connection (EOF or reset) within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            data = await client.frames._reader.read(1)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def test_idle_crowd_from_one_and_many_addresses_never_blocks_a_real_sender(tmp_path: Path) -> None:
    async with running_hub(write_config(tmp_path, peer_port=1, listener=LIMITS)) as hub:
        port = mllp_port(hub)
        listener = hub.listeners["mllp_in"]
        proven = await connect_from(port, "127.0.0.2")
        assert ack_fields(await proven.send(adt("PROVEN")))["MSA"][1] == "AA"
        # 20 idle connections from one address: it never holds more than its share.
        same = [await connect_from(port, "127.0.0.1") for _ in range(20)]
        await wait_until(lambda: listener.slots.count("127.0.0.1") == 4)
        assert all([await closed_by_listener(c) for c in same[:16]])
        # Then idle connections from 10 addresses, more than the listener's slots.
        crowd = [await connect_from(port, f"127.0.1.{i}") for i in range(1, 11) for _ in range(2)]
        await wait_until(lambda: listener.slots.admitted == 1 + 20 + 20)  # every connection seen by the listener
        assert len(listener.slots) == 8
        # A real sender from yet another address gets through at once, and the proven one is still served.
        real = await connect_from(port, "127.0.0.3")
        assert ack_fields(await real.send(adt("REAL")))["MSA"][1] == "AA"
        assert ack_fields(await proven.send(adt("PROVEN2")))["MSA"][1] == "AA"
        assert listener.slots.evicted >= 16 + 13
        for c in [proven, real, *same, *crowd]:
            await c.close()
        await wait_until(lambda: len(listener.slots) == 0)


async def test_a_connection_that_sends_nothing_is_closed_after_the_first_frame_timeout(tmp_path: Path) -> None:
    listener = {"first_frame_timeout_secs": 0.3, "receive_timeout_secs": 600}
    config = write_config(tmp_path, peer_port=1, listener=listener)
    async with running_hub(config) as hub:
        port = mllp_port(hub)
        idle = await connect_from(port, "127.0.0.1")
        assert await closed_by_listener(idle, timeout=5)
        # Once a frame was answered AA the long idle timeout applies: still open well after 0.3 s.
        sender = await connect_from(port, "127.0.0.1")
        assert ack_fields(await sender.send(adt("FIRST")))["MSA"][1] == "AA"
        assert not await closed_by_listener(sender, timeout=1.0)
        assert ack_fields(await sender.send(adt("SECOND")))["MSA"][1] == "AA"
        await idle.close()
        await sender.close()


async def test_connect_and_close_gives_the_slot_back(tmp_path: Path) -> None:
    listener = {"max_connections": 4, "max_connections_per_peer": 4}
    config = write_config(tmp_path, peer_port=1, listener=listener)
    async with running_hub(config) as hub:
        port = mllp_port(hub)
        for _ in range(64):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
        await wait_until(lambda: len(hub.listeners["mllp_in"].slots) == 0)
        sender = await connect_from(port, "127.0.0.1")
        assert ack_fields(await sender.send(adt("AFTER")))["MSA"][1] == "AA"
        await sender.close()
