"""Hostile input against a running MLLP listener: garbage, mutated HL7, abrupt and slow connections.

A seeded, bounded campaign against an in-process Hub (SQLite store, fake
peer as destination). Whatever arrives, after every batch:

* the listener still answers a valid ADT with AA on a fresh connection;
* every complete frame got exactly one reply, and every reply is a
  well-formed HL7 ACK (MSH then MSA, MSA-1 in AA/AE/AR, ERR unless AA);
* every AR'd frame is stored with status ``rejected`` and a reason, every
  AA'd one is stored to be routed, and everything routed reaches the peer;
* no hub task died and nothing was logged at error level.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import random
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from adapters.mllp.framing import CR, FS, VT, FrameReader, frame
from hub.runtime import Hub
from hub.store import SearchQuery, Store
from tests.hubkit import adt, mllp_port, running_hub, running_peer, wait_until, write_config

SEED = 20240306
MAX_FRAME_BYTES = 64 * 1024
READ_TIMEOUT_SECS = 0.5
RECEIVE_TIMEOUT_SECS = 2.0
MAX_CONNECTIONS = 32
REPLY_TIMEOUT_SECS = 5.0
VALID_CODES = ("AA", "AE", "AR")


def ack_parts(reply: bytes) -> tuple[str, str, list[str]]:
    """(MSA-1, MSA-2, segment ids) of a reply, asserting it is a well-formed original-mode ACK."""
    # The ACK is in the inbound character set (MSH-18, or the guess); its structure is ASCII either way.
    text = reply.decode("latin-1")
    assert text.startswith("MSH") and len(text) > 8, reply[:80]
    assert text.endswith("\r"), reply[-80:]
    assert "\n" not in text, f"LF inside an ACK: {reply[:120]!r}"
    fs, enc = text[3], text[4:8]
    assert len(set(fs + enc)) == 5 and not any(c.isalnum() or c in "\r\n" for c in fs + enc), reply[:40]
    segments = text[:-1].split("\r")
    assert all(segments), f"empty segment in {reply[:120]!r}"
    ids = [s[:3] for s in segments]
    assert ids[:2] == ["MSH", "MSA"], ids
    msh = ["MSH", fs, *segments[0].split(fs)[1:]]
    assert msh[9].startswith("ACK"), msh[9]
    assert msh[10], "ACK without its own MSH-10"
    msa = segments[1].split(fs)
    assert len(msa) >= 3 and msa[1] in VALID_CODES, segments[1]
    if msa[1] != "AA":
        assert "ERR" in ids, f"{msa[1]} without an ERR segment"
        err = segments[ids.index("ERR")].split(fs)
        assert len(err) > 3 and err[3].split(enc[0])[0].isdigit(), "ERR-3 is not a table 0357 code"
    return msa[1], msa[2], ids


@dataclasses.dataclass
class Exchange:
    sent: bytes | None  # the frame body, when exactly this frame was sent and answered
    reply: bytes
    code: str


class Campaign:
    """Talks to the hub like a hostile crowd, and keeps what it saw for the checks."""

    def __init__(self, hub: Hub, peer: Any, logs: list[dict[str, Any]], loop_errors: list[dict[str, Any]]) -> None:
        self.hub = hub
        self.peer = peer
        self.port = mllp_port(hub)
        self.logs = logs
        self.loop_errors = loop_errors
        self.exchanges: list[Exchange] = []
        self.probes: list[str] = []
        self.rng = random.Random(SEED)

    @property
    def store(self) -> Store:
        assert self.hub.store is not None
        return self.hub.store

    def record(self, reply: bytes, sent: bytes | None = None) -> Exchange:
        code, _, _ = ack_parts(reply)
        ex = Exchange(sent, reply, code)
        self.exchanges.append(ex)
        return ex

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, FrameReader]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return reader, writer, FrameReader(reader, max_frame_bytes=2**22, read_timeout_secs=REPLY_TIMEOUT_SECS)

    async def send_frames(self, bodies: list[bytes], *, pipelined: bool = False) -> list[Exchange]:
        """Frames without VT/FS inside, on one connection: each must get exactly one reply, in order."""
        for body in bodies:
            assert VT not in body and FS not in body
        _, writer, frames = await self.open()
        out: list[Exchange] = []
        try:
            if pipelined:
                writer.write(b"".join(frame(b) for b in bodies))
                await writer.drain()
            for i, body in enumerate(bodies):
                if not pipelined:
                    writer.write(frame(body))
                    await writer.drain()
                async with asyncio.timeout(REPLY_TIMEOUT_SECS):
                    got = await frames.read_frame()
                assert got is not None, f"frame {i} ({body[:60]!r}...) got no reply: connection closed"
                out.append(self.record(got.body, body))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return out

    async def send_raw(self, data: bytes) -> list[Exchange]:
        """Arbitrary bytes, then end of stream; every reply (maybe none) must be a well-formed ACK."""
        _, writer, frames = await self.open()
        out: list[Exchange] = []
        try:
            writer.write(data)
            await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(REPLY_TIMEOUT_SECS):
                while (got := await frames.read_frame()) is not None:
                    out.append(self.record(got.body))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return out

    def probe_body(self) -> tuple[str, bytes]:
        control_id = f"PROBE{len(self.probes):04d}"
        self.probes.append(control_id)
        return control_id, adt(control_id, patient=f"PROBE{len(self.probes) % 3}")

    async def probe(self) -> None:
        control_id, body = self.probe_body()
        [ex] = await self.send_frames([body])
        assert ex.code == "AA", f"valid probe {control_id} answered {ex.code}"

    async def check(self) -> None:
        """The invariants that must hold after any batch."""
        await self.probe()
        store = self.store
        stored = await store.search(SearchQuery(limit=1_000_000))
        rejected = [r for r in stored if r.status == "rejected"]
        assert all(r.reason.strip() for r in rejected), "a rejected message without a reason"
        rejected_bodies = collections.Counter(r.message.body for r in rejected)
        kept_bodies = {r.message.body for r in stored if r.status != "rejected"}
        ar_count = 0
        for ex in self.exchanges:
            if ex.code == "AR":
                ar_count += 1
            if ex.sent is None:
                continue
            if ex.code == "AR":
                head = ex.sent[:MAX_FRAME_BYTES]
                assert rejected_bodies[head] > 0, f"AR'd frame not stored as rejected: {ex.sent[:60]!r}"
                rejected_bodies[head] -= 1
            elif ex.code == "AA":
                assert ex.sent in kept_bodies, f"AA'd frame not stored: {ex.sent[:60]!r}"
        assert len(rejected) >= ar_count, "fewer rejected messages stored than AR replies sent"
        # Everything AA'd and routed is forwarded: nothing stays pending, nothing dies.
        await wait_until(self._undelivered_is_zero, timeout=10)
        dead = await store.find_deliveries(status="dead")
        assert not dead, [d.last_error for d in dead]
        received = {r["control_id"] for r in self.peer.received}
        assert set(self.probes) <= received, sorted(set(self.probes) - received)
        self.assert_alive()

    async def _undelivered_is_zero(self) -> bool:
        return await self.store.undelivered_count() == 0

    def assert_alive(self) -> None:
        listener = self.hub.listeners["mllp_in"]
        assert listener._server is not None and listener._server.is_serving()
        assert self.hub.supervisor.unhealthy() == {}
        assert all(s.crashes == 0 for s in self.hub.supervisor.states.values()), self.hub.supervisor.states
        for worker in self.hub.workers.values():
            assert worker._task is not None and not worker._task.done(), f"worker {worker.route} ended"
        errors = [e for e in self.logs if e.get("log_level") in ("error", "critical")]
        assert not errors, errors[:5]
        assert not self.loop_errors, [str(c.get("exception") or c.get("message")) for c in self.loop_errors[:5]]


@pytest.fixture
async def campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    try:
        with structlog.testing.capture_logs() as logs:
            async with running_peer(keep=100_000) as peer:
                config = write_config(
                    tmp_path,
                    peer_port=peer.port,
                    http={"enabled": False},
                    listener={
                        "max_frame_bytes": MAX_FRAME_BYTES,
                        "read_timeout_secs": READ_TIMEOUT_SECS,
                        "receive_timeout_secs": RECEIVE_TIMEOUT_SECS,
                        "max_connections": MAX_CONNECTIONS,
                        "max_connections_per_peer": MAX_CONNECTIONS,  # one address plays the whole crowd
                    },
                )
                async with running_hub(config) as hub:
                    yield Campaign(hub, peer, logs, loop_errors)
    finally:
        loop.set_exception_handler(None)


def without_framing(data: bytes) -> bytes:
    return data.replace(VT, b"").replace(FS, b"")


def mutations(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(kind, body) of damaged ADT messages, each from a base with its own MSH-10."""
    counter = iter(range(1_000_000))

    def base() -> bytes:
        n = next(counter)
        return adt(f"MUT{n:04d}", patient=f"FUZZ{n % 5}")

    for _ in range(40):
        b = base()
        yield "truncated", b[: rng.randrange(len(b))]
    for _ in range(40):
        b = bytearray(base())
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        yield "flipped", bytes(b)
    for _ in range(10):
        yield "no CR", base().replace(CR, b"")
        yield "LF only", base().replace(CR, b"\n")
    for _ in range(20):
        b = bytearray(base())
        for _ in range(rng.randint(1, 5)):
            b.insert(rng.randrange(len(b) + 1), 0)
        yield "NULs", bytes(b)
    for _ in range(10):
        b = base()
        yield "invalid UTF-8", b.replace(b"TESTNOM", bytes(rng.randrange(0x80, 0x100) for _ in range(7)))
    b = base()
    yield "huge MSH-4", b.replace(b"|HOSP|DPI|", b"|" + b"F" * 60_000 + b"|DPI|", 1)
    yield "huge PID-5", base().replace(b"TESTNOM", b"N" * 60_000)
    yield "huge repetitions", base().replace(b"^L|", b"^L" + b"~X^Y" * 10_000 + b"|")
    yield "MSH only", base().split(CR)[0] + CR
    yield "MSH only, no CR", base().split(CR)[0]
    yield "10 000 segments", base() + b"NTE\r" * 10_000
    yield "10 000 bad segments", base() + b"n\r" * 10_000
    yield "empty", b""
    yield "whitespace", b" \r\n\t \r"
    yield "segment separators only", CR * 1000


# Violations of HL7 v2.5 §2.5.4 (five distinct, non-alphanumeric encoding characters): always AR.
BAD_ENCODING = [
    b"MSH||GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC1|P|2.5\r",
    b"MSH|^~\\|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC2|P|2.5\r",
    b"MSH|^^\\&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC3|P|2.5\r",
    b"MSH|ab\\&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC4|P|2.5\r",
    b"MSHA^~\\&AGAMAHOSPADPIAHOSPA20250101AAADT^A01ABADENC5APA2.5\r",
    b"MSH|^~|&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC6|P|2.5\r",
    b"MSH|^~\r&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC7|P|2.5\r",
    b"MSH|^~\n&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC8|P|2.5\r",
    b"MSH\r^~\\&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|BADENC9|P|2.5\r",
    b"MSH|",
    b"MSH",
]
# Odd but not forbidden delimiters: any well-formed ACK will do.
ODD_ENCODING = [
    b"MSH|\x00~\\&|GAM|HOSP|DPI|HOSP|20250101||ADT^A01|ODDENC1|P|2.5\r",
    b"MSH ^~\\& GAM HOSP DPI HOSP 20250101  ADT^A01 ODDENC2 P 2.5\r",
    b"MSH\xff^~\\&\xffGAM\xffHOSP\xffDPI\xffHOSP\xff20250101\xff\xffADT^A01\xffODDENC3\xffP\xff2.5\r",
    b"MSH#$%@!#GAM#HOSP#DPI#HOSP#20250101##ADT$A01#ODDENC4#P#2.5\r",
]


async def test_random_bytes_and_random_frames(campaign: Campaign) -> None:
    rng = campaign.rng
    # Bytes with no framing at all, or framing bytes anywhere: replies are optional, well-formed if any.
    for _ in range(30):
        await campaign.send_raw(rng.randbytes(rng.randrange(1, 8192)))
    for _ in range(30):
        parts = [VT + rng.randbytes(rng.randrange(0, 2048)) + FS + CR for _ in range(rng.randint(1, 5))]
        await campaign.send_raw(b"".join(parts))
    # Well-delimited frames of random content: each is exactly one AR (not HL7), stored rejected.
    bodies = [without_framing(rng.randbytes(rng.randrange(0, 4096))) for _ in range(60)]
    bodies = [b for b in bodies if not b.lstrip(b"\r\n").startswith(b"MSH")]
    for ex in await campaign.send_frames(bodies):
        assert ex.code == "AR", ex.reply
    for ex in await campaign.send_frames(bodies[:20], pipelined=True):
        assert ex.code == "AR", ex.reply
    await campaign.check()


async def test_mutated_adt_frames(campaign: Campaign) -> None:
    cases = [(kind, without_framing(body)) for kind, body in mutations(campaign.rng)]
    answered = await campaign.send_frames([body for _, body in cases])
    assert len(answered) == len(cases)
    # Some mutations are still valid HL7: the campaign must exercise both sides.
    codes = collections.Counter(ex.code for ex in answered)
    assert codes["AA"] > 0 and codes["AR"] > 0, codes
    for ex in await campaign.send_frames(BAD_ENCODING):
        assert ex.code == "AR", (ex.sent, ex.reply)
    await campaign.send_frames(ODD_ENCODING)
    await campaign.check()


async def test_oversized_frames_are_refused_and_the_stream_goes_on(campaign: Campaign) -> None:
    base = adt("BIG1")
    big = base + b"NTE|1||" + b"x" * (MAX_FRAME_BYTES + 1) + CR
    huge = adt("BIG2") + b"NTE|1||" + campaign.rng.randbytes(3 * 2**20).replace(VT, b"").replace(FS, b"") + CR
    garbage = without_framing(campaign.rng.randbytes(MAX_FRAME_BYTES * 2))
    huge_msh = b"MSH|^~\\&|" + b"A" * (MAX_FRAME_BYTES * 2) + b"|HOSP||||ADT^A01|BIG3|P|2.5\r"
    _, valid = campaign.probe_body()
    answered = await campaign.send_frames([big, valid, huge, garbage, huge_msh, valid], pipelined=True)
    assert [ex.code for ex in answered] == ["AR", "AA", "AR", "AR", "AR", "AA"]
    assert "max_frame_bytes" in answered[0].reply.decode()
    for control_id, size in (("BIG1", len(big)), ("BIG2", len(huge))):
        [rec] = await campaign.store.search(SearchQuery(control_id=control_id))
        assert rec.status == "rejected" and "max_frame_bytes" in rec.reason
        assert rec.message.metadata["truncated_from_bytes"] == str(size)
        assert len(rec.message.body) <= MAX_FRAME_BYTES
    await campaign.check()


async def _abrupt(campaign: Campaign, kind: str, rng: random.Random, n: int) -> None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", campaign.port)
    except OSError:
        return
    valid = adt(f"ABRUPT{n:04d}", patient=f"ABRUPT{n % 4}")
    if kind in ("half_rst", "garbage_rst", "frames_rst"):
        # SO_LINGER 0: close() sends RST instead of FIN.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    data = {
        "connect_close": b"",
        "half_close": frame(valid)[: rng.randrange(1, len(valid))],
        "half_rst": frame(valid)[: rng.randrange(1, len(valid))],
        "garbage_rst": rng.randbytes(rng.randrange(1, 4096)),
        "full_no_read": frame(valid),
        "frames_rst": b"".join(frame(adt(f"ABRUPT{n:04d}-{i}")) for i in range(10)),
    }[kind]
    with contextlib.suppress(OSError):
        writer.write(data)
        if rng.random() < 0.5:
            await writer.drain()
    if kind.endswith("rst"):
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _full_house(campaign: Campaign, round_: int) -> bool:
    """MAX_CONNECTIONS connections at once, each answered AA; one more is turned away while they are held."""
    conns: list[tuple[asyncio.StreamWriter, FrameReader]] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            _, writer, frames = await campaign.open()
            conns.append((writer, frames))
        codes = []
        for i, (writer, frames) in enumerate(conns):
            body = adt(f"HOUSE{round_}-{i:02d}", patient=f"HOUSE{i % 4}")
            writer.write(frame(body))
            await writer.drain()
            async with asyncio.timeout(REPLY_TIMEOUT_SECS):
                got = await frames.read_frame()
            if got is None:
                codes.append("closed")
                continue
            codes.append(campaign.record(got.body, body).code)
        if codes != ["AA"] * MAX_CONNECTIONS:
            return False
        reader, writer = await asyncio.open_connection("127.0.0.1", campaign.port)
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_SECS):
                extra = await reader.read()
            assert extra == b"", "a connection above max_connections was served"
        finally:
            writer.close()
        return True
    finally:
        for writer, _ in conns:
            writer.close()


async def test_abrupt_connections_do_not_leak_slots(campaign: Campaign) -> None:
    rng = campaign.rng
    kinds = ["connect_close", "half_close", "half_rst", "garbage_rst", "full_no_read", "frames_rst"]
    n = 0
    for _wave in range(5):
        wave = []
        for _ in range(60):
            wave.append(_abrupt(campaign, rng.choice(kinds), rng, n))
            n += 1
        await asyncio.gather(*wave)
    # Connection slots come back as the hub sees the ends: all of them must be usable again.
    rounds = iter(range(1000))
    await wait_until(lambda: _full_house(campaign, next(rounds)), timeout=10, interval=0.2)
    await campaign.check()


async def test_slowloris(campaign: Campaign) -> None:
    async def stalled(i: int) -> bytes:
        # A frame started, then silence longer than read_timeout_secs: dropped, connection closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", campaign.port)
        try:
            writer.write(VT + adt(f"SLOW{i:02d}")[:40])
            await writer.drain()
            async with asyncio.timeout(READ_TIMEOUT_SECS * 10):
                return await reader.read()
        finally:
            writer.close()

    async def idle() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", campaign.port)
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT_SECS * 4):
                return await reader.read()
        finally:
            writer.close()

    async def trickle(i: int) -> list[bytes]:
        # A frame dribbled in pieces, each gap shorter than read_timeout_secs, the whole longer.
        reader, writer = await asyncio.open_connection("127.0.0.1", campaign.port)
        data = frame(adt(f"TRICKLE{i:02d}"))
        try:
            step = max(1, len(data) // 8)
            for k in range(0, len(data), step):
                writer.write(data[k : k + step])
                await writer.drain()
                await asyncio.sleep(READ_TIMEOUT_SECS / 3)
            writer.write_eof()
            frames = FrameReader(reader, max_frame_bytes=2**20, read_timeout_secs=REPLY_TIMEOUT_SECS)
            replies = []
            async with asyncio.timeout(REPLY_TIMEOUT_SECS):
                while (got := await frames.read_frame()) is not None:
                    replies.append(got.body)
            return replies
        finally:
            writer.close()

    slow = [asyncio.create_task(stalled(i)) for i in range(12)]
    idles = [asyncio.create_task(idle()) for _ in range(4)]
    trickles = [asyncio.create_task(trickle(i)) for i in range(8)]
    # Held connections do not stop the listener from serving others.
    await campaign.probe()
    assert await asyncio.gather(*slow) == [b""] * 12, "a stalled frame got a reply"
    assert await asyncio.gather(*idles) == [b""] * 4, "an idle connection got a reply"
    for replies in await asyncio.gather(*trickles):
        assert len(replies) <= 1
        for reply in replies:
            campaign.record(reply)
    for i in range(12):
        assert await campaign.store.search(SearchQuery(control_id=f"SLOW{i:02d}")) == [], "a cut frame was stored"
    await campaign.check()
