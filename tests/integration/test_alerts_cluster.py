"""Alerts with two hub nodes on one PostgreSQL: a condition of the shared queues fires once for the cluster, not
once per node; when the node that evaluates the rules is SIGKILLed, the other takes the evaluation over, does not
announce the condition again, and tells its recovery.

Node a (`hub serve`, a subprocess) starts first and holds the alert lease; node b runs in this process. The DPI
is down (nothing listens on its port), so the message sent stays undelivered and the `queue_age` rule (over 0
minutes: any delivery waiting) holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from adapters.sandboxes.mllp_peer import MllpPeer, MllpPeerConfig
from tests.conftest import drop_pg_schema, free_port, new_pg_schema
from tests.hubkit import MllpClient, ack_fields, adt, running_hub, wait_until, write_config
from tests.integration.test_crash_safety import HubProcess
from tests.test_alerts import webhook  # noqa: F401  # the webhook receiver fixture

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _alerts(hook_url: str) -> dict[str, Any]:
    return {
        "check_secs": 0.2,
        "renotify_secs": 0,
        "channels": {"hook": {"type": "webhook", "url": hook_url, "headers": {"Authorization": "Bearer hook-secret"}}},
        "rules": [{"name": "dpi-queue", "when": "queue_age", "destination": "dpi", "over": 0}],
    }


async def test_a_shared_condition_fires_once_for_the_cluster_and_survives_its_evaluator(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]  # noqa: F811
) -> None:
    hook_url, hooks = webhook
    dsn, schema = await new_pg_schema()
    store = {"kind": "postgres", "dsn": dsn, "schema": schema, "pool_size": 4, "lease_secs": 2}
    dpi_port, port_a = free_port(), free_port()
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    folder_a.mkdir()
    folder_b.mkdir()
    common: dict[str, Any] = {"store": store, "http": {"enabled": False}, "alerts": _alerts(hook_url)}
    config_a = write_config(
        folder_a, peer_port=dpi_port, node="node-a", listener={"listen": f"127.0.0.1:{port_a}"}, **common
    )
    config_b = write_config(folder_b, peer_port=dpi_port, node="node-b", **common)

    async def lease_owner() -> str | None:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            return await conn.fetchval("SELECT owner FROM hub_leases WHERE name = 'alerts'")  # type: ignore[no-any-return]
        finally:
            await conn.close()

    def statuses() -> list[tuple[str, str]]:
        return [(h["status"], h["node"]) for h in hooks]

    node_a = HubProcess(config_a, port_a)
    try:
        await node_a.start()
        await wait_until(lambda: _is(lease_owner(), "node-a"), timeout=20)
        client = await MllpClient.connect(port_a)
        try:
            assert ack_fields(await client.send(adt("CL1")))["MSA"][1] == "AA"
        finally:
            await client.close()
        await wait_until(lambda: statuses() == [("firing", "node-a")], timeout=20)

        async with running_hub(config_b) as node_b:
            engine = node_b.alerts
            # node b checks again and again while the condition holds: it sees the same queue, says nothing
            await wait_until(lambda: engine.checks >= 10, timeout=30)
            assert not engine.holds_lease and statuses() == [("firing", "node-a")]

            await node_a.kill()
            await wait_until(lambda: engine.holds_lease, timeout=30)  # the lease ran out: node b took it
            taken_at = engine.checks
            await wait_until(lambda: engine.checks >= taken_at + 5, timeout=30)
            assert statuses() == [("firing", "node-a")]  # resumed from the saved state, not announced again
            assert await lease_owner() == "node-b"

            # The DPI comes back: node b delivers the message (node a's claim expired), and tells the recovery.
            dpi = MllpPeer("dpi", MllpPeerConfig(listen=f"127.0.0.1:{dpi_port}"))
            await dpi.start()
            try:
                await wait_until(lambda: dpi.count == 1, timeout=30)
                await wait_until(lambda: len(hooks) == 2, timeout=20)
            finally:
                await dpi.stop()
        assert statuses() == [("firing", "node-a"), ("resolved", "node-b")]
        assert hooks[1]["since"] == hooks[0]["since"] and hooks[1]["rule"] == "dpi-queue"
    finally:
        await node_a.kill()
        await drop_pg_schema(dsn, schema)


async def _is(value: Any, expected: object) -> bool:
    return await value == expected
