"""PostgreSQL claims start where the node's previous claim of the queue stopped (hub/store/claim_points.py).

Real PostgreSQL, a schema per test, two stores on it standing for two nodes. What this node puts back in the
queue moves its point back at once (tests/store/test_store_contract.py); what another node puts back behind
it is claimed once the point's rescan period has passed.
"""

from __future__ import annotations

import asyncio

import pytest

from hub.store import NewDelivery
from hub.store.postgres import PostgresStore
from tests.conftest import drop_pg_schema, new_pg_schema
from tests.test_leases import message

pytestmark = pytest.mark.postgres


async def test_deliveries_another_node_gives_back_behind_the_point_are_claimed() -> None:
    dsn, schema = await new_pg_schema()
    node_a = PostgresStore(dsn, schema=schema, pool_size=2)
    node_b = PostgresStore(dsn, schema=schema, pool_size=2)
    await node_a.open()
    await node_b.open()
    try:
        for n in range(3):
            await node_a.submit(message(f"T{n}", f"P{n}"), [NewDelivery("r", "dpi", f"P{n}")], endpoint="in",
                                dedup_key=None)  # fmt: skip
        first = await node_a.claim("r", "dpi", limit=2, owner="a", lease_secs=60)
        [last] = await node_a.claim("r", "dpi", limit=1, owner="a", lease_secs=60)
        assert await node_b.recover_leases(owner="a") == 3  # node a restarted: node b gives its claims back
        got: list[int] = []
        for _ in range(100):  # node a's next claim from the beginning comes within its rescan period (1 s)
            got += [c.delivery.id for c in await node_a.claim("r", "dpi", limit=10, owner="a", lease_secs=60)]
            if len(got) == 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(got) == sorted([*(c.delivery.id for c in first), last.delivery.id])
    finally:
        await node_a.close()
        await node_b.close()
        await drop_pg_schema(dsn, schema)
