"""What keeping a delivery's output costs the store: claim + finish per delivery, with and without it.

Method
------
* One store (SQLite file, or PostgreSQL in a fresh schema), N messages (the
  PAM FR ADT of `bench/mllp_ingest.py`, ~500 bytes) submitted, one delivery each.
* Then the delivery path's store calls, as a worker makes them, `--batch` at a time:
  `claim(limit=batch)` then one `finish` per claimed delivery (the outcome of an attempt).
  Three passes, each timed, in `--rounds` rounds of fresh deliveries (N to queue a, N to queue b;
  the order of the first two passes alternates from round to round):
  - `first, nothing kept` (queue a): finish without a sent payload (what main did);
  - `first, output kept` (queue b): finish with the steps' output (a changed 500-byte body and
    its metadata) stored in the same transaction (what the first attempt does now);
  - `retry, output read back` (queue b again): claim returns the stored output with each
    delivery (one more SELECT per claim) and finish writes nothing more (what every retry does now).
  Every finish leaves the delivery pending and due at once (an AE), so it can be claimed again.
* Printed: per pass the median over rounds of deliveries per second (N / wall time), and the
  per-delivery difference to `first, nothing kept` in microseconds.

Run: `.venv/bin/python bench/sent.py --store sqlite --store postgres -n 5000`.
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
from hub.store import NewDelivery, SentPayload, Store  # noqa: E402
from hub.store.postgres import PostgresStore  # noqa: E402
from hub.store.sqlite import SqliteStore  # noqa: E402


async def one_pass(store: Store, queue: str, n: int, batch: int, *, keep: bool) -> float:
    done = 0
    t0 = time.perf_counter()
    while done < n:
        claimed = await store.claim("r", queue, limit=batch, owner="bench", lease_secs=60)
        if not claimed:
            raise RuntimeError("nothing to claim")
        for c in claimed:
            sent = None
            if keep and c.sent is None:
                out = c.message.derive(body=c.message.body.replace(b"|DPI|", b"|PACS|"), ins_stamped="false")
                sent = SentPayload.of(c.delivery.id, c.message, out)
            await store.finish(
                c.delivery.id, owner="bench", status="pending", next_attempt_at=utcnow(), error="AE",
                outcome="retry", started_at=utcnow(), sent=sent,
            )  # fmt: skip
        done += len(claimed)
    return time.perf_counter() - t0


async def run(kind: str, args: argparse.Namespace) -> None:
    folder = tempfile.mkdtemp(prefix="hub-sent-")
    schema = "sent_" + uuid.uuid4().hex[:8]
    store: Store
    if kind == "sqlite":
        store = SqliteStore(Path(folder) / "hub.db")
    else:
        store = PostgresStore(args.pg_dsn, schema=schema, pool_size=4)
    await store.open()
    names = ("first, nothing kept", "first, output kept", "retry, output read back")
    timings: dict[str, list[float]] = {name: [] for name in names}
    try:
        for rnd in range(args.rounds):
            for queue in (f"a{rnd}", f"b{rnd}"):
                for i in range(args.n):
                    body = ADT.format(cid=f"S{i:09d}", pid=f"{i % 500:04d}").encode()
                    m = Message.new(body, content_type=ContentType.HL7V2, metadata={"control_id": f"S{i:09d}"})
                    await store.submit(m, [NewDelivery("r", queue, None, 10_000)], endpoint="in", dedup_key=None)
            first = [("first, nothing kept", f"a{rnd}", False), ("first, output kept", f"b{rnd}", True)]
            for name, queue, keep in first if rnd % 2 == 0 else first[::-1]:
                timings[name].append(await one_pass(store, queue, args.n, args.batch, keep=keep))
            timings["retry, output read back"].append(await one_pass(store, f"b{rnd}", args.n, args.batch, keep=True))
        base = statistics.median(timings["first, nothing kept"])
        for name, runs in timings.items():
            secs = statistics.median(runs)
            extra = (secs - base) / args.n * 1e6
            print(f"{kind:8} {name:24} {args.n / secs:8.0f} deliveries/s   {extra:+7.1f} us/delivery vs nothing kept")
    finally:
        await store.close()
        if kind == "postgres":
            await drop_schema(args.pg_dsn, schema)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    p.add_argument("-n", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="deliveries per claim (a worker's max_in_flight)")
    p.add_argument("--pg-dsn", default=os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    print(f"# machine: {machine()}; {args.n} deliveries, claimed {args.batch} at a time, one finish each")
    for kind in args.store or ["sqlite", "postgres"]:
        await run(kind, args)


if __name__ == "__main__":
    asyncio.run(main())
