"""Routes changed without a restart: reload under load loses no acknowledged message, bad reloads change
nothing and say why, every reload is audited with the diff, the admin API and `hub reload` trigger it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from hub.runtime import Hub
from hub.store import SearchQuery
from tests.admin.adminkit import TOKENS, admin_hub
from tests.hubkit import FAST_RETRY, MllpClient, adt, hub_cli, mllp_port, running_hub, running_peer, wait_until
from tests.hubkit import write_config as write_hub_config


def route(name: str, destination: str, **when: Any) -> dict[str, Any]:
    return {
        "route": name,
        "from": "mllp_in",
        "when": {"message_type": ["ADT^A01"], **when},
        "to": [{"destination": destination, "retry": FAST_RETRY}],
    }


def write_route(folder: Path, index: int, spec: dict[str, Any]) -> None:
    (folder / "routes" / f"r{index}.yaml").write_text(yaml.safe_dump(spec))


async def audit_entries(hub: Hub) -> list[Any]:
    assert hub.store is not None
    return sorted((e for e in await hub.store.list_audit(limit=50) if e.action == "config_reload"), key=lambda e: e.id)


async def test_reload_under_load_loses_no_ack_and_new_routes_apply_after_it(tmp_path: Path) -> None:
    async with running_peer() as dpi, running_peer() as kitchen:
        config = write_hub_config(
            tmp_path,
            peer_port=dpi.port,
            routes=[route("adt_to_dpi", "dpi")],
            endpoints_extra={"kitchen": {"type": "mllp", "endpoint": f"127.0.0.1:{kitchen.port}"}},
        )
        async with running_hub(config) as hub:
            acked: list[str] = []
            reloaded_at: list[int] = []

            async def sender(conn: int) -> None:
                client = await MllpClient.connect(mllp_port(hub))
                try:
                    for n in range(60):
                        control_id = f"L{conn}-{n:03d}"
                        ack = await client.send(adt(control_id))
                        assert b"|AA|" in ack
                        acked.append(control_id)
                finally:
                    await client.close()

            async def reloader() -> None:
                await wait_until(lambda: len(acked) >= 40)
                write_route(tmp_path, 1, route("adt_to_kitchen", "kitchen", hl7={"PV1-2": "I"}))
                result = await hub.reload(by="test")
                assert result.applied, result
                assert result.added == ["adt_to_kitchen/kitchen"]
                reloaded_at.append(len(acked))

            await asyncio.gather(sender(1), sender(2), reloader())
            await wait_until(lambda: len(dpi.bodies) == 120)
            # Every acknowledged message reached the old route's destination, once.
            assert sorted(b.split(b"|")[9].decode() for b in dpi.bodies) == sorted(acked)
            # Messages received after the reload also took the new route; none before it did.
            await wait_until(lambda: len(kitchen.bodies) >= 120 - reloaded_at[0] - 2)
            first_after = {b.split(b"|")[9].decode() for b in kitchen.bodies}
            assert first_after <= set(acked[reloaded_at[0] - 2 :])
            assert acked[-1] in first_after


async def test_a_bad_reload_changes_nothing_and_says_why(tmp_path: Path) -> None:
    async with running_peer() as dpi:
        config = write_hub_config(tmp_path, peer_port=dpi.port, routes=[route("adt_to_dpi", "dpi")])
        async with running_hub(config) as hub:
            before = hub.settings
            write_route(tmp_path, 0, {**route("adt_to_dpi", "dpi"), "when": {"sending_ap": "GAM"}})
            result = await hub.reload(by="test")
            assert not result.applied and result.reason == "the new configuration does not pass hub check"
            line = (tmp_path / "routes" / "r0.yaml").read_text().splitlines().index("  sending_ap: GAM") + 1
            assert result.problems == [
                f"{tmp_path}/routes/r0.yaml:{line}: when.sending_ap: unknown metadata key 'sending_ap'; "
                "did you mean 'sending_app'?"
            ]
            assert hub.settings is before
            # A store change needs a restart: refused, with the reason.
            write_route(tmp_path, 0, route("adt_to_dpi", "dpi"))
            text = (tmp_path / "hub.yaml").read_text().replace("hub.db", "other.db")
            (tmp_path / "hub.yaml").write_text(text)
            result = await hub.reload(by="test")
            assert (result.applied, result.reason) == (False, "store changed: restart the hub to apply")
            assert hub.settings is before
            # The old routes still run.
            client = await MllpClient.connect(mllp_port(hub))
            try:
                assert b"|AA|" in await client.send(adt("B1"))
            finally:
                await client.close()
            await wait_until(lambda: len(dpi.bodies) == 1)
            entries = await audit_entries(hub)
            assert [e.outcome for e in entries] == ["refused", "refused"]
            assert "+  sending_ap: GAM" in json.loads(entries[0].detail)["diff"]


async def test_reload_applies_new_steps_and_policies_and_audits_the_diff(tmp_path: Path) -> None:
    async with running_peer() as dpi:
        config = write_hub_config(tmp_path, peer_port=dpi.port, routes=[route("adt_to_dpi", "dpi")])
        async with running_hub(config) as hub:
            worker = hub.workers[("adt_to_dpi", "dpi")]
            steps = [{"hl7v2_map": {"rules": [{"set": "MSH-5", "value": "V2"}]}}]
            mapped = {**route("adt_to_dpi", "dpi"), "steps": steps}
            write_route(tmp_path, 0, mapped)
            result = await hub.reload(by="test")
            assert (result.applied, result.added, result.removed, result.changed) == (True, [], [], [])
            assert hub.workers[("adt_to_dpi", "dpi")] is worker  # same queue, same worker, new steps
            client = await MllpClient.connect(mllp_port(hub))
            try:
                await client.send(adt("S1"))
                await wait_until(lambda: len(dpi.bodies) == 1)
                assert dpi.bodies[0].split(b"|")[4] == b"V2"
                # A changed delivery policy gets a new worker for the same queue.
                write_route(tmp_path, 0, {**mapped, "to": [{"destination": "dpi", "max_in_flight": 1}]})
                result = await hub.reload(by="test")
                assert result.changed == ["adt_to_dpi/dpi"] and hub.workers[("adt_to_dpi", "dpi")] is not worker
                await client.send(adt("S2"))
                await wait_until(lambda: len(dpi.bodies) == 2)
            finally:
                await client.close()
            entries = await audit_entries(hub)
            assert [e.outcome for e in entries] == ["ok", "ok"]
            diff = json.loads(entries[-1].detail)["diff"]
            assert "+  max_in_flight: 1" in diff and "r0.yaml" in diff


async def test_admin_api_and_hub_reload_command(tmp_path: Path) -> None:
    async with admin_hub(tmp_path, routes=[route("adt_to_dpi", "dpi")]) as (hub, _peer, apis):
        write_route(tmp_path, 1, route("adt_copy", "dpi"))
        await apis["operator"].post("/api/config/reload", expect=403)
        got = await apis["admin"].post("/api/config/reload")
        assert got["applied"] is True and got["added"] == ["adt_copy/dpi"]
        assert sorted(r.route for r in hub.settings.routes) == ["adt_copy", "adt_to_dpi"]
        (tmp_path / "routes" / "r1.yaml").unlink()
        url = f"http://127.0.0.1:{hub.http_port}"  # the test hub listens on a free port, not on http.listen
        done = await hub_cli("reload", "--config", str(tmp_path / "hub.yaml"), "--url", url, "--token", TOKENS["admin"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["removed"] == ["adt_copy/dpi"]
        assert [r.route for r in hub.settings.routes] == ["adt_to_dpi"]
        entries = await audit_entries(hub)
        assert [(e.actor, e.outcome) for e in entries] == [("ada", "ok"), ("ada", "ok")]


async def test_a_lookup_miss_is_dead_lettered_then_replayed_once_the_table_is_fixed(tmp_path: Path) -> None:
    """The issue's bad-input rule: REJECT naming the route and the path, stored; replayable after the fix."""
    async with running_peer() as dpi:
        (tmp_path / "routes" / "tables").mkdir(parents=True)
        table = tmp_path / "routes" / "tables" / "lab.csv"
        table.write_text("local,loinc\nGLU,2345-7\n")
        translate = {"translate": "OBX[*]-3.1", "table": "lab"}
        lab = {
            "route": "lab_to_dpi",
            "from": "mllp_in",
            "when": {"message_type": "ORU^R01"},
            "steps": [{"hl7v2_map": {"tables": {"lab": "tables/lab.csv"}, "rules": [translate]}}],
            "to": [{"destination": "dpi", "retry": FAST_RETRY}],
        }  # fmt: skip
        config = write_hub_config(tmp_path, peer_port=dpi.port, routes=[lab])
        oru = (
            b"MSH|^~\\&|SIL|LABO|DPI|CHU|20250301101500||ORU^R01^ORU_R01|ORU-K1|P|2.5\r"
            b"PID|1||000003^^^CHU&1.2.3&ISO^PI||NOM^PRENOM||19790328|F\r"
            b"OBX|1|NM|K^Potassium^L||4.1|mmol/L\r"
        )
        async with running_hub(config) as hub:
            client = await MllpClient.connect(mllp_port(hub))
            try:
                assert b"|AA|" in await client.send(oru)  # stored and acknowledged; the mapping runs at delivery
            finally:
                await client.close()
            assert hub.store is not None
            [rec] = await hub.store.search(SearchQuery(control_id="ORU-K1"))

            async def dead() -> Any:
                found = (await hub.store.deliveries([rec.message.id])).get(rec.message.id, [])  # type: ignore[union-attr]
                return found[0] if found and found[0].status == "dead" else None

            await wait_until(dead)
            delivery = await dead()
            assert delivery.attempts == 1  # refused, not retried
            reason = "route lab_to_dpi, step hl7v2_map: hl7v2_map: OBX[*]-3.1: code not in table 'lab'"
            assert reason in delivery.last_error
            # The hospital completes its table; the reload checks and applies it; the replay now goes through.
            table.write_text("local,loinc\nGLU,2345-7\nK,2823-3\n")
            assert (await hub.reload(by="test")).applied
            await hub.replay(rec.message.id)
            await wait_until(lambda: len(dpi.bodies) == 1)
            assert b"OBX|1|NM|2823-3^Potassium^L" in dpi.bodies[0]
            [entry] = await audit_entries(hub)
            assert "+K,2823-3" in json.loads(entry.detail)["diff"]  # the table change is in the audit trail


async def test_reload_applies_endpoint_and_listener_changes_without_dropping_the_others(tmp_path: Path) -> None:
    """An endpoint moved to another receiver takes the next deliveries; a listener added by reload accepts
    messages while the first listener's open connection goes on; a removed listener stops accepting."""
    async with running_peer() as dpi, running_peer() as new_dpi:
        config = write_hub_config(tmp_path, peer_port=dpi.port, routes=[route("adt_to_dpi", "dpi")])
        async with running_hub(config) as hub:
            first = await MllpClient.connect(mllp_port(hub))
            try:
                assert b"|AA|" in await first.send(adt("E1"))
                await wait_until(lambda: len(dpi.bodies) == 1)
                data = yaml.safe_load((tmp_path / "hub.yaml").read_text())
                data["endpoints"]["dpi"]["endpoint"] = f"127.0.0.1:{new_dpi.port}"
                data["listeners"]["mllp_second"] = {"type": "mllp", "listen": "127.0.0.1:0"}
                (tmp_path / "hub.yaml").write_text(yaml.safe_dump(data))
                (tmp_path / "routes" / "r0.yaml").write_text(
                    yaml.safe_dump({**route("adt_to_dpi", "dpi"), "from": ["mllp_in", "mllp_second"]})
                )
                result = await hub.reload(by="test")
                assert result.applied, result
                assert (result.endpoints, result.listeners, result.changed) == (
                    ["~dpi"], ["+mllp_second"], ["adt_to_dpi/dpi"]
                )
                # The connection opened before the reload still works, and its messages go to the new receiver.
                assert b"|AA|" in await first.send(adt("E2"))
                second = await MllpClient.connect(hub.listeners["mllp_second"].port)
                try:
                    assert b"|AA|" in await second.send(adt("E3"))
                finally:
                    await second.close()
                await wait_until(lambda: len(new_dpi.bodies) == 2)
                assert [b.split(b"|")[9] for b in new_dpi.bodies] == [b"E2", b"E3"] and len(dpi.bodies) == 1
            finally:
                await first.close()
            # Removing the second listener stops it; the first keeps its port.
            port_second = hub.listeners["mllp_second"].port
            del data["listeners"]["mllp_second"]
            (tmp_path / "hub.yaml").write_text(yaml.safe_dump(data))
            write_route(tmp_path, 0, route("adt_to_dpi", "dpi"))
            result = await hub.reload(by="test")
            assert result.applied and result.listeners == ["-mllp_second"], result
            assert "mllp_second" not in hub.listeners
            try:
                await MllpClient.connect(port_second)
                raise AssertionError("the removed listener still accepts connections")
            except OSError:
                pass
            again = await MllpClient.connect(mllp_port(hub))
            try:
                assert b"|AA|" in await again.send(adt("E4"))
            finally:
                await again.close()
            await wait_until(lambda: len(new_dpi.bodies) == 3)
            entries = await audit_entries(hub)
            assert [e.outcome for e in entries] == ["ok", "ok"]
            assert [json.loads(e.detail)["listeners"] for e in entries] == [["+mllp_second"], ["-mllp_second"]]
            assert json.loads(entries[0].detail)["endpoints"] == ["~dpi"]
