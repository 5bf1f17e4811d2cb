"""MLLP ingest benchmark: K concurrent senders on loopback, durable commit before every ACK.

Method
------
* The hub runs as its own process (`hub serve`), with the shipped code and a
  generated config: one MLLP listener, one route matching every ADT to one
  MLLP destination. By default that destination is paused, so the figures are
  ingest only (message + delivery row committed, then AA); `--deliver` also
  runs the delivery worker to a receiver in this process.
* The load generator runs in this process (uvloop), one task per connection.
  Closed loop: each connection sends a ~450-byte PAM FR ADT^A01, waits for its
  ACK, sends the next. Throughput = AA received / wall time of the run.
  Open loop (`--rate`): messages are started on a fixed schedule spread over
  the connections; latency is measured from the scheduled send time, so a
  hub that falls behind shows it (no coordinated omission).
* Every ACK is checked (MSA-1 = AA, MSA-2 = the MSH-10 sent).
* Peak RSS of the hub process is its VmHWM at the end of the run.
* CPU per message (less sensitive than wall time to a machine shared with other work): the hub process's CPU
  time (user + system, /proc/<pid>/stat) from the start of a closed-loop run until the hub is idle again after
  it (less than 10 ms of CPU in 0.5 s, at most 30 s), so that work done after the ACKs (the content index) is
  counted, divided by the messages ACKed. On PostgreSQL, the same for the server backends serving the hub's
  connections (matched by client port in pg_stat_activity); autovacuum's later work is not counted.

Run: `make bench` or `.venv/bin/python bench/mllp_ingest.py --store sqlite --store postgres`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.mllp.framing import FrameReader, frame  # noqa: E402
from adapters.sandboxes.mllp_peer import MllpPeer, MllpPeerConfig  # noqa: E402

ADT = (
    "MSH|^~\\&|GAM|CHU-BENCH|DPI|CHU-BENCH|20250101120000||ADT^A01^ADT_A01|{cid}|P|2.5^FRA^2.11|||||FRA|"
    "UNICODE UTF-8|FR||2.11^IHE_FRANCE-2.11-PAM\r"
    "EVN||20250101120000||||20250101120000\r"
    "PID|1||{pid}^^^CHU-BENCH&000000000&N^PI||BENCHNOM^BENCHPRENOM^BENCHPRENOM^^^^L||19700101|F|||"
    "1 RUE DU TEST^^PARIS^^75001^FRA^H~^^^^^^BDL^^75101|||||S||{cid}^^^CHU-BENCH&000000000&M^AN\r"
    "PV1|1|I|^^^CHU-BENCH&000000000&M^O||||||||||||||||{cid}^^^CHU-BENCH&000000000&M^VN\r"
    "ZBE|{cid}^CHU-BENCH|20250101120000||INSERT|N\r"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_secs(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of a process's sockets."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[9] in inodes:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


async def backend_cpu(dsn: str | None, hub_pid: int) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend serving one of the hub's connections."""
    if dsn is None:
        return {}
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", sorted(local_ports(hub_pid))
        )
    finally:
        await conn.close()
    return {r[0]: cpu_secs(r[0]) for r in rows}


async def settle(pid: int) -> None:
    """Until the process is idle: less than 10 ms of CPU in 0.5 s (at most 30 s)."""
    end = time.monotonic() + 30
    last = cpu_secs(pid)
    while time.monotonic() < end:
        await asyncio.sleep(0.5)
        now = cpu_secs(pid)
        if now - last < 0.01:
            return
        last = now


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sender(
    port: int, conn_no: int, deadline: float, lat: list[float], interval: float | None, start_at: float
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = FrameReader(reader, max_frame_bytes=1 << 20, read_timeout_secs=30)
    sent = 0
    next_at = start_at + (interval or 0) * (conn_no / 1000)
    try:
        while True:
            if interval is not None:
                now = time.perf_counter()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                t0 = next_at
                next_at += interval
            else:
                t0 = time.perf_counter()
            if t0 >= deadline:
                break
            cid = f"B{conn_no:03d}{sent:07d}{uuid.uuid4().hex[:6]}"
            body = ADT.format(cid=cid, pid=f"{conn_no:03d}{sent % 50:04d}").encode()
            writer.write(frame(body))
            await writer.drain()
            got = await frames.read_frame()
            if got is None or not got.body.split(b"\r")[1].startswith(f"MSA|AA|{cid}".encode()):
                raise RuntimeError("bad or missing ACK")
            lat.append(time.perf_counter() - t0)
            sent += 1
    finally:
        writer.close()
    return sent


async def load(port: int, connections: int, seconds: float, rate: float | None) -> dict[str, float]:
    lat: list[float] = []
    start = time.perf_counter() + 0.05
    deadline = start + seconds
    interval = connections / rate if rate else None
    counts = await asyncio.gather(*(sender(port, i, deadline, lat, interval, start) for i in range(connections)))
    wall = time.perf_counter() - start
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 2 else [float("nan")] * 99
    return {
        "messages": sum(counts),
        "msgs_per_s": sum(counts) / wall,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
    }


def write_config(folder: Path, store: dict[str, object], port: int, peer_port: int, deliver: bool) -> Path:
    (folder / "routes").mkdir(parents=True)
    cfg = {
        "node": "bench",
        "store": store,
        "http": {"enabled": False},
        "logging": {"level": "warning"},
        "high_water_mark": 10_000_000,
        "listeners": {
            # One load generator plays every sender: its address may hold all the slots.
            "in": {
                "type": "mllp", "listen": f"127.0.0.1:{port}", "max_connections": 512, "max_connections_per_peer": 512,
            }
        },
        "endpoints": {"out": {"type": "mllp", "endpoint": f"127.0.0.1:{peer_port}"}},
        "routes": ["routes/*.yaml"],
    }
    route = {
        "route": "adt",
        "from": "in",
        "when": {"message_type": ["ADT^A01"]},
        "to": [{"destination": "out", "ordering_key": "patient_key", "max_in_flight": 8, "paused": not deliver}],
    }
    (folder / "hub.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "routes" / "adt.yaml").write_text(yaml.safe_dump(route))
    return folder / "hub.yaml"


async def wait_port(port: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("hub did not start")


async def run_one(store_kind: str, args: argparse.Namespace) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    schema = "bench_" + uuid.uuid4().hex[:8]
    if store_kind == "sqlite":
        store: dict[str, object] = {"kind": "sqlite", "path": str(folder / "hub.db")}
    else:
        store = {"kind": "postgres", "dsn": args.pg_dsn, "schema": schema, "pool_size": 8}
    peer = MllpPeer("bench-peer", MllpPeerConfig(listen="127.0.0.1:0", keep=10))
    await peer.start()
    port = free_port()
    config = write_config(folder, store, port, peer.port, args.deliver)
    hub_bin = Path(sys.executable).with_name("hub")
    env = {**os.environ, "HUB_EVENT_LOOP": args.loop}
    log = (folder / "hub.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(hub_bin), "serve", "--config", str(config), env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        await wait_port(port)
        await load(port, 4, 1.0, None)  # warm-up
        dsn = args.pg_dsn if store_kind == "postgres" else None
        for conns in args.connections:
            await settle(proc.pid)
            hub0, pg0 = cpu_secs(proc.pid), await backend_cpu(dsn, proc.pid)
            r = await load(port, conns, args.seconds, None)
            await settle(proc.pid)
            hub1, pg1 = cpu_secs(proc.pid), await backend_cpu(dsn, proc.pid)
            r["hub_cpu_ms_per_msg"] = (hub1 - hub0) * 1000 / max(1, int(r["messages"]))
            if dsn:
                pg_secs = sum(pg1.get(b, c) - c for b, c in pg0.items()) + sum(
                    c for b, c in pg1.items() if b not in pg0
                )
                r["pg_cpu_ms_per_msg"] = pg_secs * 1000 / max(1, int(r["messages"]))
            results.append({"store": store_kind, "mode": "closed", "connections": conns, **r})
            print(json.dumps(results[-1]), flush=True)
        for rate in args.rate:
            r = await load(port, args.rate_connections, args.seconds, rate)
            results.append({"store": store_kind, "mode": f"open@{rate:g}/s", "connections": args.rate_connections, **r})
            print(json.dumps(results[-1]), flush=True)
        rss = peak_rss_mb(proc.pid)
        for r in results:
            r["hub_peak_rss_mb"] = round(rss, 1)
        print(json.dumps({"store": store_kind, "hub_peak_rss_mb": round(rss, 1)}), flush=True)
    except BaseException:
        log.flush()
        print(f"hub exit code {proc.returncode}; its log ends with:", file=sys.stderr)
        print((folder / "hub.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
        log.close()
        await peer.stop()
        shutil.rmtree(folder, ignore_errors=True)
        if store_kind == "postgres":
            conn = await asyncpg.connect(args.pg_dsn)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    return results


def machine() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return f"{os.cpu_count()} cores ({cpu}), {int(mem) // 1024 // 1024} GiB, Python {platform.python_version()}"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    p.add_argument("--connections", type=int, nargs="*", default=[8, 32])
    p.add_argument("--rate", type=float, nargs="*", default=[1000.0])
    p.add_argument("--rate-connections", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--deliver", action="store_true", help="also deliver every message to a receiver")
    p.add_argument("--pg-dsn", default=os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    gc.freeze()  # the load generator's own start-up objects: no full-collection pauses in its figures
    print(f"# machine: {machine()}; hub event loop: {args.loop}; deliver: {args.deliver}")
    print(
        f"# closed loop: {args.connections} connections x {args.seconds:g}s; open loop: {args.rate} msgs/s "
        f"over {args.rate_connections} connections"
    )
    for kind in args.store or ["sqlite", "postgres"]:
        await run_one(kind, args)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
