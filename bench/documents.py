"""End-to-end documents benchmark: ORU^R01 over MLLP → INS stamp → CR-BIO CDA → signed ITI-41 → DMP sandbox.

Method
------
* Three processes on the same machine: the hub (`hub serve`, shipped code,
  generated config, SQLite store), the DMP sandbox (a second `hub serve`
  running only the `dmp` sandbox, so its CPU is counted apart), and this
  load generator.
* The hub's route is the shipped `lab_to_dmp` one: `ins_stamp` (the
  registry's INS into PID-3), `v2_dmp_context`, `v2_oru_to_cda_crbio`, then
  the `xds` endpoint: metadata, the lot's XAdES signature, a signed VIHF,
  MTOM, HTTPS with mutual TLS (the development PKI), `require_qualified_ins`.
  The sandbox verifies the TLS client, the VIHF signature and values, the
  lot signature and every metadata rule of its table before registering.
* First the identities: one ADT^A31 per patient (P patients, INS on the test
  root) qualifies them in the registry; the bench waits until the registry
  deliveries are done. Then N lab results (a 3-result ORU, ~800 bytes) are
  sent over K MLLP connections, closed loop (each waits for its AA).
* Documents/s = N / (last DMP delivery - first ORU received), from the
  hub's own store rows (delivery ``updated_at`` after the sandbox's Success,
  message ``received_at``); latency per document = that delivery time -
  its receipt, p50 / p99.
* `--store postgres --nodes N`: N hub processes (nodes) sharing one
  PostgreSQL store (a schema of its own, dropped after), each with its own
  MLLP port, the connections spread over them; the store's rows are read from
  PostgreSQL, and the CPU of every PostgreSQL server process is counted apart.
* CPU: user+system ticks of each process (/proc/<pid>/stat) over the same
  window, per document and as a share of one core; the load generator's own
  share is shown too (without its children, the hub and the sandbox), and
  the 1-minute load average at the end (other work on the machine slows the
  wall-clock figures, far less the CPU per document).
  `bench/document_stages.py` splits the hub's and the sandbox's CPU per stage.
* `--threads`: CPU and context switches per document of each thread of the
  hub and the sandbox (event loop, step threads, SQLite writer...), named
  with `py-spy dump`; `--py-spy OUT` samples the hub (or `--py-spy-process
  sandbox`) over the window with `py-spy record` (collapsed stacks; add
  `--py-spy-option=--gil` for the GIL holder only). py-spy is a profiling
  tool to install in the venv, not a project dependency.
* `--gc`: time spent in Python's garbage collector per document in each
  process, by generation, over the same window (a `sitecustomize` put first
  on the processes' PYTHONPATH records `gc.callbacks`; SIGUSR1 reads them),
  and the CPU time of the hub's steps, XDS request and XDS metadata as they
  run in it (`bench/document_stages.py` times them alone, with warm caches).

Run: `.venv/bin/python bench/documents.py --documents 2000 --connections 8 --in-flight 8`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.mllp.framing import FrameReader, frame  # noqa: E402
from hub.devpki import make_pki  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from drain import drop_schema  # noqa: E402
from mllp_ingest import free_port, machine, wait_port  # noqa: E402  (the shared helpers of the benchmarks)

A31 = (
    "MSH|^~\\&|GAM|CHU-X|HUB|CHU-X|20250301090000||ADT^A31^ADT_A05|{cid}|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8\r"
    "EVN||20250301090000\r"
    "PID|1||{ipp}^^^CHU-X&000897406&N^PI~{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS||"
    "BENCHNOM^BENCHPRENOM^BENCHPRENOM^^^^L||19790328|F|||^^^^^^BDL^^51215|||||||||||||||||||||VALI\r"
)
ORU = (
    "MSH|^~\\&|SIL|LABO-X|DPI|CHU-X|20250301101500||ORU^R01^ORU_R01|{cid}|P|2.5|||||FRA|UNICODE UTF-8\r"
    "PID|1||{ipp}^^^CHU-X&000897406&N^PI||BENCHNOM^BENCHPRENOM^BENCHPRENOM^^^^L||19790328|F\r"
    "PV1|1|O\r"
    "OBR|1|CMD{cid}^DPI|{cid}^SIL|24331-1^Bilan lipidique^LN|||20250301080000|||||||||||||||20250301101500||CH|F\r"
    "OBX|1|NM|2093-3^Cholesterol total^LN||1.85|g/L^g/L^UCUM|1.50-2.00|N|||F|||20250301090000\r"
    "OBX|2|NM|2571-8^Triglycerides^LN||2.40|g/L^g/L^UCUM|0.35-1.50|H|||F|||20250301090000\r"
    "OBX|3|NM|2085-9^Cholesterol HDL^LN||0.55|g/L^g/L^UCUM|0.40-0.90|N|||F|||20250301090000\r"
)
XDS_METADATA = yaml.safe_load((ROOT / "config" / "hub.yaml").read_text())["endpoints"]["dmp"]["metadata"]
LAB_ROUTE = yaml.safe_load((ROOT / "routes" / "lab_to_dmp.yaml").read_text())


def ins_for(n: int) -> str:
    """A synthetic NIR (13 digits + a valid key) for patient n."""
    first13 = f"2790351{n:06d}"
    return first13 + f"{97 - int(first13) % 97:02d}"


def read_stat(stat: Path) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of a /proc stat file; None once the process or thread is gone.

    Fields 1 (the parent), 11 and 12 (utime, stime: proc(5) fields 4, 14, 15) are the ones read here.
    """
    try:
        text = stat.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    name, rest = text.split("(", 1)[1].rsplit(")", 1)
    return name, rest.split()


def processes() -> dict[int, tuple[str, list[str]]]:
    """Every running process's stat, by pid."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if (read := read_stat(stat)) is not None:
            found[int(stat.parent.name)] = read
    return found


def cpu_ticks(pid: int) -> int:
    """User+system ticks of `pid` and of the processes it started (a process pool's workers), still running."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for p, (_, fields) in processes().items():
        parents[p] = int(fields[1])
        ticks[p] = int(fields[11]) + int(fields[12])
    total, tree = 0, {pid}
    for _ in range(4):  # children, grandchildren (forkserver → workers)
        tree |= {p for p, parent in parents.items() if parent in tree}
    for p in tree:
        total += ticks.get(p, 0)
    return total


def own_ticks() -> int:
    """User+system ticks of this process alone (its children, the hub and the sandbox, are counted apart)."""
    _, fields = read_stat(Path("/proc/self/stat")) or ("", [])
    return int(fields[11]) + int(fields[12])


def postgres_ticks() -> int:
    """User+system ticks of every PostgreSQL server process (backends, WAL writer, checkpointer...)."""
    return sum(int(f[11]) + int(f[12]) for name, f in processes().values() if name.startswith("postgres"))


def thread_ticks(pid: int) -> dict[int, tuple[int, int, int]]:
    """CPU ticks (user, system) and context switches of each thread of `pid`, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = cpu_ticks_of(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended
    return out


def cpu_ticks_of(stat: Path) -> tuple[int, int, int]:
    """(user ticks, system ticks, context switches) of one thread."""
    read = read_stat(stat)
    if read is None:
        raise FileNotFoundError(stat)
    fields = read[1]
    switches = 0
    for line in (stat.parent / "status").read_text().splitlines():
        if "ctxt_switches:" in line:  # voluntary and nonvoluntary
            switches += int(line.split()[1])
    return int(fields[11]), int(fields[12]), switches


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> Python thread name, from `py-spy dump` (a bench-only tool, not a project dependency)."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    names = {}
    for line in dump.splitlines():
        if line.startswith("Thread ") and '"' in line:
            names[int(line.split()[1])] = line.split('"')[1]
    return names


def thread_cpu_per_doc(
    before: dict[str, dict[int, tuple[int, int, int]]], pids: dict[str, int], documents: int
) -> dict[str, dict[str, str]]:
    """CPU per document of each thread of each process since `before`, by Python thread name (pools summed)."""
    hz = os.sysconf("SC_CLK_TCK")
    threads: dict[str, dict[str, str]] = {}
    for name, pid in pids.items():
        now, names = thread_ticks(pid), thread_names(pid)
        groups: dict[str, list[float]] = {}
        for tid, (user, system, switches) in now.items():
            group = names.get(tid, "?").rsplit("_", 1)[0]  # a pool's threads summed
            u0, s0, c0 = before[name].get(tid, (0, 0, 0))
            g = groups.setdefault(group, [0.0, 0.0, 0.0])
            g[0] += (user - u0) / hz * 1000 / documents
            g[1] += (system - s0) / hz * 1000 / documents
            g[2] += (switches - c0) / documents
        threads[name] = {
            k: f"{u + s:.2f} ms (user {u:.2f}, system {s:.2f}), {c:.0f} switches"
            for k, (u, s, c) in sorted(groups.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
        }
    return threads


#: Loaded by the hub and the sandbox with --gc: CPU time of each garbage collection (the thread's own, so
#: waits do not count), summed by generation, and the CPU time of the route's steps, of the XDS request and
#: of its metadata as they run in the hub (wrapped at the first SIGUSR1, when every component is loaded);
#: all written to $HUB_BENCH_GC_OUT.<pid> on SIGUSR1.
GC_PROBE = """
import gc, json, os, signal, sys, time
_stats = {"0": [0, 0.0], "1": [0, 0.0], "2": [0, 0.0]}
_start = [0.0]
def _callback(phase, info):
    if phase == "start":
        _start[0] = time.thread_time()
    else:
        entry = _stats[str(info["generation"])]
        entry[0] += 1
        entry[1] += time.thread_time() - _start[0]
def _timed(key, fn):
    def run(*args, **kwargs):
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = _stats.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] += time.thread_time() - started
    return run
def _wrap():
    pipeline, outbound = sys.modules.get("hub.pipeline"), sys.modules.get("adapters.xds.outbound")
    if pipeline is None or outbound is None or "steps" in _stats:
        return
    _stats.update({"steps": [0, 0.0], "build_request": [0, 0.0], "build_submission": [0, 0.0]})
    pipeline.Pipeline.apply = _timed("steps", pipeline.Pipeline.apply)
    outbound.XdsOutbound.build_request = _timed("build_request", outbound.XdsOutbound.build_request)
    outbound.build_submission = _timed("build_submission", outbound.build_submission)
def _dump(signum, frame):
    _wrap()
    path = os.environ["HUB_BENCH_GC_OUT"] + "." + str(os.getpid())
    with open(path + ".tmp", "w") as f:
        json.dump(_stats, f)
    os.replace(path + ".tmp", path)
if os.environ.get("HUB_BENCH_GC_OUT"):
    gc.callbacks.append(_callback)
    signal.signal(signal.SIGUSR1, _dump)
"""


def _ask_gc(pid: int, path: Path) -> None:
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)


def _read_gc(path: Path) -> dict[str, list[float]] | None:
    return dict(json.loads(path.read_text())) if path.exists() else None


async def gc_snapshot(procs: dict[str, int], out: Path) -> dict[str, dict[str, list[float]]]:
    """The GC probe's cumulative (collections, CPU seconds) by generation, of each process by name."""
    found = {}
    for name, pid in procs.items():
        path = Path(f"{out}.{pid}")
        _ask_gc(pid, path)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if (stats := _read_gc(path)) is not None:
                found[name] = stats
                break
        else:
            raise RuntimeError(f"no GC statistics from the {name}")
    return found


def gc_per_doc(
    before: dict[str, dict[str, list[float]]], after: dict[str, dict[str, list[float]]], n: int
) -> dict[str, dict[str, str]]:
    """Collections (gen0 to gen2) or calls (the hub's stages) and CPU per document, by process."""
    out: dict[str, dict[str, str]] = {}
    for name, stats in after.items():
        for key, (count, secs) in stats.items():
            count0, secs0 = before[name].get(key, [0, 0.0])
            if key.isdigit() or count > count0:
                label, unit = (f"gen{key}", "collections") if key.isdigit() else (key, "calls")
                per_doc = f"{(count - count0) / n:.2f} {unit}, {(secs - secs0) * 1000 / n:.3f} ms"
                out.setdefault(name, {})[label] = per_doc
    return out


def write_configs(
    folder: Path, pki: Any, mllp: list[int], dmp: int, in_flight: int, store: dict[str, Any]
) -> tuple[list[Path], Path]:
    """One config per hub node (each its own MLLP port, all on `store`), and the sandbox's."""
    tls_client = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    vihf = {"name_id": "810000000002", "subject_id": "InteropHub, bench", "lps_nom": "InteropHub",
            "lps_version": "bench", "lps_homologation_dmp": "HOMOLOG-BENCH"}  # fmt: skip
    lab = {**LAB_ROUTE, "from": "in"}
    lab["to"] = [{**lab["to"][0], "max_in_flight": in_flight, "retry": {"max_attempts": 3, "initial_secs": 1}}]
    hub = {
        "node": "bench-hub",
        "environment": "test",
        "store": store,
        "http": {"enabled": False},
        "logging": {"level": "warning"},
        "high_water_mark": 10_000_000,
        "listeners": {
            "in": {
                "type": "mllp",
                "listen": f"127.0.0.1:{mllp[0]}",
                "max_connections": 256,
                "checks": ["v2_documents", "dmp_lot"],  # as shipped: the lab route takes document_count 0
            }
        },
        "endpoints": {
            "registry": {"type": "identity_registry"},
            "dmp": {
                "type": "xds",
                "endpoint": f"https://127.0.0.1:{dmp}/repository",
                "tls": tls_client,
                "metadata": XDS_METADATA,
                "vihf": vihf,
                "response_timeout_secs": 30,
            },
        },
        "routes": ["routes/*.yaml"],
    }
    sandbox = {
        "node": "bench-dmp",
        "routes": [],
        "environment": "test",
        "store": {"kind": "sqlite", "path": str(folder / "sandbox.db")},
        "http": {"enabled": False},
        "logging": {"level": "warning"},
        "sandboxes": {
            "dmp": {
                "type": "dmp",
                "listen": f"127.0.0.1:{dmp}",
                "max_documents": 1_000_000,
                "known_patients": None,
                "tls": {
                    "cert_file": str(pki.server_cert),
                    "key_file": str(pki.server_key),
                    "ca_file": str(pki.ca),
                    "require_client_cert": True,
                },
                "vihf_signer_cert_file": str(pki.client_cert),
            },
        },
    }
    identity = {"route": "identity", "from": "in", "when": {"message_type": ["ADT^A31"]},
                "to": [{"destination": "registry", "ordering_key": "patient_key"}]}  # fmt: skip
    (folder / "routes").mkdir()
    (folder / "routes" / "identity.yaml").write_text(yaml.safe_dump(identity))
    (folder / "routes" / "lab.yaml").write_text(yaml.safe_dump(lab, allow_unicode=True))
    hubs = []
    for n, port in enumerate(mllp):
        hub["node"] = f"bench-hub-{n}" if len(mllp) > 1 else "bench-hub"
        hub["listeners"]["in"]["listen"] = f"127.0.0.1:{port}"  # type: ignore[index]
        hubs.append(folder / (f"hub-{n}.yaml" if len(mllp) > 1 else "hub.yaml"))
        hubs[-1].write_text(yaml.safe_dump(hub, allow_unicode=True))
    (folder / "sandbox").mkdir()
    (folder / "sandbox" / "hub.yaml").write_text(yaml.safe_dump(sandbox))
    return hubs, folder / "sandbox" / "hub.yaml"


async def send_all(ports: list[int], messages: list[bytes], connections: int) -> None:
    """Send over `connections` connections, spread over the hub nodes' ports, each waiting for its AA."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)

    async def one(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frames = FrameReader(reader, max_frame_bytes=1 << 20, read_timeout_secs=60)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                writer.write(frame(body))
                await writer.drain()
                got = await frames.read_frame()
                if got is None or b"MSA|AA|" not in got.body:
                    raise RuntimeError("bad or missing ACK")
        finally:
            writer.close()

    await asyncio.gather(*(one(ports[i % len(ports)]) for i in range(connections)))


class StoreRows:
    """The hub's store read from outside: deliveries by status, and the delivered documents' times."""

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store
        self.sqlite = store["kind"] == "sqlite"
        # The two stores name the tables, their parameters and their times differently.
        prefix = "" if self.sqlite else "hub_"
        self.deliveries, self.messages = f"{prefix}deliveries", f"{prefix}messages"
        self._pg: Any = None

    def _param(self, n: int) -> str:
        return "?" if self.sqlite else f"${n}"

    def _epoch(self, column: str) -> str:
        return column if self.sqlite else f"extract(epoch from {column})::float8"

    async def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.sqlite:
            with sqlite3.connect(f"file:{self.store['path']}?mode=ro", uri=True, timeout=30) as conn:
                return conn.execute(sql, params).fetchall()
        if self._pg is None:
            self._pg = await asyncpg.connect(self.store["dsn"], server_settings={"search_path": self.store["schema"]})
        return [tuple(r) for r in await self._pg.fetch(sql, *params)]

    async def count(self, destination: str, status: str) -> int:
        sql = (f"SELECT count(*) FROM {self.deliveries} "
               f"WHERE destination = {self._param(1)} AND status = {self._param(2)}")  # fmt: skip
        return int((await self._query(sql, destination, status))[0][0])

    async def delivered_times(self, destination: str) -> list[tuple[float, float]]:
        """(received, delivered) of each delivered message, in seconds since the epoch."""
        sql = (f"SELECT {self._epoch('m.received_at')}, {self._epoch('d.updated_at')} FROM {self.deliveries} d "
               f"JOIN {self.messages} m ON m.id = d.message_id "
               f"WHERE d.destination = {self._param(1)} AND d.status = 'delivered'")  # fmt: skip
        return [(float(a), float(b)) for a, b in await self._query(sql, destination)]

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()


async def wait_deliveries(rows: StoreRows, destination: str, expected: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await rows.count(destination, "delivered") >= expected:
            return
        if await rows.count(destination, "dead"):
            raise RuntimeError(f"dead deliveries to {destination}: see the hub store")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{destination}: {await rows.count(destination, 'delivered')} of {expected} delivered in time")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-docs-"))
    pki = make_pki(folder / "pki")
    mllp, dmp = [free_port() for _ in range(args.nodes)], free_port()
    schema = "docs_" + uuid.uuid4().hex[:8]
    store: dict[str, Any] = (
        {"kind": "sqlite", "path": str(folder / "hub.db")}
        if args.store == "sqlite"
        else {"kind": "postgres", "dsn": args.pg_dsn, "schema": schema, "pool_size": 8}
    )
    hub_cfgs, sandbox_cfg = write_configs(folder, pki, mllp, dmp, args.in_flight, store)
    hub_bin = str(Path(sys.executable).with_name("hub"))
    env = {**os.environ, "HUB_EVENT_LOOP": "uvloop"}
    if args.gc:  # the probe first on the path of the hub and the sandbox only
        (folder / "gcprobe").mkdir()
        (folder / "gcprobe" / "sitecustomize.py").write_text(GC_PROBE)
        path = [str(folder / "gcprobe"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env |= {"PYTHONPATH": os.pathsep.join(path), "HUB_BENCH_GC_OUT": str(folder / "gc")}
    procs = []
    rows = StoreRows(store)
    for cfg, cwd in ((sandbox_cfg, folder / "sandbox"), *((c, folder) for c in hub_cfgs)):
        log = (cwd / f"serve-{cfg.stem}.log").open("wb")
        procs.append(
            await asyncio.create_subprocess_exec(
                hub_bin, "serve", "--config", str(cfg), cwd=str(cwd), env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        )
        if store["kind"] == "postgres" and cwd == folder:  # the first node makes the schema, then the others start
            await wait_port(mllp[0])
    sandbox_proc, hub_procs = procs[0], procs[1:]
    hub_proc = hub_procs[0]
    try:
        await wait_port(dmp)
        for port in mllp:
            await wait_port(port)
        patients = [(f"BP{n:05d}", ins_for(n)) for n in range(args.patients)]
        a31 = [A31.format(cid=f"ID{n:06d}", ipp=ipp, ins=ins).encode() for n, (ipp, ins) in enumerate(patients)]
        await send_all(mllp, a31, min(args.connections, len(a31)))
        await wait_deliveries(rows, "registry", len(a31), 60)
        orus = [
            ORU.format(cid=f"LAB{n:07d}", ipp=patients[n % len(patients)][0]).encode() for n in range(args.documents)
        ]
        ticks = {"hub": sum(cpu_ticks(p.pid) for p in hub_procs), "sandbox": cpu_ticks(sandbox_proc.pid)}
        ticks["bench"] = own_ticks()
        ticks["postgres"] = postgres_ticks()
        per_thread = {name: thread_ticks(p.pid) for name, p in (("hub", hub_proc), ("sandbox", sandbox_proc))}
        pids = {"hub": hub_proc.pid, "sandbox": sandbox_proc.pid}
        gc_before = await gc_snapshot(pids, folder / "gc") if args.gc else {}
        spy = None
        if args.py_spy:  # sample the hub (or the sandbox) over the documents' window; py-spy is no project dependency
            target = {"hub": hub_proc.pid, "sandbox": sandbox_proc.pid}[args.py_spy_process]
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(target), "--output", args.py_spy,
                "--format", args.py_spy_format, "--rate", "250", *args.py_spy_option,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        wall0 = time.perf_counter()
        await send_all(mllp, orus, args.connections)
        await wait_deliveries(rows, "dmp", args.documents, args.timeout)
        wall = time.perf_counter() - wall0
        used = {
            "hub": sum(cpu_ticks(p.pid) for p in hub_procs) - ticks["hub"],
            "sandbox": cpu_ticks(sandbox_proc.pid) - ticks["sandbox"],
            "bench": own_ticks() - ticks["bench"],
            "postgres": postgres_ticks() - ticks["postgres"],
        }
        gc_used = gc_per_doc(gc_before, await gc_snapshot(pids, folder / "gc"), args.documents) if args.gc else {}
        threads = (
            thread_cpu_per_doc(per_thread, {"hub": hub_proc.pid, "sandbox": sandbox_proc.pid}, args.documents)
            if args.threads
            else {}
        )
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.wait_for(spy.wait(), 60)
        times = await rows.delivered_times("dmp")
        first = min(r[0] for r in times)
        last = max(r[1] for r in times)
        lat = sorted(r[1] - r[0] for r in times)
        q = statistics.quantiles(lat, n=100, method="inclusive")
        hz = os.sysconf("SC_CLK_TCK")
        return {
            "documents": len(times),
            "store": args.store,
            "hub_nodes": args.nodes,
            "connections": args.connections,
            "in_flight": args.in_flight,
            "docs_per_s": round(len(times) / (last - first), 1),
            "latency_p50_ms": round(q[49] * 1000, 1),
            "latency_p99_ms": round(q[98] * 1000, 1),
            "latency_max_ms": round(lat[-1] * 1000, 1),
            "hub_cpu_ms_per_doc": round(used["hub"] / hz * 1000 / len(times), 1),
            "sandbox_cpu_ms_per_doc": round(used["sandbox"] / hz * 1000 / len(times), 1),
            "postgres_cpu_ms_per_doc": round(used["postgres"] / hz * 1000 / len(times), 1),
            "load_average_1min": round(os.getloadavg()[0], 1),
            "cpu_hub_core_share": round(used["hub"] / hz / wall, 2),
            "cpu_sandbox_core_share": round(used["sandbox"] / hz / wall, 2),
            "cpu_postgres_core_share": round(used["postgres"] / hz / wall, 2),
            "cpu_loadgen_core_share": round(used["bench"] / hz / wall, 2),
            "wall_s": round(wall, 1),
            **({"thread_cpu_ms_per_doc": threads} if threads else {}),
            **({"gc_per_doc": gc_used} if gc_used else {}),
        }
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
        await rows.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            if store["kind"] == "postgres":
                await drop_schema(args.pg_dsn, schema)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--documents", type=int, default=2000)
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--nodes", type=int, default=1, help="hub processes (several need --store postgres)")
    p.add_argument("--pg-dsn", default=os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--patients", type=int, default=100)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--in-flight", type=int, default=8, help="max_in_flight of the DMP destination")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (configs, stores, logs)")
    p.add_argument("--threads", action="store_true", help="CPU per document of each thread (needs py-spy)")
    p.add_argument("--gc", action="store_true", help="garbage collection time per document of each process")
    p.add_argument("--py-spy", metavar="OUT", help="record a py-spy profile of the hub over the window into OUT")
    p.add_argument("--py-spy-process", choices=("hub", "sandbox"), default="hub")
    p.add_argument("--py-spy-format", default="raw", help="py-spy output format (raw: collapsed stacks)")
    p.add_argument("--py-spy-option", action="append", default=[], help="extra py-spy option, e.g. --gil")
    args = p.parse_args()
    if args.nodes > 1 and args.store != "postgres":
        p.error("several hub nodes share a PostgreSQL store: add --store postgres")
    print(f"# machine: {machine()}")
    print(json.dumps(await run(args)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
