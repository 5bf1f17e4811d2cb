"""Memory cost of large messages: peak RSS of `hub serve` while it takes and delivers big MDM^T02s.

Method: the hub runs as its own process (SQLite store, one MLLP listener, one route delivering to an
MLLP receiver in this process). Its resident set is read before traffic (after warm-up) and its
high-water mark (VmHWM) after sending, one at a time, `--count` MDM^T02 messages carrying a PDF of
`--size-mb` MB as base64 in OBX-5 (the shape of the French "documents in HL7 v2" volet), each
acknowledged (AA after the commit) and delivered before the next. DESIGN.md §10 budget: a few times
the message size at peak, never a copy per step.

Run: `.venv/bin/python bench/large_messages.py --size-mb 8 --count 5`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.mllp.framing import FrameReader, frame  # noqa: E402
from adapters.sandboxes.mllp_peer import MllpPeer, MllpPeerConfig  # noqa: E402
from bench.mllp_ingest import free_port, wait_port  # noqa: E402


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mdm(control: str, size_mb: float) -> bytes:
    pdf = b"%PDF-1.4\n" + os.urandom(int(size_mb * 2**20 * 3 / 4))
    segs = [
        f"MSH|^~\\&|DPI|HOSP|HUB|HOSP|20250101120000||MDM^T02^MDM_T02|{control}|P|2.6",
        "EVN||20250101120000",
        "PID|1||IPP1^^^HOSP&1.2.250.1.999&ISO^PI||BENCH^DOC^^^^^L||19700101|F",
        "TXA|1|11490-0|TEXT|20250101120000||||||||2.999.1.1",
        "OBX|1|ED|11490-0^Lettre^LN||^AP^PDF^Base64^" + base64.b64encode(pdf).decode() + "||||||F",
    ]
    return ("\r".join(segs) + "\r").encode()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=8.0)
    p.add_argument("--count", type=int, default=5)
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="hub-large-"))
    peer = MllpPeer("peer", MllpPeerConfig(listen="127.0.0.1:0", keep=2))
    await peer.start()
    port = free_port()
    (folder / "routes").mkdir()
    (folder / "hub.yaml").write_text(yaml.safe_dump({
        "node": "bench", "store": {"kind": "sqlite", "path": str(folder / "hub.db")}, "http": {"enabled": False},
        "logging": {"level": "warning"},
        "listeners": {"in": {"type": "mllp", "listen": f"127.0.0.1:{port}", "max_frame_bytes": 64 * 2**20}},
        "endpoints": {"out": {"type": "mllp", "endpoint": f"127.0.0.1:{peer.port}", "max_frame_bytes": 2**20}},
        "routes": ["routes/*.yaml"],
    }))  # fmt: skip
    (folder / "routes" / "docs.yaml").write_text(yaml.safe_dump(
        {"route": "docs", "from": "in", "when": {"message_type": ["MDM^T02"]}, "to": [{"destination": "out"}]}
    ))  # fmt: skip
    hub = str(Path(sys.executable).with_name("hub"))
    proc = await asyncio.create_subprocess_exec(
        hub, "serve", "--config", str(folder / "hub.yaml"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await wait_port(port)
        await asyncio.sleep(1.0)
        base = rss_mb(proc.pid, "VmRSS")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader(reader, max_frame_bytes=2**20, read_timeout_secs=120)
        body = mdm("BIG0", args.size_mb)
        started = time.perf_counter()
        for i in range(args.count):
            body = body.replace(f"|BIG{i - 1}|".encode(), f"|BIG{i}|".encode()) if i else body
            writer.write(frame(body))
            await writer.drain()
            ack = await frames.read_frame()
            assert ack is not None and b"MSA|AA|" in ack.body
            while peer.count < i + 1:
                await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        writer.close()
        peak = rss_mb(proc.pid, "VmHWM")
        size = len(body) / 2**20
        print(f"# {args.count} MDM^T02 of {size:.1f} MB each, taken (AA after commit) and delivered one at a time")
        print(
            f"hub RSS before: {base:.0f} MB; peak (VmHWM): {peak:.0f} MB; peak - before: {peak - base:.0f} MB "
            f"= {(peak - base) / size:.1f} x the message size; {args.count / elapsed:.1f} messages/s"
        )
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await peer.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
