"""Backlog drain benchmark: the receiver is down while N messages are accepted, then comes up.

Method
------
* The hub runs as its own process (`hub serve`), with the shipped code and a
  generated config: one MLLP listener, one route taking every ADT to one MLLP
  destination, FIFO per patient (`ordering_key: patient_key`), `max_in_flight`
  as given (default 8); while the receiver is down the destination's circuit
  is open and probed every 1 s to 5 s (`probe_max_secs`), so nothing is
  dead-lettered and the first delivery follows the receiver's return within
  a probe interval.
* Ingest: K connections (closed loop, as `bench/mllp_ingest.py`) send N PAM FR
  ADT^A01 in total while nothing listens on the destination's port; every ACK is
  checked (MSA-1 = AA, MSA-2 = the MSH-10 sent). Ingest rate = N / wall time.
  Each connection cycles through its own P patients, so there are K x P ordering keys.
  An AE (the hub cannot keep the message now) is counted and the message sent
  again after 50 ms, as real senders do; the AE reasons are printed.
* Drain: the receiver (an MLLP server in this process answering AA) is started on
  the destination's port; the clock runs until it has received all N distinct
  control ids. Drain rate = N / (last received - receiver up). Also printed: the
  delay to the first delivery (waiting for the retry backoff of the messages that
  were being retried) and the rate from the first delivery to the last.
* Checked on the receiver's side: nothing missing, per-patient order kept (each
  patient's sequence numbers only increase), duplicates counted (a redelivery
  after a lost ACK is allowed by MLLP's at-least-once contract, but none is expected here).
* RSS of the hub process (VmRSS) after the ingest and after the drain, and its peak (VmHWM).
* CPU time of the hub process (user + system, /proc/<pid>/stat) per message, for the ingest and for
  the drain: unlike the rates, it hardly moves with what else loads the machine. The load average
  (1 min) is printed at the start and the end of each run.
* After the drain, what the store carries: SQLite's page and freelist counts (pages of deleted rows
  kept for reuse), PostgreSQL's dead row versions and manual VACUUMs of ``hub_deliveries``
  (``pg_stat_user_tables``; the hub's own maintenance task vacuums it, see hub/store/pg_maintenance.py).
* `--steps map` gives the route an `hl7v2_map` step (MSH-5/MSH-6 set: a new body per delivery),
  `--steps validate` the hl7apy `hl7v2_validate` step (the body unchanged); `--refuse-first` makes the
  receiver answer AE to the first copy of every message (the retry comes 0.05-0.2 s later), so every
  delivery is sent twice. Together they measure what a delivery's stored output (what was sent, kept
  with the delivery and resent by its retries) costs and saves on the delivery path.

* `--seed` (PostgreSQL) skips the ingest: the first message of each connection goes through the hub as
  the template of the others, written into its schema by SQL in the same shape (`seed_backlog`); a
  million queued in minutes, to study the drain alone. `--watch SECS` prints the drain's progress: rate,
  CPU per message of the hub and of its PostgreSQL backends, dead rows and VACUUMs, and what one claim
  costs from the start of the claim index and from where the hub's last claim stopped (`claim_cost`).

Run: `.venv/bin/python bench/drain.py --store sqlite -n 10000 100000`,
`.venv/bin/python bench/drain.py --store postgres -n 10000 100000 1000000`,
`.venv/bin/python bench/drain.py --store postgres -n 100000 1000000 --seed --watch 15`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.mllp.framing import CR, FS, VT, FrameReader, frame  # noqa: E402
from bench.mllp_ingest import ADT, backend_cpu, free_port, machine, peak_rss_mb, wait_port  # noqa: E402
from hub.store.claim_points import BEGINNING  # noqa: E402
from hub.store.postgres import CLAIM_SQL  # noqa: E402


def cpu_secs(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def store_state(kind: str, path: Path, dsn: str, schema: str) -> dict[str, object]:
    """What the store carries after the drain (see the module docstring)."""
    if kind == "sqlite":
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {
                "sqlite_pages": db.execute("PRAGMA page_count").fetchone()[0],
                "sqlite_freelist_pages": db.execute("PRAGMA freelist_count").fetchone()[0],
            }
        finally:
            db.close()
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT n_dead_tup, n_live_tup, vacuum_count FROM pg_stat_user_tables"
            " WHERE schemaname = $1 AND relname = 'hub_deliveries'",
            schema,
        )
    finally:
        await conn.close()
    return {"pg_deliveries_dead_rows": row[0], "pg_deliveries_live_rows": row[1], "pg_hub_vacuums": row[2]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Receiver:
    """A fast MLLP receiver: AA to everything, and a per-patient order check."""

    def __init__(self, expected: int, refuse_first: bool = False) -> None:
        self.expected = expected
        self.refuse_first = refuse_first
        self.refused: set[bytes] = set()
        self.sent_differently = 0  # a retry whose bytes differ from the refused first copy
        self.seen: set[str] = set()
        self.duplicates = 0
        self.out_of_order = 0
        self.last_seq: dict[str, int] = {}
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.done = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _record(self, body: bytes) -> bytes:
        segments = body.split(b"\r")
        msh = segments[0].split(b"|")
        if self.refuse_first:
            digest = hashlib.blake2b(body, digest_size=16).digest()
            if msh[9] not in self.refused:
                self.refused.add(msh[9])
                self.refused.add(digest)
                return (
                    b"MSH|^~\\&|DPI|CHU-BENCH|GAM|CHU-BENCH|20250101120000||ACK^A01^ACK|A"
                    + msh[9]
                    + (b"|P|2.5\rMSA|AE|" + msh[9] + b"\r")
                )
            if digest not in self.refused:
                self.sent_differently += 1
        cid = msh[9].decode()
        pid = next(s for s in segments if s.startswith(b"PID|")).split(b"|")[3].split(b"^")[0].decode()
        seq = int(cid[4:11])  # B<conn:3><seq:7><random>
        if cid in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(cid)
            if seq < self.last_seq.get(pid, -1):
                self.out_of_order += 1
            self.last_seq[pid] = seq
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        if len(self.seen) >= self.expected:
            self.done.set()
        return (
            b"MSH|^~\\&|DPI|CHU-BENCH|GAM|CHU-BENCH|20250101120000||ACK^A01^ACK|A" + msh[9] + b"|P|2.5\r"
            b"MSA|AA|" + msh[9] + b"\r"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader(reader, max_frame_bytes=1 << 20, read_timeout_secs=60)
        try:
            while (got := await frames.read_frame()) is not None:
                writer.write(VT + self._record(got.body) + FS + CR)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def send_n(port: int, conn_no: int, quota: list[int], patients: int, refused: Counter[str]) -> int:
    """Send until the shared quota is used up; one message waits for its ACK before the next."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames = FrameReader(reader, max_frame_bytes=1 << 20, read_timeout_secs=60)
    sent = 0
    try:
        while quota[0] > 0:
            quota[0] -= 1
            cid = f"B{conn_no:03d}{sent:07d}{uuid.uuid4().hex[:6]}"
            body = ADT.format(cid=cid, pid=f"{conn_no:03d}{sent % patients:04d}").encode()
            while True:
                writer.write(frame(body))
                await writer.drain()
                got = await frames.read_frame()
                msa = got.body.split(b"\r")[1] if got is not None else b"(connection closed)"
                if msa.startswith(f"MSA|AA|{cid}".encode()):
                    break
                if not msa.startswith(b"MSA|AE|"):
                    raise RuntimeError(f"bad ACK: {msa[:120]!r}")
                refused[msa.split(b"|")[3][:60].decode(errors="replace")] += 1
                await asyncio.sleep(0.05)  # AE: not kept now, send it again (as a real sender does)
            sent += 1
    finally:
        writer.close()
    return sent


STEPS: dict[str, object] = {
    "map": {"hl7v2_map": {"rules": [{"set": "MSH-5", "value": "PACS"}, {"set": "MSH-6", "value": "IMAGERIE"}]}},
    "validate": "hl7v2_validate",
}


def write_config(folder: Path, store: dict[str, object], port: int, peer_port: int, args: argparse.Namespace) -> Path:
    (folder / "routes").mkdir(parents=True)
    cfg = {
        "node": "bench",
        "store": store,
        "http": {"enabled": False},
        "logging": {"level": "warning"},
        "high_water_mark": 10_000_000,
        "listeners": {
            "in": {
                "type": "mllp",
                "listen": f"127.0.0.1:{port}",
                "max_connections": 512,
                "max_connections_per_peer": 512,  # every sender of the benchmark is on 127.0.0.1
            }
        },
        "endpoints": {"out": {"type": "mllp", "endpoint": f"127.0.0.1:{peer_port}", "connect_timeout_secs": 2}},
        "routes": ["routes/*.yaml"],
    }
    retry = {"max_attempts": 10_000, "initial_secs": 1.0, "max_secs": 5.0}
    if args.refuse_first:
        retry = {"max_attempts": 10_000, "initial_secs": 0.05, "max_secs": 0.2}
    route = {
        "route": "adt",
        "from": "in",
        "when": {"message_type": ["ADT^A01"]},
        "steps": [STEPS[name] for name in args.steps],
        "to": [
            {
                "destination": "out",
                "ordering_key": "patient_key",
                "max_in_flight": args.max_in_flight,
                "retry": retry,
                "probe_max_secs": args.probe_max_secs,
            }
        ],
    }
    (folder / "hub.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "routes" / "adt.yaml").write_text(yaml.safe_dump(route))
    return folder / "hub.yaml"


async def run_one(store_kind: str, n: int, args: argparse.Namespace) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="hub-drain-"))
    schema = "drain_" + uuid.uuid4().hex[:8]
    if store_kind == "sqlite":
        store: dict[str, object] = {"kind": "sqlite", "path": str(folder / "hub.db")}
    else:
        store = {"kind": "postgres", "dsn": args.pg_dsn, "schema": schema, "pool_size": 8}
    port, peer_port = free_port(), free_port()
    config = write_config(folder, store, port, peer_port, args)
    hub_bin = Path(sys.executable).with_name("hub")
    env = {**os.environ, "HUB_EVENT_LOOP": args.loop}
    log = (folder / "hub.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(hub_bin), "serve", "--config", str(config), env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    receiver = Receiver(n, args.refuse_first)
    try:
        await wait_port(port)
        load_start = os.getloadavg()[0]
        cpu0 = cpu_secs(proc.pid)
        t0 = time.perf_counter()
        refused: Counter[str] = Counter()
        if args.seed:
            # The first message of each connection goes through the hub (the template of the rest), the
            # others are written by SQL in the same shape: seconds instead of minutes for a million.
            firsts = [send_n(port, i, [1], args.patients, refused) for i in range(args.connections)]
            await asyncio.gather(*firsts)
            await seed_backlog(args.pg_dsn, schema, n, args.connections, args.patients)
            conn = await asyncpg.connect(args.pg_dsn)
            try:
                costs = [await claim_cost(conn, schema, from_start=True) for _ in range(5)]
            finally:
                await conn.close()
            ms, pages = sorted(costs)[2]
            print(f"# claim of 8 with {n} queued: {ms:.2f} ms, {pages} buffers (median of 5)", flush=True)
        else:
            quota = [n]
            await asyncio.gather(*(send_n(port, i, quota, args.patients, refused) for i in range(args.connections)))
        ingest_secs = time.perf_counter() - t0
        rss_after_ingest = rss_mb(proc.pid)
        cpu_ingest = cpu_secs(proc.pid) - cpu0
        cpu1 = cpu_secs(proc.pid)
        await receiver.start(peer_port)
        up = time.perf_counter()
        print(f"# {store_kind} n={n}: ingested in {ingest_secs:.1f}s, receiver up (hub pid {proc.pid})", flush=True)
        watcher = None
        if args.watch and store_kind == "postgres":
            watcher = asyncio.create_task(watch(args.pg_dsn, schema, receiver, proc.pid, args.watch))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.done.wait(), args.timeout)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        end = receiver.last_at or time.perf_counter()
        first = receiver.first_at or end
        drained = len(receiver.seen)
        cpu_drain = cpu_secs(proc.pid) - cpu1
        result: dict[str, object] = {
            "store": store_kind,
            "n": n,
            "ingest_msgs_per_s": None if args.seed else round(n / ingest_secs),
            "seeded": args.seed,
            "drained": drained,
            "drain_msgs_per_s": round(drained / (end - up)) if end > up else None,
            "first_delivery_after_s": round(first - up, 2),
            "drain_after_first_msgs_per_s": round(drained / (end - first)) if end > first else None,
            "steps": args.steps,
            "refuse_first": args.refuse_first,
            "retries_sent_differently": receiver.sent_differently if args.refuse_first else None,
            "ingest_ae": dict(refused),
            "duplicates": receiver.duplicates,
            "out_of_order": receiver.out_of_order,
            "hub_rss_after_ingest_mb": round(rss_after_ingest, 1),
            "hub_rss_after_drain_mb": round(rss_mb(proc.pid), 1),
            "hub_peak_rss_mb": round(peak_rss_mb(proc.pid), 1),
            "hub_cpu_ms_per_msg_ingest": round(1000 * cpu_ingest / n, 3),
            "hub_cpu_ms_per_msg_drain": round(1000 * cpu_drain / max(drained, 1), 3),
            "load_avg_start_end": [round(load_start, 1), round(os.getloadavg()[0], 1)],
            **await store_state(store_kind, folder / "hub.db", args.pg_dsn, schema),
        }
        print(json.dumps(result), flush=True)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await receiver.stop()
        log.close()
        if args.keep_log:
            shutil.copy(folder / "hub.log", args.keep_log)
        shutil.rmtree(folder, ignore_errors=True)
        if store_kind == "postgres" and not args.keep_schema:
            await drop_schema(args.pg_dsn, schema)
        elif store_kind == "postgres":
            print(f"# schema kept: {schema}", flush=True)


#: The backlog written by SQL (--seed): message r of the run is connection r % K's message r // K, as the
#: ingest would send it (same body, same metadata, same ordering key, `waiting` behind its patient's first),
#: with the shape of a template the hub stored itself (connection 1's first message).
_SEED = """
WITH v AS MATERIALIZED (
    SELECT r, 'ffffffff-ffff-7fff-bfff-' || lpad(to_hex(r), 12, '0') AS id,
        format('B%s%s%s', lpad((r % $1)::text, 3, '0'), lpad((r / $1)::text, 7, '0'), left(md5(r::text), 6)) AS cid,
        lpad((r % $1)::text, 3, '0') || lpad((r / $1 % $2)::text, 4, '0') AS pid,
        r / $1 >= $2 AS waiting,
        statement_timestamp() - ($4 - r) * interval '1 microsecond' AS at
    FROM generate_series($3::bigint, $4::bigint) AS r
), m AS (
    INSERT INTO hub_messages (id, correlation_id, endpoint, content_type, body, metadata, status, reason,
        received_at, updated_at, control_id, sending_app, sending_facility, message_type, patient_key, dedup_key)
    SELECT v.id, v.id, t.endpoint, t.content_type,
        convert_to(replace(replace($5, '{cid}', v.cid), '{pid}', v.pid), 'UTF8'),
        replace(replace($6, '@@PID@@', v.pid), '@@CID@@', v.cid)::jsonb, 'pending', '', v.at, v.at, v.cid,
        t.sending_app, t.sending_facility, t.message_type, replace($7, '@@PID@@', v.pid),
        replace($8, '@@CID@@', v.cid)
    FROM v, hub_messages t WHERE t.id = $9 ORDER BY v.r
    RETURNING 1
), d AS (
    INSERT INTO hub_deliveries (message_id, route, destination, status, max_attempts, next_attempt_at,
        ordering_key, created_at, updated_at, waiting)
    SELECT v.id, t.route, t.destination, 'pending', t.max_attempts, v.at, replace($10, '@@PID@@', v.pid),
        v.at, v.at, v.waiting
    FROM v, hub_deliveries t WHERE t.message_id = $9 ORDER BY v.r
    RETURNING 1
), x AS (
    INSERT INTO hub_message_text (message_id, body)
    SELECT v.id, replace(replace($11, '@@PID@@', v.pid), '@@CID@@', v.cid) FROM v
    RETURNING 1
)
SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM d), (SELECT count(*) FROM x)
"""


def _placeholders(text: str | None, cid: str, pid: str, what: str) -> str | None:
    """`text` with the template's control id, then its patient id, as placeholders (the control id first: it
    holds the patient id's digits)."""
    if text is None:
        return None
    for value, mark in ((cid, "@@CID@@"), (pid, "@@PID@@")):
        if mark == "@@CID@@" and what in ("patient_key", "ordering_key"):
            continue
        if mark == "@@PID@@" and what == "dedup_key":
            continue
        if value not in text:
            raise RuntimeError(f"seed template: {what} does not hold {value!r}")
        text = text.replace(value, mark)
    return text


async def seed_backlog(dsn: str, schema: str, n: int, connections: int, patients: int, chunk: int = 50_000) -> None:
    """Write messages K..N-1 of the run into the store by SQL, in the shape of the ones the hub stored."""
    if connections < 2 or patients < 2:
        raise SystemExit("--seed needs at least 2 connections and 2 patients each")
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        # The hub indexes the content after the commit: wait for the template's text row.
        for _ in range(600):
            if not await conn.fetchval("SELECT count(*) FROM hub_text_pending"):
                break
            await asyncio.sleep(0.05)
        t = await conn.fetchrow(
            "SELECT m.id, m.control_id, convert_from(m.body, 'UTF8') AS body, m.metadata::text AS metadata,"
            " m.patient_key, m.dedup_key, d.ordering_key, x.body AS text"
            " FROM hub_messages m JOIN hub_deliveries d ON d.message_id = m.id"
            " JOIN hub_message_text x ON x.message_id = m.id WHERE m.control_id LIKE 'B0010000000%'"
        )
        if t is None:
            raise RuntimeError("seed template: connection 1's first message is not stored")
        cid, pid = t["control_id"], "0010000"
        if t["body"] != ADT.format(cid=cid, pid=pid):
            raise RuntimeError("seed template: the stored body is not the one sent")
        started = time.perf_counter()
        for lo in range(connections, n, chunk):
            hi = min(lo + chunk, n) - 1
            counts = await conn.fetchrow(
                _SEED, connections, patients, lo, hi, ADT,
                _placeholders(t["metadata"], cid, pid, "metadata"),
                _placeholders(t["patient_key"], cid, pid, "patient_key"),
                _placeholders(t["dedup_key"], cid, pid, "dedup_key"),
                t["id"],
                _placeholders(t["ordering_key"], cid, pid, "ordering_key"),
                _placeholders(t["text"], cid, pid, "text"),
            )  # fmt: skip
            if tuple(counts) != (hi - lo + 1,) * 3:
                raise RuntimeError(f"seed: wrote {tuple(counts)} rows for {hi - lo + 1} messages")
        print(f"# seeded {n - connections} messages by SQL in {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        await conn.close()


_WATCH = """
SELECT relname, n_dead_tup, n_live_tup, vacuum_count FROM pg_stat_user_tables
WHERE schemaname = $1 AND relname IN ('hub_deliveries', 'hub_messages')
"""


#: Where the hub's last claim stopped, near enough: the last in-flight delivery in the claim's order.
_LAST_CLAIMED = """
SELECT next_attempt_at, id FROM hub_deliveries WHERE route = 'adt' AND destination = 'out' AND status = 'in_flight'
ORDER BY next_attempt_at DESC, id DESC LIMIT 1
"""


async def claim_cost(conn: asyncpg.Connection, schema: str, *, from_start: bool, limit: int = 8) -> tuple[float, int]:
    """(execution time in ms, buffers read) of the hub's claim statement on the queue now, as EXPLAIN (ANALYZE,
    BUFFERS) measures it, in a transaction rolled back (the deliveries it claimed stay pending). From the start of
    the claim index (as every claim walked it before hub/store/claim_points.py), or from where the hub's last claim
    stopped."""
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.execute(f'SET LOCAL search_path = "{schema}"')
        point = None if from_start else await conn.fetchrow(_LAST_CLAIMED)
        start = tuple(point) if point is not None else BEGINNING
        plan = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_SQL, "adt", "out", limit, "bench-claim", 60.0, *start
        )
    finally:
        await tr.rollback()
    top = json.loads(plan)[0]
    return float(top["Execution Time"]), int(top["Plan"]["Shared Hit Blocks"] + top["Plan"]["Shared Read Blocks"])


async def watch(dsn: str, schema: str, receiver: Receiver, pid: int, every: float) -> None:
    """During the drain, every `every` seconds: messages received, the rate since the last line, the hub's CPU
    per message and its PostgreSQL backends' (those serving the hub's connections when the line is printed: a
    VACUUM's short-lived connection is counted only if it is open then), dead row versions and the hub's VACUUMs
    of the two hot tables (``pg_stat_user_tables``), and what one claim costs then (:func:`claim_cost`)."""
    conn = await asyncpg.connect(dsn)
    try:
        t0 = last_t = time.perf_counter()
        last_n, last_cpu = len(receiver.seen), cpu_secs(pid)
        backends: dict[int, float] = {}
        while True:
            await asyncio.sleep(every)
            now, got, cpu = time.perf_counter(), len(receiver.seen), cpu_secs(pid)
            seen = await backend_cpu(dsn, pid)
            pg_cpu = sum(c - backends.get(p, 0.0) for p, c in seen.items())
            backends = seen
            tables = {r[0]: r[1:] for r in await conn.fetch(_WATCH, schema)}
            start_ms, start_pages = await claim_cost(conn, schema, from_start=True)
            point_ms, point_pages = await claim_cost(conn, schema, from_start=False)
            d, m = tables.get("hub_deliveries", (0, 0, 0)), tables.get("hub_messages", (0, 0, 0))
            rate = (got - last_n) / (now - last_t)
            cpu_ms = 1000 * (cpu - last_cpu) / max(got - last_n, 1)
            pg_ms = 1000 * pg_cpu / max(got - last_n, 1)
            print(
                f"# t={now - t0:6.0f}s received={got} rate={rate:6.0f}/s hub_cpu={cpu_ms:.2f} pg_cpu={pg_ms:.2f} ms/msg"
                f" deliveries dead={d[0]} live={d[1]} vacuums={d[2]}; messages dead={m[0]} vacuums={m[2]};"
                f" claim from the start {start_ms:.2f} ms/{start_pages} buffers, from the last point {point_ms:.2f} ms/"
                f"{point_pages}; load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            last_t, last_n, last_cpu = now, got, cpu
    finally:
        await conn.close()


async def drop_schema(dsn: str, schema: str) -> None:
    """Remove a benchmark's PostgreSQL schema and everything in it."""
    conn = await asyncpg.connect(dsn)
    try:
        # pg_trgm, when this schema's migration created it, is moved out first: dropping it would drop the
        # trigram indexes of every other schema of the database.
        for (name,) in await conn.fetch(
            "SELECT x.extname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace WHERE n.nspname = $1",
            schema,
        ):
            await conn.execute(f'ALTER EXTENSION "{name}" SET SCHEMA public')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    p.add_argument("-n", type=int, nargs="+", default=[10_000], help="backlog sizes, one run each")
    p.add_argument("--connections", type=int, default=32, help="ingest connections")
    p.add_argument("--patients", type=int, default=50, help="patients (ordering keys) per connection")
    p.add_argument("--max-in-flight", type=int, default=8)
    p.add_argument("--timeout", type=float, default=3600.0, help="give up the drain after this many seconds")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--keep-log", help="copy the hub's log here")
    p.add_argument("--probe-max-secs", type=float, default=5.0, help="the destination's longest wait between probes")
    p.add_argument("--steps", nargs="*", choices=sorted(STEPS), default=[], help="steps of the route")
    p.add_argument("--refuse-first", action="store_true", help="AE to the first copy of every message")
    p.add_argument("--watch", type=float, default=0, help="PostgreSQL: print the progress every so many seconds")
    p.add_argument("--keep-schema", action="store_true", help="PostgreSQL: keep the schema after the run (to inspect)")
    p.add_argument(
        "--seed",
        action="store_true",
        help="PostgreSQL: write the backlog by SQL (the first message of each connection through the hub, as the"
        " template) instead of sending it: reaches a million queued in a minute; the ingest rate is then not measured",
    )
    p.add_argument("--pg-dsn", default=os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    gc.freeze()
    print(f"# machine: {machine()}; hub event loop: {args.loop}")
    print(
        f"# ingest: {args.connections} connections x {args.patients} patients each, closed loop; "
        f"destination max_in_flight {args.max_in_flight}"
    )
    for kind in args.store or ["sqlite", "postgres"]:
        for n in args.n:
            await run_one(kind, n, args)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
