"""Test kit: build a hub config in a temporary folder, run a Hub in-process, talk MLLP to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from adapters.mllp.framing import FrameReader, frame
from adapters.sandboxes.mllp_peer import MllpPeer, MllpPeerConfig
from hub.clock import Clock
from hub.config import load_config
from hub.runtime import Hub
from hub.store import Store

FAST_RETRY = {"max_attempts": 3, "initial_secs": 0.05, "max_secs": 0.2, "jitter": 0.1}


def adt(control_id: str, patient: str = "P1", trigger: str = "A01", **over: str) -> bytes:
    """A small synthetic PAM FR ADT message."""
    msh9 = over.get("msh9", f"ADT^{trigger}^ADT_A01")
    segs = [
        f"MSH|^~\\&|GAM|HOSP|DPI|HOSP|20250101120000||{msh9}|{control_id}|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8",
        "EVN||20250101120000",
        f"PID|1||{patient}^^^HOSP&1.2.250.1.71.4.2.2&ISO^PI||TESTNOM^TESTPRENOM^^^^^L||19800101|F",
        "PV1|1|I",
    ]
    return ("\r".join(segs) + "\r").encode()


def write_config(
    folder: Path,
    *,
    peer_port: int,
    store: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
    listener: dict[str, Any] | None = None,
    endpoint: dict[str, Any] | None = None,
    endpoints_extra: dict[str, Any] | None = None,
    **hub: Any,
) -> Path:
    """hub.yaml + routes/*.yaml in `folder`; returns the config path."""
    (folder / "routes").mkdir(parents=True, exist_ok=True)
    config = {
        "node": "test-node",
        "store": store or {"kind": "sqlite", "path": str(folder / "hub.db")},
        "http": {"listen": "127.0.0.1:0"},
        "listeners": {"mllp_in": {"type": "mllp", "listen": "127.0.0.1:0", **(listener or {})}},
        "endpoints": {
            "dpi": {"type": "mllp", "endpoint": f"127.0.0.1:{peer_port}", "ack_timeout_secs": 2, **(endpoint or {})},
            **(endpoints_extra or {}),
        },
        "routes": ["routes/*.yaml"],
        **hub,
    }
    (folder / "hub.yaml").write_text(yaml.safe_dump(config))
    for i, route in enumerate(routes or [default_route()]):
        (folder / "routes" / f"r{i}.yaml").write_text(yaml.safe_dump(route))
    return folder / "hub.yaml"


def default_route(**over: Any) -> dict[str, Any]:
    dest = {"destination": "dpi", "ordering_key": "patient_key", "max_in_flight": 4, "retry": FAST_RETRY}
    dest.update(over.pop("dest", {}))
    return {"route": "adt", "from": "mllp_in", "when": {"message_type": ["ADT^A01", "ADT^A28"]}, "to": [dest], **over}


@contextlib.asynccontextmanager
async def running_peer(**knobs: Any) -> AsyncIterator[MllpPeer]:
    peer = MllpPeer("peer", MllpPeerConfig(**{"listen": "127.0.0.1:0", **knobs}))
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


@contextlib.asynccontextmanager
async def running_hub(
    config_path: Path, *, store: Store | None = None, clock: Clock | None = None
) -> AsyncIterator[Hub]:
    """A started hub on `config_path`; its delivery workers schedule on `clock` (default: the real one)."""
    hub = Hub(load_config(config_path), store=store, clock=clock)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


def mllp_port(hub: Hub) -> int:
    return int(hub.listeners["mllp_in"].port)


class MllpClient:
    """A raw MLLP client for tests: send bytes as they are, read ACK frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.frames = FrameReader(reader, max_frame_bytes=2**20, read_timeout_secs=10)

    @classmethod
    async def connect(cls, port: int, **kw: Any) -> MllpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kw)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ack(self, timeout: float = 10) -> bytes | None:
        async with asyncio.timeout(timeout):
            got = await self.frames.read_frame()
        return got.body if got else None

    async def send(self, body: bytes) -> bytes:
        await self.send_raw(frame(body))
        ack = await self.ack()
        assert ack is not None, "connection closed without an ACK"
        return ack

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def ack_fields(ack: bytes) -> dict[str, list[str]]:
    """Segments of an ACK by id, as field lists (MSH numbered so that index 9 is MSH-9)."""
    out: dict[str, list[str]] = {}
    for seg in ack.decode().split("\r"):
        if seg:
            fields = seg.split("|")
            if fields[0] == "MSH":
                fields = ["MSH", "|", *fields[1:]]
            out[fields[0]] = fields
    return out


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


HUB_BIN = Path(sys.executable).with_name("hub")


async def hub_cli(
    *args: str, hub: Hub | None = None, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    """Run the `hub` command as a script would (no terminal), without blocking the event loop.

    With `hub`, the command is pointed at that hub's admin API (``$HUB_URL``): test configs listen on port 0.
    """
    environ = {k: v for k, v in os.environ.items() if k not in ("HUB_URL", "HUB_TOKEN")}
    if hub is not None:
        environ["HUB_URL"] = f"http://127.0.0.1:{hub.http_port}"
    environ.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        str(HUB_BIN), *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


async def recover_once_expired(store: Store, timeout: float = 5.0) -> int:
    """How many leases `store.recover_leases()` takes back, polled until the first expired lease is due.

    A lease runs out on the store's clock: this waits for that state, whatever the machine's load.
    """
    recovered: list[int] = []

    async def taken_back() -> bool:
        recovered.append(await store.recover_leases())
        return recovered[-1] > 0

    await wait_until(taken_back, timeout=timeout)
    return recovered[-1]
