"""The MLLP listener on real loopback sockets: ACK rules, framing edge cases, refusals stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.mllp.framing import CR, FS, VT, frame
from hub.errors import StoreError
from hub.store import SearchQuery
from tests.hubkit import MllpClient, ack_fields, adt, mllp_port, running_hub, running_peer, wait_until, write_config


async def test_aa_only_after_commit_and_ack_msh_mirrors_the_inbound_one(tmp_path: Path) -> None:
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        ack = await client.send(adt("CTRL1"))
        f = ack_fields(ack)
        assert f["MSA"][1:3] == ["AA", "CTRL1"]
        msh = f["MSH"]
        assert msh[2] == "^~\\&"
        assert (msh[3], msh[4], msh[5], msh[6]) == ("DPI", "HOSP", "GAM", "HOSP")  # swapped
        assert msh[9] == "ACK^A01^ACK"
        assert msh[10] and msh[10] != "CTRL1"
        assert (msh[11], msh[12]) == ("P", "2.5^FRA^2.11")
        assert "ERR" not in f
        # Committed before the ACK: readable at once.
        [rec] = await hub.store.search(SearchQuery(control_id="CTRL1"))  # type: ignore[union-attr]
        assert rec.message.body == adt("CTRL1")
        assert rec.message.metadata["patient_key"] == "P1@HOSP"
        assert rec.message.metadata["message_type"] == "ADT^A01"
        await client.close()


async def test_ack_uses_the_senders_own_encoding_characters(tmp_path: Path) -> None:
    body = b"MSH#$%@!#APP#FAC#HUB#FAC#20250101##ADT$A28$ADT_A05#C9#P#2.5\rPID#1##X1$$$HOSP$$PI\r"
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        ack = await client.send(body)
        assert ack.startswith(b"MSH#$%@!#HUB#FAC#APP#FAC#")
        assert b"\rMSA#AA#C9" in ack
        assert b"#ACK$A28$ACK#" in ack
        await client.close()


async def test_unreadable_message_gets_ar_and_is_stored_rejected(tmp_path: Path) -> None:
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        ack = ack_fields(await client.send(b"THIS IS NOT HL7"))
        assert ack["MSA"][1] == "AR"
        assert ack["ERR"][3].startswith("100^")
        assert "MSH" in ack["ERR"][8]
        # MSH readable but MSH-9 empty: the ACK still echoes MSH-10 and locates the error.
        ack2 = ack_fields(await client.send(adt("NOTYPE", msh9="")))
        assert ack2["MSA"][1:3] == ["AR", "NOTYPE"]
        assert ack2["ERR"][2] == "MSH^1^9"
        assert ack2["ERR"][3] == "101^Required field missing^HL70357"
        assert ack2["ERR"][4] == "E"
        # A valid message on the same connection still goes through.
        assert ack_fields(await client.send(adt("GOOD")))["MSA"][1] == "AA"
        rejected = await hub.store.search(SearchQuery(status="rejected"))  # type: ignore[union-attr]
        assert len(rejected) == 2
        by_control = {r.message.metadata.get("control_id", ""): r for r in rejected}
        assert by_control["NOTYPE"].reason == "MSH-9 message type is empty"
        assert by_control["NOTYPE"].message.body == adt("NOTYPE", msh9="")
        assert by_control[""].message.body == b"THIS IS NOT HL7"
        assert "MSH" in by_control[""].reason
        assert await hub.store.deliveries([r.message.id for r in rejected]) == {  # type: ignore[union-attr]
            r.message.id: [] for r in rejected
        }
        await client.close()


async def test_duplicate_control_id_from_same_sender_is_acked_but_routed_once(tmp_path: Path) -> None:
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        for _ in range(3):
            assert ack_fields(await client.send(adt("SAME")))["MSA"][1:3] == ["AA", "SAME"]
        # Same MSH-10 from another application is another message.
        other = adt("SAME").replace(b"|GAM|", b"|LAB|")
        assert ack_fields(await client.send(other))["MSA"][1] == "AA"
        assert len(await hub.store.search(SearchQuery(control_id="SAME"))) == 2  # type: ignore[union-attr]
        await wait_until(lambda: len(peer.bodies) >= 2 and hub.undelivered == 0)  # every delivery finished
        assert sorted(b.split(b"|")[2] for b in peer.bodies) == [b"GAM", b"LAB"]
        assert hub.counters["duplicates"] == 2
        await client.close()


async def test_framing_garbage_split_batched_no_trailing_cr_and_truncated(tmp_path: Path) -> None:
    async with running_peer() as peer, running_hub(write_config(tmp_path, peer_port=peer.port)) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        # garbage before a frame, and two frames in one write
        await client.send_raw(b"junk\r\n\x00\xff" + frame(adt("F1")) + b"more junk" + frame(adt("F2")))
        # a frame without its trailing CR
        await client.send_raw(VT + adt("F3") + FS)
        # a frame cut short by the start of the next one: the first is dropped, the second served
        await client.send_raw(VT + adt("CUT")[:40] + frame(adt("F4")))
        # one frame trickled in small pieces
        data = frame(adt("F5"))
        for i in range(0, len(data), 7):
            await client.send_raw(data[i : i + 7])
            await asyncio.sleep(0.001)  # time is the subject: separate writes, so separate reads
        acks = [ack_fields(await client.ack()) for _ in range(5)]  # type: ignore[arg-type]
        assert [a["MSA"][1:3] for a in acks] == [["AA", f"F{i}"] for i in range(1, 6)]
        stored = await hub.store.search(SearchQuery(limit=50))  # type: ignore[union-attr]
        assert sorted(r.message.metadata["control_id"] for r in stored) == ["F1", "F2", "F3", "F4", "F5"]
        await client.close()


async def test_oversized_frame_is_refused_stored_cut_and_the_connection_goes_on(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1, listener={"max_frame_bytes": 4096})
    async with running_hub(config) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        big = adt("BIG") + b"NTE|1||" + b"x" * 100_000 + CR
        ack = ack_fields(await client.send(big))
        assert ack["MSA"][1:3] == ["AR", "BIG"]
        assert "exceeds max_frame_bytes" in ack["ERR"][8]
        assert ack_fields(await client.send(adt("SMALL")))["MSA"][1] == "AA"
        [rec] = await hub.store.search(SearchQuery(control_id="BIG"))  # type: ignore[union-attr]
        assert rec.status == "rejected" and "exceeds max_frame_bytes" in rec.reason
        assert rec.message.metadata["truncated_from_bytes"] == str(len(big))
        assert len(rec.message.body) < len(big)
        await client.close()


class _DownStore:
    """Wraps a store and fails every write, as a store that went away would."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def submit(self, *a: object, **k: object) -> None:
        raise StoreError("sqlite: OperationalError")

    async def store_rejected(self, *a: object, **k: object) -> None:
        raise StoreError("sqlite: OperationalError")


async def test_ae_when_the_store_is_down_or_the_hub_is_full(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1, high_water_mark=5)
    async with running_hub(config) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        real = hub.store
        hub.store = _DownStore(real)  # type: ignore[assignment]
        ack = ack_fields(await client.send(adt("DOWN")))
        assert ack["MSA"][1:3] == ["AE", "DOWN"]
        assert "store unavailable" in ack["ERR"][8]
        # Not even a refusal can be stored: AE too, so the sender keeps the message.
        assert ack_fields(await client.send(b"garbage"))["MSA"][1] == "AE"
        hub.store = real
        hub.undelivered = 5
        ack = ack_fields(await client.send(adt("FULL")))
        assert ack["MSA"][1:3] == ["AE", "FULL"]
        assert "high-water" in ack["ERR"][8]
        assert await real.search(SearchQuery(control_id="FULL")) == []  # type: ignore[union-attr]
        await client.close()


async def test_timeouts_and_connection_limit_never_cost_the_listener(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1, listener={"read_timeout_secs": 0.2, "max_connections": 2})
    async with running_hub(config) as hub:
        port = mllp_port(hub)
        slow = await MllpClient.connect(port)
        await slow.send_raw(VT + b"MSH|^~\\&|")  # and then silence inside the frame
        assert await slow.ack(timeout=5) is None  # closed by the listener
        a, b = await MllpClient.connect(port), await MllpClient.connect(port)
        for i, client in enumerate((a, b)):  # proven by a frame answered AA: they keep their slots
            assert ack_fields(await client.send(adt(f"PROOF{i}")))["MSA"][1] == "AA"
        extra = await MllpClient.connect(port)
        assert await extra.ack(timeout=5) is None  # over max_connections: closed at once
        assert ack_fields(await a.send(adt("STILL")))["MSA"][1] == "AA"
        for c in (a, b, extra, slow):
            await c.close()


async def test_nul_bytes_are_refused_and_a_dribbling_sender_is_cut_off(tmp_path: Path) -> None:
    config = write_config(tmp_path, peer_port=1, listener={"read_timeout_secs": 5, "frame_timeout_secs": 0.3})
    async with running_hub(config) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        ack = ack_fields(await client.send(adt("N\x00L")))
        assert ack["MSA"][1] == "AR" and ack["ERR"][3].startswith("102^")
        [rec] = await hub.store.search(SearchQuery(status="rejected"))  # type: ignore[union-attr]
        assert rec.reason == "message contains NUL characters"
        # One byte every 50 ms never trips the read timeout, but the frame timeout ends it.
        data = frame(adt("DRIBBLE"))
        closed = False
        for i in range(len(data)):
            try:
                await client.send_raw(data[i : i + 1])
            except ConnectionError:
                closed = True
                break
            await asyncio.sleep(0.05)  # time is the subject: a slow peer, under the read timeout
            if client.writer.is_closing() or client.frames._reader.at_eof():
                closed = True
                break
        assert closed
        assert await hub.store.search(SearchQuery(control_id="DRIBBLE")) == []  # type: ignore[union-attr]
        await client.close()


async def test_large_messages_are_read_without_splitting_them_whole(tmp_path: Path) -> None:
    """Over 64 KB only MSH..PID is split; the rest is checked as bytes: same answers as for small ones."""
    config = write_config(tmp_path, peer_port=1, listener={"max_frame_bytes": 4 * 2**20})
    big_obx = b"OBX|1|ED|11490-0^Lettre^LN||^AP^PDF^Base64^" + b"QUJD" * 50_000 + b"||||||F\r"
    async with running_hub(config) as hub:
        client = await MllpClient.connect(mllp_port(hub))
        ack = ack_fields(await client.send(adt("LARGE", patient="P9") + big_obx))
        assert ack["MSA"][1:3] == ["AA", "LARGE"]
        [rec] = await hub.store.search(SearchQuery(control_id="LARGE"))  # type: ignore[union-attr]
        assert rec.message.metadata["patient_key"] == "P9@HOSP"
        assert rec.message.body == adt("LARGE", patient="P9") + big_obx
        bad_tail = adt("BADTAIL") + big_obx + b"zz|not a segment\r"
        ack = ack_fields(await client.send(bad_tail))
        assert ack["MSA"][1:3] == ["AR", "BADTAIL"] and ack["ERR"][3].startswith("100^")
        assert "segment 6 does not start" in ack["ERR"][8]
        nul_tail = adt("NULTAIL") + big_obx.replace(b"QUJD", b"QU\x00D", 1)
        ack = ack_fields(await client.send(nul_tail))
        assert ack["MSA"][1:3] == ["AR", "NULTAIL"] and ack["ERR"][3].startswith("102^")
        await client.close()
