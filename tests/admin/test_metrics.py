"""Prometheus metrics after real MLLP traffic: the right names, labels and counts, one registry per hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from hub.errors import StoreError
from tests.admin.adminkit import admin_hub
from tests.hubkit import MllpClient, ack_fields, adt, mllp_port, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Any) -> Samples:
    text = await api.get("/metrics")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_metrics_after_traffic(tmp_path: Path) -> None:
    async with admin_hub(tmp_path / "a") as (hub, peer, apis), admin_hub(tmp_path / "b") as (_other, _p, other_apis):
        client = await MllpClient.connect(mllp_port(hub))
        try:
            await client.send(adt("M1"))
            await client.send(adt("M1"))  # duplicate: acknowledged, not routed twice
            await client.send(adt("M2", patient="P2"))
            await client.send(adt("BAD", msh9=""))  # refused: AR, stored
            await wait_until(lambda: peer.count == 2)
            peer.ack = "AR"
            await client.send(adt("M3", patient="P3"))

            async def dead() -> bool:
                return len(await hub.store.find_deliveries(status="dead")) == 1  # type: ignore[union-attr]

            await wait_until(dead)
            # The store fails once: the sender gets AE, and the failure is counted.
            store = hub.store
            assert store is not None
            real_submit = store.submit

            async def failing(*args: Any, **kw: Any) -> Any:
                store.submit = real_submit  # type: ignore[method-assign]
                raise StoreError("disk full")

            store.submit = failing  # type: ignore[method-assign]
            assert ack_fields(await client.send(adt("M4", patient="P4")))["MSA"][1] == "AE"
            await hub.metrics.refresh_queues(store, max_age_secs=0)
        finally:
            await client.close()
        samples = await scrape(apis["viewer"])
        others = await scrape(other_apis["viewer"])

    ep = {"endpoint": "mllp_in"}
    assert value(samples, "hub_messages_received_total", **ep) == 6
    assert value(samples, "hub_messages_accepted_total", **ep) == 3
    assert value(samples, "hub_messages_duplicates_total", **ep) == 1
    assert value(samples, "hub_messages_rejected_total", **ep) == 1
    assert value(samples, "hub_messages_refused_total", **ep) == 1
    assert value(samples, "hub_store_errors_total", operation="submit") == 1
    queue = {"route": "adt", "destination": "dpi"}
    assert value(samples, "hub_deliveries_total", outcome="accept", **queue) == 2
    assert value(samples, "hub_deliveries_total", outcome="reject", **queue) == 1
    assert value(samples, "hub_queue_dead", **queue) == 1
    assert value(samples, "hub_queue_depth", **queue) == 0
    assert value(samples, "hub_queue_in_flight", **queue) == 0
    assert value(samples, "hub_destination_paused", **queue) == 0
    assert value(samples, "hub_queue_oldest_age_seconds", **queue) == 0
    # Histograms: one ACK-latency observation per committed message (duplicates included), one end-to-end
    # observation per accepted delivery; cumulative buckets ending at +Inf.
    assert value(samples, "hub_ack_latency_seconds_count", **ep) == 4
    assert value(samples, "hub_ack_latency_seconds_bucket", le="+Inf", **ep) == 4
    assert value(samples, "hub_delivery_latency_seconds_count", destination="dpi") == 2
    ack_buckets = [(dict(lb), v) for (name, lb), v in samples.items() if name == "hub_ack_latency_seconds_bucket"]
    buckets = sorted((float(labels["le"]), v) for labels, v in ack_buckets)
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    # The other hub, in the same process, has its own registry: none of this traffic.
    assert value(others, "hub_messages_received_total", **ep) is None
    assert value(others, "hub_deliveries_total", outcome="accept", **queue) is None
    assert value(others, "hub_queue_depth", **queue) is None
