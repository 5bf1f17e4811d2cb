"""Content-search index benchmark: what the trigram index costs the group commit, and what a search costs.

Method
------
* Two stores of one kind side by side, each in a fresh file (SQLite) or schema (PostgreSQL): one as
  shipped, one whose index is taken away after migration (SQLite: the FTS5 table replaced by a plain
  table of the same columns; PostgreSQL: the GIN trigram index dropped). The text is still decoded and
  written in both, so the difference is the index maintenance itself.
* Rounds alternate between the two stores (the machine is shared: alternating spreads its noise over
  both). One round = `--batch` submits at once, which the group commit writes as one transaction before
  any of them returns (the ACK path). Each message is a ~450-byte PAM FR ADT^A08 with its own name.
* The index is written after the commit by each store's background indexer (hub/store/content_index.py),
  in the same process: a round is the ACK path, with both indexers working beside it (the indexed store's
  between its rounds slows the other store's rounds too).
* Reported: median and p90 of the round time, and the median per message.
* Then, on the indexed store (`--rounds` x `--batch` messages): median latency of a content search
  for one patient's name over the last 24 h (one match), and for a text every message carries
  (limit 50); on PostgreSQL again after VACUUM ANALYZE (what autovacuum does on a live table).

Run: `.venv/bin/python bench/content_index.py --store sqlite --store postgres`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg

from hub.content_types import ContentType
from hub.message import Message, utcnow
from hub.store import ContentQuery, NewDelivery, Store
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SqliteStore

DELIVERY = [NewDelivery(route="r", destination="dpi", ordering_key=None, max_attempts=3)]


def adt(n: int) -> Message:
    body = (
        f"MSH|^~\\&|GAM|HOSP|DPI|HOSP|20250101120000||ADT^A08^ADT_A01|B{n}|P|2.5^FRA^2.11|||||FRA|UNICODE UTF-8\r"
        "EVN||20250101120000\r"
        f"PID|1||{n:08d}^^^HOSP&1.2.250.1.71.4.2.2&ISO^PI||NOM{n:07d}X^PRENOM^^^^^L||19800101|F|||"
        "1 RUE DE LA PAIX^^PARIS^^75001^FRA\r"
        "PV1|1|I|CARDIO^101^1^HOSP||||123456^MEDECIN^JEAN\r"
    ).encode()
    return Message.new(body, content_type=ContentType.HL7V2, metadata={"message_type": "ADT^A08"})


async def open_pair(kind: str, dsn: str, folder: Path) -> tuple[Store, Store, list[str]]:
    if kind == "sqlite":
        indexed, bare = SqliteStore(folder / "indexed.db"), SqliteStore(folder / "bare.db")
        await indexed.open()
        await bare.open()
        await bare._run(bare._tx, lambda db: db.execute("DROP TABLE message_text"))
        await bare._run(bare._tx, lambda db: db.execute("CREATE TABLE message_text (body, message_id)"))
        return indexed, bare, []
    schemas = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    indexed, bare = (PostgresStore(dsn, schema=s, pool_size=2) for s in schemas)
    await indexed.open()
    await bare.open()
    async with bare._conn() as conn:
        await conn.execute("DROP INDEX hub_message_text_trgm")
    return indexed, bare, schemas


async def round_secs(store: Store, start: int, batch: int) -> float:
    messages = [adt(start + i) for i in range(batch)]
    t0 = time.perf_counter()
    await asyncio.gather(*(store.submit(m, DELIVERY, endpoint="mllp_in", dedup_key=None) for m in messages))
    return time.perf_counter() - t0


async def search_ms(store: Store, text: str, repeat: int = 20) -> float:
    times = []
    for _ in range(repeat):
        now = utcnow()
        t0 = time.perf_counter()
        await store.search_content(ContentQuery(text=text, since=now - timedelta(hours=24), until=now, limit=50))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def run(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        indexed, bare, schemas = await open_pair(kind, args.pg_dsn, Path(tmp))
        times: dict[str, list[float]] = {"indexed": [], "bare": []}
        try:
            for r in range(args.rounds):
                for name, store in (("indexed", indexed), ("bare", bare)):
                    times[name].append(await round_secs(store, r * args.batch, args.batch))
            print(f"\n{kind}: {args.rounds} rounds of {args.batch} messages per store")
            print("| store | round p50 | round p90 | per message (p50) |")
            print("|---|---:|---:|---:|")
            for name, t in times.items():
                p50 = statistics.median(t)
                print(
                    f"| {name} | {p50 * 1000:.1f} ms | {pct(t, 0.9) * 1000:.1f} ms | {p50 / args.batch * 1e6:.0f} µs |"
                )
            rare = f"NOM{(args.rounds * args.batch) // 2:07d}X"
            print(f"search, one match among {args.rounds * args.batch}: {await search_ms(indexed, rare):.1f} ms (p50)")
            print(f"search, every message matches (limit 50): {await search_ms(indexed, 'CARDIO'):.1f} ms (p50)")
            if schemas:  # after autovacuum's work: the GIN pending list merged, statistics fresh
                async with indexed._conn() as conn:  # type: ignore[attr-defined]
                    await conn.execute("VACUUM ANALYZE hub_message_text")
                    await conn.execute("ANALYZE hub_messages")
                print(f"after VACUUM ANALYZE, one match: {await search_ms(indexed, rare):.1f} ms (p50)")
                print(f"after VACUUM ANALYZE, every message matches: {await search_ms(indexed, 'CARDIO'):.1f} ms (p50)")
        finally:
            await indexed.close()
            await bare.close()
            if schemas:
                conn = await asyncpg.connect(args.pg_dsn)
                for s in schemas:
                    await conn.execute(f'DROP SCHEMA "{s}" CASCADE')
                await conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pg-dsn", default=os.environ.get("HUB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    args = p.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")
    for kind in args.store or ["sqlite", "postgres"]:
        asyncio.run(run(kind, args))


if __name__ == "__main__":
    main()
