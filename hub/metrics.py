"""Prometheus metrics of one hub, served at ``/metrics``.

Each :class:`~hub.runtime.Hub` owns a :class:`HubMetrics` with its own
``CollectorRegistry`` (two hubs in one test process never collide). The hot
paths only touch plain Python objects: an ``int`` increment per inbound
message in :class:`EndpointCounts` and one :class:`FastHistogram` observation
(a ``bisect`` and two additions, no lock: the event loop is the only writer).
A custom collector turns them into Prometheus families when ``/metrics`` is
scraped, together with the hub's per-queue outcome counters and the queue
statistics read from the store (refreshed at most once a second).

======================================  =========================================================
``hub_messages_received_total``         inbound messages handed to the hub, per endpoint
``hub_messages_accepted_total``         of those, committed and routed (new messages)
``hub_messages_duplicates_total``       acknowledged again, not routed twice (same control id)
``hub_messages_rejected_total``         refused as unusable and stored with the reason (AR/4xx/554)
``hub_messages_refused_total``          refused for now: store down or above the high-water mark
``hub_ack_latency_seconds``             reception to durable commit (when the ACK may go), per endpoint
``hub_deliveries_total``                delivery attempts by outcome (accept/retry/reject), per queue
``hub_delivery_latency_seconds``        reception to accepted delivery (end to end), per destination
``hub_queue_depth``                     deliveries waiting (pending, retries included), per queue
``hub_queue_retrying``                  pending after a failed attempt, per queue
``hub_queue_in_flight``                 being sent now by this node's worker, per queue
``hub_queue_held``                      held for the patient's identity (qualified INS, review)
``hub_queue_dead``                      dead letters, per queue
``hub_queue_oldest_age_seconds``        age of the oldest waiting delivery, per queue
``hub_destination_paused``              1 when this node's worker for the queue is paused
``hub_destination_down_seconds``        how long the queue's destination has been unreachable (0 when up)
``hub_store_errors_total``              store operations that failed, per operation
``hub_undelivered``                     deliveries not yet delivered (the high-water-mark figure)
======================================  =========================================================
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.message import utcnow
from hub.store import OperationsStore, QueueStats

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["CONTENT_TYPE", "EndpointCounts", "FastHistogram", "HubMetrics"]

#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)


class EndpointCounts:
    """What one inbound endpoint handed to the hub, as plain counters (read at scrape time)."""

    __slots__ = ("accepted", "duplicates", "received", "refused", "rejected")

    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.refused = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("received", "accepted", "duplicates", "rejected", "refused")}


class FastHistogram:
    """A lock-free histogram for one label set: `observe` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, observations at or below it)."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class HubMetrics:
    """The metrics of one hub, in their own registry."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.registry = CollectorRegistry(auto_describe=False)
        self.endpoints: dict[str, EndpointCounts] = {}
        self.ack_latency: dict[str, FastHistogram] = {}
        self.delivery_latency: dict[str, FastHistogram] = {}
        self.store_errors: dict[str, int] = {}
        self.queues: list[QueueStats] = []
        self._queues_read_at = 0.0
        self.registry.register(_HubCollector(self))

    # -- hot-path hooks (plain attribute and dict work only) ----------------------------------------
    def endpoint(self, name: str) -> EndpointCounts:
        counts = self.endpoints.get(name)
        if counts is None:
            counts = self.endpoints[name] = EndpointCounts()
        return counts

    def observe_ack(self, endpoint: str, seconds: float) -> None:
        hist = self.ack_latency.get(endpoint)
        if hist is None:
            hist = self.ack_latency[endpoint] = FastHistogram(ACK_BUCKETS)
        hist.observe(seconds)

    def observe_delivery(self, destination: str, seconds: float) -> None:
        hist = self.delivery_latency.get(destination)
        if hist is None:
            hist = self.delivery_latency[destination] = FastHistogram(DELIVERY_BUCKETS)
        hist.observe(seconds)

    def store_error(self, operation: str) -> None:
        self.store_errors[operation] = self.store_errors.get(operation, 0) + 1

    # -- scrape ---------------------------------------------------------------------------------------
    async def refresh_queues(self, store: OperationsStore, *, max_age_secs: float = 1.0) -> list[QueueStats]:
        """Queue statistics from the store, read at most once per `max_age_secs` (scrapes and console polls)."""
        now = time.monotonic()
        if now - self._queues_read_at >= max_age_secs:
            self.queues = await store.queue_stats()
            self._queues_read_at = now
        return self.queues

    async def exposition(self) -> bytes:
        """The text exposition of every metric, queue statistics refreshed first."""
        if self.hub.store is not None:
            try:
                await self.refresh_queues(self.hub.store)
            except Exception:  # a scrape must still answer when the store is down
                self.store_error("queue_stats")
        return generate_latest(self.registry)


class _HubCollector(Collector):
    def __init__(self, metrics: HubMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, hub = self.m, self.m.hub
        for field, doc in (
            ("received", "Inbound messages handed to the hub."),
            ("accepted", "Inbound messages committed and routed."),
            ("duplicates", "Inbound messages acknowledged again without being routed twice."),
            ("rejected", "Inbound messages refused as unusable (stored with the reason)."),
            ("refused", "Inbound messages refused for now (store down, or above the high-water mark)."),
        ):
            fam = CounterMetricFamily(f"hub_messages_{field}", doc, labels=["endpoint"])
            for name, counts in sorted(m.endpoints.items()):
                fam.add_metric([name], getattr(counts, field))
            yield fam

        ack = HistogramMetricFamily(
            "hub_ack_latency_seconds", "From reception to the durable commit that allows the ACK.", labels=["endpoint"]
        )
        for name, hist in sorted(m.ack_latency.items()):
            ack.add_metric([name], hist.cumulative(), hist.total)
        yield ack

        deliveries = CounterMetricFamily(
            "hub_deliveries", "Delivery attempts by outcome.", labels=["route", "destination", "outcome"]
        )
        for (route, destination, outcome), n in sorted(hub.outcomes.items()):
            deliveries.add_metric([route, destination, outcome], n)
        yield deliveries

        e2e = HistogramMetricFamily(
            "hub_delivery_latency_seconds", "From reception to accepted delivery (end to end).", labels=["destination"]
        )
        for name, hist in sorted(m.delivery_latency.items()):
            e2e.add_metric([name], hist.cumulative(), hist.total)
        yield e2e

        labels = ["route", "destination"]
        depth = GaugeMetricFamily("hub_queue_depth", "Deliveries waiting to be sent, retries included.", labels=labels)
        retrying = GaugeMetricFamily("hub_queue_retrying", "Deliveries waiting after a failed attempt.", labels=labels)
        held = GaugeMetricFamily("hub_queue_held", "Deliveries held for the patient's identity.", labels=labels)
        dead = GaugeMetricFamily("hub_queue_dead", "Dead-lettered deliveries.", labels=labels)
        oldest = GaugeMetricFamily(
            "hub_queue_oldest_age_seconds", "Age of the oldest waiting or in-flight delivery.", labels=labels
        )
        now = utcnow()
        for q in m.queues:
            key = [q.route, q.destination]
            depth.add_metric(key, q.pending)
            retrying.add_metric(key, q.retrying)
            held.add_metric(key, q.held)
            dead.add_metric(key, q.dead)
            oldest.add_metric(key, max(0.0, (now - q.oldest_at).total_seconds()) if q.oldest_at else 0.0)
        in_flight = GaugeMetricFamily("hub_queue_in_flight", "Deliveries this node is sending now.", labels=labels)
        paused = GaugeMetricFamily("hub_destination_paused", "1 when this node's worker is paused.", labels=labels)
        down = GaugeMetricFamily(
            "hub_destination_down_seconds", "How long the destination has been unreachable (0: up).", labels=labels
        )
        for (route, destination), worker in sorted(hub.workers.items()):
            in_flight.add_metric([route, destination], worker.in_flight)
            paused.add_metric([route, destination], 1.0 if worker.paused else 0.0)
            since = worker.down_since
            down.add_metric([route, destination], max(0.0, (now - since).total_seconds()) if since else 0.0)
        yield from (depth, retrying, in_flight, held, dead, oldest, paused, down)

        errors = CounterMetricFamily("hub_store_errors", "Store operations that failed.", labels=["operation"])
        for op, n in sorted(m.store_errors.items()):
            errors.add_metric([op], n)
        yield errors
        yield GaugeMetricFamily("hub_undelivered", "Deliveries not yet delivered.", value=hub.undelivered)
