"""Slot exhaustion on both SMTP ports: idle, unencrypted or connect-and-close crowds never lock real clients out.

Each test peer connects from its own loopback address (127.0.0.0/8), as distinct hosts would.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from hub.runtime import Hub
from tests.hubkit import running_hub, running_peer, wait_until
from tests.smtp.smtpkit import DOCTOR, PASSWORD, PRESCRIBER, USER, Setup, client_from, command, hub_config

LIMITS = {"max_connections": 8, "max_connections_per_peer": 4, "handshake_timeout_secs": 30}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, Setup]]:
    setup = Setup(tmp_path)
    config = hub_config(setup, dpi_port=1, mta=LIMITS, submission=LIMITS)
    async with running_peer() as dpi, running_hub(config) as running:
        del dpi
        yield running, setup


async def idle_connection(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connects, reads the greeting, then does nothing (no TLS, no login)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    await reader.readline()
    return reader, writer


async def closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def connect_and_close(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    config = hub_config(setup, dpi_port=1, mta=LIMITS, submission=LIMITS)
    async with running_hub(config) as running:
        for port, name in ((setup.mta_port, "smtp_mta"), (setup.submission_port, "smtp_submission")):
            listener = running.listeners[name]
            # The client half-closes (FIN) and waits for the greeting, then closes: the listener reads EOF
            # and never reads again, so only closing at EOF gives the slot back (timeout_secs: 300 s).
            loop = asyncio.get_running_loop()
            for _ in range(4):
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    sock.setblocking(False)
                    sock.shutdown(socket.SHUT_WR)
                    greeting = await loop.sock_recv(sock, 1024)  # or b"": closed at EOF, before the greeting
                    assert greeting in (b"",) or greeting.startswith(b"220 ")
            await wait_until(lambda: len(listener.slots) == 0, timeout=5)  # noqa: B023
            smtp = await client_from(port, "127.0.0.1", setup, peer_cert=True)
            await smtp.quit()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_connect_and_close_without_reading_gives_the_slot_back(tmp_path: Path, loop: str) -> None:
    """On both loops: `hub serve` runs on uvloop, whose order of accept and EOF showed the leak."""
    (uvloop.run if loop == "uvloop" else asyncio.run)(connect_and_close(tmp_path))


async def test_idle_crowd_on_submission_never_blocks_a_real_client(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    listener = running.listeners["smtp_submission"]
    crowd = [await idle_connection(setup.submission_port, f"127.0.1.{i}") for i in range(1, 11) for _ in range(3)]
    await wait_until(lambda: len(listener.slots) == 8)
    assert listener.slots.evicted >= 22
    smtp = await client_from(setup.submission_port, "127.0.0.2", setup, peer_cert=False)
    await smtp.login(USER, PASSWORD)
    # More idle connections now cannot push out the logged-in client.
    crowd += [await idle_connection(setup.submission_port, f"127.0.2.{i}") for i in range(1, 11)]
    code, _ = await command(smtp, f"MAIL FROM:<{DOCTOR}>")
    assert code == 250
    await smtp.quit()
    for _, writer in crowd:
        writer.close()


async def test_idle_crowd_on_the_mta_port_never_blocks_a_peer_operator(hub: tuple[Hub, Setup]) -> None:
    running, setup = hub
    listener = running.listeners["smtp_mta"]
    crowd = [await idle_connection(setup.mta_port, "127.0.0.1") for _ in range(12)]
    assert all([await closed(reader) for reader, _ in crowd[:8]])  # one address keeps at most its 4 slots
    crowd += [await idle_connection(setup.mta_port, f"127.0.1.{i}") for i in range(1, 11)]
    await wait_until(lambda: len(listener.slots) == 8)
    smtp = await client_from(setup.mta_port, "127.0.0.2", setup, peer_cert=True)
    assert (await command(smtp, f"MAIL FROM:<{PRESCRIBER}>"))[0] == 250
    await smtp.quit()
    for _, writer in crowd:
        writer.close()


async def test_no_tls_no_login_is_closed_after_the_handshake_timeout(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    # Long enough for a real client to do STARTTLS and AUTH (scrypt) on a loaded machine, short for a test.
    quick = {"handshake_timeout_secs": 2.0, "timeout_secs": 300}
    async with running_peer() as dpi, running_hub(hub_config(setup, dpi_port=dpi.port, submission=quick)):
        reader, writer = await idle_connection(setup.submission_port, "127.0.0.1")
        assert await closed(reader, timeout=10)
        writer.close()
        # A client that logs in in time keeps its connection past the handshake timeout.
        smtp = await client_from(setup.submission_port, "127.0.0.1", setup, peer_cert=False)
        plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert (await command(smtp, f"AUTH PLAIN {plain}"))[0] == 235
        await asyncio.sleep(4.0)  # twice the handshake timeout: time is the subject, the state to show "still open"
        assert (await command(smtp, "NOOP"))[0] == 250
        await smtp.quit()
