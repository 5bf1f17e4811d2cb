"""What keeping the peer's reply with each attempt costs the store: claim + finish per delivery, by reply size.

Method
------
* One store (SQLite file, or PostgreSQL in a fresh schema), N messages (the PAM FR ADT of
  `bench/mllp_ingest.py`, ~500 bytes) submitted per pass, one delivery each, to a queue of its own.
* Then the delivery path's store calls, as a worker makes them, `--batch` at a time: `claim(limit=batch)`
  then one `finish` per claimed delivery, each carrying the attempt's reply (or none):
  - `no reply`: what an attempt the peer never answered records (a time-out), and what main recorded;
  - `ACK, 90 B`: an MLLP ACK (MSH + MSA), the reply of every HL7 v2 delivery;
  - `4 KiB`: an HTTP body such as an OperationOutcome or a SOAP RegistryResponse;
  - `64 KiB (cap)`: the largest reply kept by default (`reply_max_bytes`).
  Each finish delivers the delivery (one attempt, one reply). The passes run in `--rounds` rounds of
  fresh deliveries, their order rotated from round to round.
* Printed: per pass the median over rounds of deliveries per second (N / wall time) and each round's
  figure, the per-delivery difference to `no reply` in microseconds, and this process's CPU time per
  delivery (user + system; with SQLite it includes the store's own thread, with PostgreSQL only the
  client's side): on a shared machine the wall time is mostly fsync and commit latency, the CPU time
  hardly moves with the load.

Run: `.venv/bin/python bench/replies.py --store sqlite --store postgres -n 3000`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.drain import drop_schema  # noqa: E402
from bench.mllp_ingest import ADT, machine  # noqa: E402
from hub.content_types import ContentType  # noqa: E402
from hub.message import Message, utcnow  # noqa: E402
from hub.replies import PeerReply, ReplyKind  # noqa: E402
from hub.store import NewDelivery, Store  # noqa: E402
from hub.store.postgres import PostgresStore  # noqa: E402
from hub.store.sqlite import SqliteStore  # noqa: E402

_ACK = b"MSH|^~\\&|DPI|HOSP|GAM|HOSP|20250101120000||ACK^A01^ACK|A000000001|P|2.5\rMSA|AA|S000000001\r"
_OUTCOME = (b'{"resourceType":"OperationOutcome","issue":[' + b'{"severity":"error","code":"invalid"},' * 110)[:4096]
PASSES: dict[str, PeerReply | None] = {
    "no reply": None,
    "ACK, 90 B": PeerReply.of(ReplyKind.HL7V2_ACK, "AA", _ACK, content_type=ContentType.HL7V2),
    "4 KiB": PeerReply.of(ReplyKind.HTTP, "422", _OUTCOME, content_type="application/fhir+json"),
    "64 KiB (cap)": PeerReply.of(ReplyKind.HTTP, "200", bytes(range(256)) * 1024, content_type="application/xml"),
}


async def one_pass(store: Store, queue: str, n: int, batch: int, reply: PeerReply | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of claiming and finishing `n` deliveries of `queue`."""
    done = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while done < n:
        claimed = await store.claim("r", queue, limit=batch, owner="bench", lease_secs=60)
        if not claimed:
            raise RuntimeError("nothing to claim")
        for c in claimed:
            await store.finish(
                c.delivery.id, owner="bench", status="delivered", next_attempt_at=None, error="",
                outcome="accept", started_at=utcnow(), reply=reply,
            )  # fmt: skip
        done += len(claimed)
    return time.perf_counter() - t0, time.process_time() - cpu0


async def fill(store: Store, queue: str, n: int) -> None:
    for i in range(n):
        body = ADT.format(cid=f"R{i:09d}", pid=f"{i % 500:04d}").encode()
        m = Message.new(body, content_type=ContentType.HL7V2, metadata={"control_id": f"R{i:09d}"})
        await store.submit(m, [NewDelivery("r", queue, None, 10)], endpoint="in", dedup_key=None)


async def run(kind: str, args: argparse.Namespace) -> None:
    folder = tempfile.mkdtemp(prefix="hub-replies-")
    schema = "replies_" + uuid.uuid4().hex[:8]
    store: Store
    if kind == "sqlite":
        store = SqliteStore(Path(folder) / "hub.db")
    else:
        store = PostgresStore(args.pg_dsn, schema=schema, pool_size=4)
    await store.open()
    names = list(PASSES)
    timings: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    try:
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for i in range(len(order)):
                await fill(store, f"q{rnd}_{i}", args.n)
            for i, name in enumerate(order):
                wall, used = await one_pass(store, f"q{rnd}_{i}", args.n, args.batch, PASSES[name])
                timings[name].append(wall)
                cpu[name].append(used)
        base = statistics.median(timings["no reply"])
        for name, runs in timings.items():
            secs = statistics.median(runs)
            extra = (secs - base) / args.n * 1e6
            each = ", ".join(f"{args.n / r:.0f}" for r in runs)
            used = statistics.median(cpu[name]) / args.n * 1e6
            print(
                f"{kind:8} {name:14} {args.n / secs:6.0f} deliveries/s ({each})  {extra:+7.1f} us/delivery vs no reply"
                f"  CPU {used:6.0f} us/delivery"
            )
    finally:
        await store.close()
        if kind == "postgres":
            await drop_schema(args.pg_dsn, schema)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    p.add_argument("-n", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--batch", type=int, default=8, help="deliveries per claim (a worker's max_in_flight)")
    p.add_argument("--pg-dsn", default=os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    print(f"# machine: {machine()}; {args.n} deliveries per pass, claimed {args.batch} at a time, one finish each")
    for kind in args.store or ["sqlite", "postgres"]:
        await run(kind, args)


if __name__ == "__main__":
    asyncio.run(main())
