"""Crash safety: SIGKILL `hub serve` while messages flow; everything it AA'd still reaches the peer, in order.

Four sender connections push synthetic ADT^A01 over MLLP to a hub
subprocess, each owning its own patients, and resend a message until it is
acknowledged (as real senders do). The destination is an MllpPeer in this
test process, so it outlives the hub. Midway the hub is killed with SIGKILL
and started again on the same config and store. Then:

* every control id that got an AA reaches the peer (duplicates are allowed,
  and recognisable by MSH-10);
* per patient, first deliveries follow the order of the AAs;
* the store (read with `hub messages --json`) holds each of them once, delivered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.mllp.framing import FrameTimeout, frame
from hub.config import load_config
from hub.store import SearchQuery, open_store
from tests.conftest import drop_pg_schema, free_port, new_pg_schema
from tests.hubkit import MllpClient, ack_fields, adt, default_route, running_peer, wait_until, write_config

pytestmark = pytest.mark.slow

HUB = Path(sys.executable).parent / "hub"
SENDERS = 4
PATIENTS_PER_SENDER = 3
MESSAGES_PER_SENDER = 100
KILL_AFTER_ACKS = 150
SEND_PHASE_SECS = 30
DELIVERY_WAIT_SECS = 60


class HubProcess:
    """`hub serve` as a subprocess; ready when its MLLP listener accepts connections."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.log = config.parent / "hub.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                HUB,
                "serve",
                "--config",
                str(self.config),
                cwd=self.config.parent,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        # Start-up imports every component: on a 2-core machine shared with other work that can take 30 s.
        async with asyncio.timeout(90):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"hub exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                return await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"hub did not stop on SIGTERM:\n{self.tail()}") from None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


async def stored_rows(config: Path) -> list[dict[str, Any]]:
    """Every stored message with its deliveries' statuses, read from the store itself."""
    store = await open_store(load_config(config).hub.store)
    try:
        records = await store.search(SearchQuery(limit=100_000))
        deliveries = await store.deliveries([r.message.id for r in records])
    finally:
        await store.close()
    return [
        {
            "control_id": r.message.metadata.get("control_id", ""),
            "status": r.status,
            "deliveries": [{"status": d.status} for d in deliveries[r.message.id]],
        }
        for r in records
    ]


@dataclasses.dataclass
class Sender:
    """One MLLP connection owning its patients; `acked` is the AA order."""

    index: int
    acked: list[str] = dataclasses.field(default_factory=list)
    connection_errors: int = 0
    anomalies: list[str] = dataclasses.field(default_factory=list)

    def message(self, seq: int) -> tuple[str, str, bytes]:
        patient = f"CRASH{self.index}{seq % PATIENTS_PER_SENDER}"
        control_id = f"K{self.index}-{seq:04d}"
        return control_id, patient, adt(control_id, patient=patient)

    async def run(self, port: int) -> None:
        seq = 0
        while seq < MESSAGES_PER_SENDER:
            try:
                client = await MllpClient.connect(port)
            except OSError:
                self.connection_errors += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while seq < MESSAGES_PER_SENDER:
                    control_id, _, body = self.message(seq)
                    await client.send_raw(frame(body))
                    ack = await client.ack(timeout=10)
                    if ack is None:
                        raise ConnectionResetError("closed without an ACK")
                    msa = ack_fields(ack)["MSA"]
                    if msa[1:3] == ["AA", control_id]:
                        self.acked.append(control_id)
                        seq += 1
                    elif msa[1] == "AE":
                        await asyncio.sleep(0.05)  # the hub cannot keep it now: resend the same message
                    else:
                        self.anomalies.append(f"{control_id}: {msa[1:3]}")
                        seq += 1
            except (OSError, asyncio.IncompleteReadError, FrameTimeout, TimeoutError):
                # Unacknowledged: not counted, resent on the next connection (same MSH-10).
                self.connection_errors += 1
                await asyncio.sleep(0.05)
            finally:
                await client.close()


@contextlib.asynccontextmanager
async def store_config(kind: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    if kind == "sqlite":
        yield {"kind": "sqlite", "path": str(tmp_path / "hub.db"), "lease_secs": 2}
        return
    dsn, schema = await new_pg_schema()
    try:
        yield {"kind": "postgres", "dsn": dsn, "schema": schema, "pool_size": 4, "lease_secs": 2}
    finally:
        await drop_pg_schema(dsn, schema)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_sigkill_loses_nothing_acknowledged(kind: str, tmp_path: Path) -> None:
    async with store_config(kind, tmp_path) as store, running_peer(keep=100_000) as peer:
        port = free_port()
        route = default_route(
            dest={
                "max_in_flight": 4,
                "retry": {"max_attempts": 100, "initial_secs": 0.05, "max_secs": 0.5, "jitter": 0.1},
            }
        )
        config = write_config(
            tmp_path,
            peer_port=peer.port,
            store=store,
            routes=[route],
            listener={"listen": f"127.0.0.1:{port}"},
            http={"enabled": False},
            logging={"level": "warning"},
        )
        hub = HubProcess(config, port)
        senders = [Sender(i) for i in range(SENDERS)]
        try:
            await hub.start()

            def total_acked() -> int:
                return sum(len(s.acked) for s in senders)

            async def crash_and_restart() -> int:
                await wait_until(lambda: total_acked() >= KILL_AFTER_ACKS, timeout=SEND_PHASE_SECS)
                await hub.kill()
                acked_at_kill = total_acked()
                await asyncio.sleep(0.3)  # senders meet refused connections meanwhile
                await hub.start()
                return acked_at_kill

            async with asyncio.timeout(SEND_PHASE_SECS):
                acked_at_kill, *_ = await asyncio.gather(crash_and_restart(), *(s.run(port) for s in senders))

            acked = [cid for s in senders for cid in s.acked]
            assert not [a for s in senders for a in s.anomalies]
            assert len(acked) == len(set(acked)) == SENDERS * MESSAGES_PER_SENDER
            assert acked_at_kill >= KILL_AFTER_ACKS and len(acked) > acked_at_kill
            assert sum(s.connection_errors for s in senders) >= 1, "the kill went unnoticed by the senders"

            def received_ids() -> set[str]:
                return {r["control_id"] for r in peer.received}

            with contextlib.suppress(TimeoutError):
                await wait_until(lambda: set(acked) <= received_ids(), timeout=DELIVERY_WAIT_SECS, interval=0.1)
            missing = sorted(set(acked) - received_ids())
            assert not missing, f"{len(missing)} AA'd messages never delivered: {missing[:20]}\n{hub.tail()}"

            # Duplicates are allowed, and recognisable: every delivery carries one of our MSH-10s.
            received = [r["control_id"] for r in peer.received]
            sent_ids = {s.message(i)[0] for s in senders for i in range(MESSAGES_PER_SENDER)}
            assert set(received) <= sent_ids

            # FIFO per patient: first deliveries follow the AA order (each patient has one sender).
            patient_of = {s.message(i)[0]: s.message(i)[1] for s in senders for i in range(MESSAGES_PER_SENDER)}
            first = list(dict.fromkeys(received))
            for s in senders:
                for p in range(PATIENTS_PER_SENDER):
                    patient = f"CRASH{s.index}{p}"
                    in_ack_order = [c for c in s.acked if patient_of[c] == patient]
                    in_delivery_order = [c for c in first if patient_of[c] == patient]
                    assert in_delivery_order == in_ack_order, f"{patient} delivered out of order"

            assert await hub.terminate() == 0, hub.tail()
            rows = await stored_rows(config)  # read offline, as maintenance would: the hub is stopped
        finally:
            await hub.kill()

        by_control = collections.defaultdict(list)
        for row in rows:
            by_control[row["control_id"]].append(row)
        for control_id in acked:
            [row] = by_control[control_id]  # stored once: resends after the crash were deduplicated
            assert row["status"] == "delivered", (control_id, row["status"])
            assert [d["status"] for d in row["deliveries"]] == ["delivered"]
        assert not [r for r in rows if r["status"] == "rejected"]
