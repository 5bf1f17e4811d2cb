"""The `hub` command as scripts use it, against a hub serving on real sockets."""

from __future__ import annotations

import json
from pathlib import Path

from hub.store import SearchQuery
from tests.hubkit import adt, hub_cli, mllp_port, running_hub, running_peer, wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent


async def test_send_messages_replay_and_dead_letters(tmp_path: Path) -> None:
    good = tmp_path / "good.hl7"
    # Files written by people have LF line ends and may hold several messages.
    good.write_bytes(adt("CLI1").replace(b"\r", b"\n") + adt("CLI2", patient="P2").replace(b"\r", b"\n"))
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(adt("CLIBAD", msh9=""))
    async with running_peer() as peer:
        config = write_config(tmp_path, peer_port=peer.port)
        async with running_hub(config) as hub:
            to = f"mllp://127.0.0.1:{mllp_port(hub)}"
            sent = await hub_cli("send", str(good), "--to", to)
            assert sent.returncode == 0, sent.stderr
            assert sent.stdout.count("MSA|AA|") == 2 and "MSA|AA|CLI1" in sent.stdout
            refused = await hub_cli("send", str(bad), "--to", to)
            assert refused.returncode == 2
            assert "MSA|AR|CLIBAD" in refused.stdout and "ERR||MSH^1^9|101^" in refused.stdout
            await wait_until(lambda: len(peer.bodies) == 2 and hub.undelivered == 0)  # both outcomes recorded

            listing = await hub_cli("messages", "--config", str(config), "--json", hub=hub)
            assert listing.returncode == 0, listing.stderr
            rows = [json.loads(line) for line in listing.stdout.splitlines()]
            assert [r["control_id"] for r in rows] == ["CLIBAD", "CLI2", "CLI1"]
            for r in rows:
                assert {"id", "status", "control_id", "received_at", "deliveries"} <= r.keys()
            by = {r["control_id"]: r for r in rows}
            assert by["CLIBAD"]["status"] == "rejected" and by["CLIBAD"]["deliveries"] == []
            assert by["CLIBAD"]["reason"] == "MSH-9 message type is empty"
            [d] = by["CLI1"]["deliveries"]
            assert {k: d[k] for k in ("destination", "status", "attempts", "last_error")} == {
                "destination": "dpi",
                "status": "delivered",
                "attempts": 1,
                "last_error": "",
            }

            only = await hub_cli("messages", "--config", str(config), "--json", "--status", "rejected", hub=hub)
            assert [json.loads(x)["control_id"] for x in only.stdout.splitlines()] == ["CLIBAD"]

            fixed = tmp_path / "fixed.hl7"
            fixed.write_bytes(adt("CLIBAD").replace(b"\r", b"\n"))
            again = await hub_cli(
                "replay", by["CLIBAD"]["id"], "--config", str(config), "--body", str(fixed), "--yes", hub=hub
            )
            assert again.returncode == 0, again.stderr
            new_id = json.loads(again.stdout)["new_id"]
            await wait_until(lambda: len(peer.bodies) == 3, timeout=10)
            shown = await hub_cli("show", new_id, "--config", str(config), "--json", hub=hub)
            item = json.loads(shown.stdout)
            assert item["parent_id"] == by["CLIBAD"]["id"] and item["metadata"]["control_id"] == "CLIBAD"

            peer.ack = "AR"
            (tmp_path / "r.hl7").write_bytes(adt("CLIAR", patient="P9"))
            await hub_cli("send", str(tmp_path / "r.hl7"), "--to", to)
            store = hub.store
            assert store is not None

            async def dead() -> bool:
                return bool(await store.find_deliveries(status="dead"))

            await wait_until(dead)
            dl = await hub_cli("dead", "--config", str(config), "--json", hub=hub)
            [row] = [json.loads(x) for x in dl.stdout.splitlines()]
            assert row["last_error"].startswith("AR") and row["destination"] == "dpi"
            peer.ack = "AA"
            asked = await hub_cli("requeue", "--config", str(config), "--all-dead", hub=hub)
            assert asked.returncode == 1 and "Requeue 1 dead deliveries" in asked.stderr and "--yes" in asked.stderr
            rq = await hub_cli("requeue", "--config", str(config), "--all-dead", "--yes", hub=hub)
            assert rq.returncode == 0, rq.stderr
            assert json.loads(rq.stdout) == {"requeued": 1, "more": False}
            await wait_until(lambda: len(peer.bodies) == 4, timeout=10)
            [rec] = await store.search(SearchQuery(control_id="CLIAR"))
            await wait_until(lambda: store.get_message(rec.message.id))


async def test_check_sandboxes_and_describe() -> None:
    sb = await hub_cli("sandboxes", "--config", str(ROOT / "config" / "hub.yaml"), "--json")
    rows = [json.loads(x) for x in sb.stdout.splitlines()]
    assert rows and rows[0]["sandbox"] == "dpi_sandbox" and rows[0]["listen"] == "127.0.0.1:2576"
    described = await hub_cli("describe", "mllp")
    docs = json.loads(described.stdout)
    kinds = {d["kind"] for d in docs}
    assert kinds == {"inbound", "outbound"}
    assert all("description" in p for d in docs for p in d["config"]["properties"].values())
    bad = await hub_cli("check", "--config", "/nonexistent/hub.yaml")
    assert bad.returncode == 1 and "cannot read file" in bad.stderr
