"""Replays that do not send twice: chosen destinations, a replay of a replay, failures in the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.admin.adminkit import admin_hub
from tests.hubkit import FAST_RETRY, MllpClient, adt, default_route, mllp_port, running_peer, wait_until


def _two_destinations() -> list[dict[str, Any]]:
    route = default_route()
    route["to"] = [route["to"][0], {"destination": "lab", "retry": FAST_RETRY}]
    return [route]


async def test_replay_goes_only_to_the_chosen_destination_and_failures_are_audited(tmp_path: Path) -> None:
    async with running_peer(ack="AR") as lab:
        lab_endpoint = {"lab": {"type": "mllp", "endpoint": f"127.0.0.1:{lab.port}", "ack_timeout_secs": 2}}
        async with admin_hub(tmp_path, routes=_two_destinations(), endpoints_extra=lab_endpoint) as (hub, dpi, apis):
            store = hub.store
            assert store is not None
            operator, admin = apis["operator"], apis["admin"]
            client = await MllpClient.connect(mllp_port(hub))
            try:
                await client.send(adt("TWO1"))
            finally:
                await client.close()

            async def settled() -> bool:
                return dpi.count == 1 and len(await store.find_deliveries(status="dead")) == 1

            await wait_until(settled, timeout=20)
            [item] = (await apis["viewer"].get("/api/messages", control_id="TWO1"))["items"]
            assert {d["destination"]: d["status"] for d in item["deliveries"]} == {"dpi": "delivered", "lab": "dead"}

            # The lab is fixed; the replay goes to the lab only: the DPI does not get the result twice.
            lab.ack = "AA"
            first = await operator.post(f"/api/messages/{item['id']}/replay", {"destinations": ["lab"]})
            assert first["deliveries"] == 1
            await wait_until(lambda: lab.count == 2, timeout=20)
            trace = await apis["viewer"].get(f"/api/messages/{first['new_id']}")
            assert [(d["destination"], d["status"]) for d in trace["deliveries"]] == [("lab", "delivered")]

            # A replay of that replay works, and names what it replays.
            second = await operator.post(f"/api/messages/{first['new_id']}/replay", {"destinations": ["dpi"]})
            await wait_until(lambda: dpi.count == 2, timeout=20)
            replayed = await store.get_message(second["new_id"])
            assert replayed is not None and replayed.message.metadata["replay_of"] == first["new_id"]
            assert replayed.message.correlation_id == item["id"] and lab.count == 2

            # A destination the message does not go to: refused, nothing stored, and the audit trail says so.
            before = len((await apis["viewer"].get("/api/messages", control_id="TWO1"))["items"])
            refused = await operator.post(f"/api/messages/{item['id']}/replay", {"destinations": ["nowhere"]}, 422)
            assert "nowhere" in str(refused["detail"])
            assert len((await apis["viewer"].get("/api/messages", control_id="TWO1"))["items"]) == before
            entries = (await admin.get("/api/audit", message_id=item["id"]))["items"]
            # Each replay is audited before acting ("requested") and again with its real outcome.
            assert [(e["action"], e["outcome"], e["actor"]) for e in entries[:4]] == [
                ("replay", "failed", "oscar"),
                ("replay", "requested", "oscar"),
                ("replay", "ok", "oscar"),
                ("replay", "requested", "oscar"),
            ]
            assert entries[0]["detail"]["destinations"] == ["nowhere"] and "not routed" in entries[0]["detail"]["error"]


async def test_requeue_dry_run_counts_without_acting(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, peer={"ack": "AR"}) as (hub, _peer, apis):
        store = hub.store
        assert store is not None
        client = await MllpClient.connect(mllp_port(hub))
        try:
            for i in range(3):
                await client.send(adt(f"DRY{i}", patient=f"K{i}"))
        finally:
            await client.close()

        async def dead() -> bool:
            return len(await store.find_deliveries(status="dead")) == 3

        await wait_until(dead, timeout=20)
        counted = await apis["operator"].post("/api/dead/requeue", {"all_dead": True, "dry_run": True})
        assert counted == {"requeued": 0, "matched": 3, "more": False}
        assert len(await store.find_deliveries(status="dead")) == 3
        actions = [e["action"] for e in (await apis["admin"].get("/api/audit"))["items"]]
        assert "requeue" not in actions
