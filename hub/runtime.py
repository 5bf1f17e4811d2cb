"""The Hub: one process's store, listeners, delivery workers and sandboxes, started and stopped together.

Start order: store (migrated, our own stale leases released) → sandboxes →
outbound adapters and delivery workers → HTTP server → inbound listeners
last, so nothing is acknowledged before the hub can keep it. Stop order is
the reverse: listeners close first, then workers drain for
``shutdown_grace_secs`` and give back what is still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from hub import registry
from hub.admin import audit
from hub.admin.audit import AuditKeys, ensure_keyed_head, load_audit_keys
from hub.admin.auth import Principal
from hub.alerting.metrics import OperationsCollector
from hub.clock import Clock, SystemClock
from hub.config import DestinationPolicy, HubConfig, RouteConfig, Settings
from hub.delivery import DestinationWorker
from hub.errors import ConfigError, MessageError, Outcome, Retryable, StoreError
from hub.http_slots import SlottedSite
from hub.identity_registry import IdentityRegistry
from hub.message import Message, utcnow
from hub.metrics import HubMetrics
from hub.outcomes import FinalOutcome
from hub.pipeline import Pipeline, route_message
from hub.ports import IdentityUpdates, InboundAdapter, OutboundAdapter, Sandbox
from hub.reload import ReloadResult, entry_changes, prepare_reload, route_texts
from hub.slots import Slots
from hub.stats import HourlyStats
from hub.store import AuditEvent, Delivery, MessageRecord, SearchQuery, Store, SubmitResult, open_store
from hub.supervisor import Supervisor
from hub.tls import server_context

__all__ = ["Hub", "ReplayTargetError", "replay"]

log = structlog.get_logger("hub")

#: How often this node adds its hourly counts to the store (the dashboard's chart, `hub stats`).
HOURLY_FLUSH_SECS = 10.0


class _ListenerContext:
    """What one inbound adapter sees of the hub."""

    def __init__(self, hub: Hub, endpoint: str) -> None:
        self.hub = hub
        self.endpoint = endpoint

    async def submit(self, message: Message, *, dedup_key: str | None = None) -> SubmitResult:
        return await self.hub.submit(self.endpoint, message, dedup_key=dedup_key)

    async def reject(self, message: Message, *, reason: str) -> None:
        await self.hub.reject(self.endpoint, message, reason=reason)

    async def audit(self, action: str, *, actor: str, outcome: str, detail: Mapping[str, str]) -> None:
        if self.hub.store is None:
            return
        event = AuditEvent(actor=actor, role="listener", action=action, target=self.endpoint, detail=detail,
                           outcome=outcome)  # fmt: skip
        try:
            await self.hub.store.append_audit(event)
        except StoreError as exc:
            log.error("audit_failed", endpoint=self.endpoint, action=action, error=type(exc).__name__)


class Hub:
    def __init__(self, settings: Settings, *, store: Store | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        #: What delivery workers schedule probes, backoff and leases with (tests pass a ManualClock).
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.config = settings.hub
        self.store: Store | None = store
        self.audit_keys: AuditKeys | None = None
        self._own_store = store is None
        self.listeners: dict[str, InboundAdapter] = {}
        self.endpoints: dict[str, OutboundAdapter] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.workers: dict[tuple[str, str], DestinationWorker] = {}
        self.undelivered = 0
        self.counters: dict[str, int] = {"received": 0, "duplicates": 0, "rejected": 0, "refused_busy": 0}
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.metrics = HubMetrics(self)
        self.hourly = HourlyStats()
        self.alerts: Any = None
        self.metrics.registry.register(OperationsCollector(self))
        # Every long-running loop (workers, lease recovery, wake-ups...) restarts after a crash.
        self.supervisor = Supervisor()
        self._http: web.AppRunner | None = None
        self.http_port: int | None = None
        self.http_slots: Slots | None = None
        self._step_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="steps")
        self.route_snapshot = route_texts(settings)
        """Route and table files as last applied: a reload's audit entry carries their diff."""
        self._reload_lock = asyncio.Lock()

    # -- inbound ------------------------------------------------------------------------------------
    async def submit(self, endpoint: str, message: Message, *, dedup_key: str | None = None) -> SubmitResult:
        """Route and durably store one inbound message. Raises Retryable when it cannot be kept now."""
        counts = self.metrics.endpoint(endpoint)
        counts.received += 1
        if self.undelivered >= self.config.high_water_mark:
            self.counters["refused_busy"] += 1
            counts.refused += 1
            raise Retryable("hub above its high-water mark, try again later")
        deliveries = route_message(self.settings.routes, endpoint, message)
        assert self.store is not None
        try:
            result = await self.store.submit(message, deliveries, endpoint=endpoint, dedup_key=dedup_key)
        except StoreError as exc:
            self.counters["refused_busy"] += 1
            counts.refused += 1
            self.metrics.store_error("submit")
            raise Retryable(f"store unavailable ({exc})") from None
        self.metrics.observe_ack(endpoint, (utcnow() - message.received_at).total_seconds())
        self.counters["received"] += 1
        if result.duplicate:
            self.counters["duplicates"] += 1
            counts.duplicates += 1
        else:
            counts.accepted += 1
            self.undelivered += result.deliveries
            self.hourly.add("", endpoint, "received")
            for d in deliveries:
                self.hourly.add(d.route, d.destination, "received")
            for d in deliveries:
                worker = self.workers.get((d.route, d.destination))
                if worker is not None:
                    worker.wake.set()
        return result

    async def reject(self, endpoint: str, message: Message, *, reason: str) -> None:
        assert self.store is not None
        counts = self.metrics.endpoint(endpoint)
        counts.received += 1
        try:
            await self.store.store_rejected(message, endpoint=endpoint, reason=reason)
        except StoreError as exc:
            counts.refused += 1
            self.metrics.store_error("store_rejected")
            raise Retryable(f"store unavailable ({exc})") from None
        self.counters["rejected"] += 1
        counts.rejected += 1
        self.hourly.add("", endpoint, "rejected")

    async def replay(
        self, message_id: str, *, body: bytes | None = None, destinations: Collection[str] | None = None
    ) -> SubmitResult:
        """Run a stored message again as a new message derived from it (optionally with a corrected body).

        `destinations` limits the replay to those of the routed destinations (None: every one).
        """
        return await replay(
            self.store,  # type: ignore[arg-type]
            self.settings,
            message_id,
            body=body,
            destinations=destinations,
            wake=self._wake_all,
        )

    def _wake_all(self) -> None:
        for w in self.workers.values():
            w.wake.set()

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.store is None:
            self.store = await open_store(self.config.store)
        self.audit_keys = load_audit_keys(self.config)
        self.store.audit_key = self.audit_keys.current
        await ensure_keyed_head(self.store, node=self.config.node)
        recovered = await self.store.recover_leases(owner=self.config.node)
        if recovered:
            log.info("leases_recovered", count=recovered, node=self.config.node)
        self.undelivered = await self.store.undelivered_count(cap=self.config.high_water_mark)
        self.identity = IdentityRegistry(self.store, on_release=self._wake_all)

        for name, entry in self.config.sandboxes.items():
            comp = registry.get("sandbox", entry.type)
            assert comp is not None
            sandbox = comp.factory(name, self.settings.component_configs[("sandbox", name)])
            await sandbox.start()
            self.sandboxes[name] = sandbox
            log.info("sandbox_started", **sandbox.describe())

        for name in self.config.endpoints:
            adapter = self._build_endpoint(self.settings, name)
            await adapter.start()
            self.endpoints[name] = adapter

        pauses = await self.store.queue_pauses()
        for route in self.settings.routes:
            pipeline = self._pipeline(self.settings, route)
            for policy in route.to:
                # An operator's stored decision wins over the config's default.
                paused = pauses.get((route.route, policy.destination), policy.paused)
                key = (route.route, policy.destination)
                self.workers[key] = self._start_worker(route.route, policy, pipeline, paused)

        if self.config.retention.days is not None:
            self.supervisor.start("retention", self._retention)
        self.supervisor.start("backlog", self._refresh_backlog)
        self.supervisor.start("pauses", self._follow_pauses)
        self.supervisor.start("leases", self._recover_leases)
        self.supervisor.start("wakeups", self._listen_for_work)
        self.supervisor.start("hourly", self._flush_hourly)
        if self.config.store.kind == "postgres" and self.config.store.vacuum_check_secs > 0:
            self.supervisor.start("vacuum", self._vacuum_hot_tables)
        if self.config.alerts.rules:
            from hub.alerting import AlertEngine

            self.alerts = AlertEngine(self, self.config.alerts)
            self.supervisor.start("alerts", self.alerts.run)
        # Listeners are built before the HTTP server so that those served on the hub's HTTP port
        # (`http_routes()`, e.g. FHIR under /fhir) are mounted; none takes a message before start().
        for name in self.config.listeners:
            self.listeners[name] = self._build_listener(self.settings, name)
        if self.config.http.enabled:
            await self._start_http()
        for listener in self.listeners.values():
            await listener.start()
            log.info("listener_started", **listener.describe())
        log.info(
            "hub_started",
            node=self.config.node,
            store=self.config.store.kind,
            routes=len(self.settings.routes),
            http_port=self.http_port,
        )

    def _build_endpoint(self, settings: Settings, name: str) -> Any:
        entry = settings.hub.endpoints[name]
        comp = registry.get("outbound", entry.type)
        assert comp is not None
        if "services" in comp.needs:
            services = _AdapterServices(settings.hub.environment, self.identity)
            return comp.factory(name, settings.endpoint_config(name), services=services)
        return comp.factory(name, settings.endpoint_config(name))

    def _build_listener(self, settings: Settings, name: str) -> Any:
        comp = registry.get("inbound", settings.hub.listeners[name].type)
        assert comp is not None
        return comp.factory(name, settings.listener_config(name), _ListenerContext(self, name))

    def _pipeline(self, settings: Settings, route: RouteConfig) -> Pipeline:
        return Pipeline(route.step_specs(), route=route.route, route_dir=settings.route_files[route.route].parent)

    def _start_worker(
        self, route: str, policy: DestinationPolicy, pipeline: Pipeline, paused: bool
    ) -> DestinationWorker:
        assert self.store is not None
        worker = DestinationWorker(
            store=self.store,
            route=route,
            policy=policy,
            adapter=self.endpoints[policy.destination],
            pipeline=pipeline,
            owner=self.config.node,
            lease_secs=self.config.store.lease_secs,
            step_executor=self._step_executor,
            on_outcome=self._count_outcome,
            on_dead=lambda route, destination: self.hourly.add(route, destination, "dead"),
            on_dequeued=self._dequeued,
            on_store_error=self.metrics.store_error,
            identity_lookup=self.identity.lookup,
            environment=self.config.environment,
            on_final=self._on_final,
            clock=self.clock,
        )
        worker.paused = paused
        worker.start(self.supervisor)
        return worker

    async def apply_routes(self, settings: Settings) -> tuple[list[str], list[str], list[str]]:
        """Switch to the routes of `settings` (validated by load_config); see :mod:`hub.reload`.

        Returns the (route, destination) queues added, removed (left to drain) and changed, as
        ``route/destination``. ConfigError, with nothing changed, when a pipeline cannot be built.
        """
        try:
            pipelines = {r.route: self._pipeline(settings, r) for r in settings.routes}
        except Exception as exc:  # a table or module changed between the check and the build
            raise ConfigError(f"{settings.path}:1: a route could not be built ({type(exc).__name__})") from None
        wanted = {(r.route, p.destination): (r, p) for r in settings.routes for p in r.to}
        old_policies = {(r.route, p.destination): p for r in self.settings.routes for p in r.to}
        added, changed = [], []
        for key, (route, policy) in wanted.items():
            worker = self.workers.get(key)
            same_adapter = worker is not None and worker.adapter is self.endpoints.get(policy.destination)
            if worker is not None and old_policies.get(key) == policy and same_adapter:
                worker.pipeline = pipelines[route.route]  # used from its next claim
                continue
            paused = worker.paused if worker is not None else policy.paused
            if worker is not None:
                await worker.stop(self.config.shutdown_grace_secs)
                changed.append("/".join(key))
            else:
                added.append("/".join(key))
            self.workers[key] = self._start_worker(route.route, policy, pipelines[route.route], paused)
        removed = ["/".join(k) for k in old_policies if k not in wanted]
        # Routing reads self.settings on each submit: from here on, new messages take the new routes.
        self.settings = settings
        self.config = settings.hub  # equal but for the route globs (hub/reload.py refuses other changes)
        return added, removed, changed

    async def reload(self, path: str | Path | None = None, *, by: str = "signal", role: str = "admin") -> ReloadResult:
        """`hub reload` / SIGHUP / POST /api/config/reload: validate as `hub check`, apply, audit."""
        async with self._reload_lock:
            result, new = prepare_reload(self, path)
            assert self.store is not None
            who = Principal(by, role, "signal" if by == "signal" else "token")
            kept = ("reason", "problems", "diff", "endpoints", "listeners")
            detail = {k: v for k, v in result.as_dict().items() if k in kept}
            # Recorded before anything changes: a reload the audit trail cannot keep is not applied.
            await audit.record(
                self.store, who, "config_reload", target=str(path or self.settings.path), detail=detail,
                outcome="ok" if new is not None else "refused",
            )  # fmt: skip
            if new is None:
                log.warning("config_reload_refused", reason=result.reason, problems=len(result.problems))
                return result
            previous = self.config
            try:
                retired = await self._apply_endpoints(new, result)
                result.added, result.removed, result.changed = await self.apply_routes(new)
                await self._retire_endpoints(retired)
                await self._apply_listeners(previous, new, result)
            except ConfigError as exc:
                result = ReloadResult(False, "a route could not be built", problems=exc.problems, diff=result.diff)
                await audit.record(
                    self.store, who, "config_reload", detail={"problems": exc.problems}, outcome="failed"
                )
                return result
            self.route_snapshot = route_texts(new)
            log.info(
                "config_reloaded", added=len(result.added), removed=len(result.removed), changed=len(result.changed)
            )
            return result

    async def _apply_endpoints(self, settings: Settings, result: ReloadResult) -> dict[str, Any]:
        """Start the endpoints a reload adds or changes (their workers switch over in apply_routes); returns the
        adapters they replace, stopped once no worker uses them. ConfigError, nothing changed, if one fails."""
        old, new = self.config.endpoints, settings.hub.endpoints
        names = [n for n in new if n not in old or old[n] != new[n]]
        started: dict[str, Any] = {}
        try:
            for name in names:
                adapter = self._build_endpoint(settings, name)
                await adapter.start()
                started[name] = adapter
        except Exception as exc:
            for adapter in started.values():
                with contextlib.suppress(Exception):
                    await adapter.stop()
            raise ConfigError(f"{settings.path}:1: endpoint could not start ({type(exc).__name__})") from None
        retired = {name: self.endpoints[name] for name in started if name in self.endpoints}
        retired |= {name: self.endpoints[name] for name in old if name not in new}
        self.endpoints.update(started)
        result.endpoints = entry_changes(old, new)
        return retired

    async def _retire_endpoints(self, retired: dict[str, Any]) -> None:
        """Stop the adapters a reload replaced or removed, unless a worker (a removed route draining) uses one."""
        in_use = {id(w.adapter) for w in self.workers.values()}
        for name, adapter in retired.items():
            if id(adapter) in in_use:
                log.info("endpoint_kept_until_drained", endpoint=name)
                continue
            if self.endpoints.get(name) is adapter:
                del self.endpoints[name]
            await adapter.stop()

    async def _apply_listeners(self, previous: HubConfig, settings: Settings, result: ReloadResult) -> None:
        """Stop the listeners a reload removes or changes (their open connections are closed: a message being
        committed still commits, its sender resends what it got no ACK for), start the new ones."""
        old, new = previous.listeners, settings.hub.listeners
        for name in [n for n in old if n not in new or old[n] != new[n]]:
            listener = self.listeners.pop(name)
            await listener.stop()
            log.info("listener_stopped", listener=name, reason="reload")
        for name in [n for n in new if n not in old or old[n] != new[n]]:
            listener = self._build_listener(settings, name)
            await listener.start()
            self.listeners[name] = listener
            log.info("listener_started", **listener.describe())
        result.listeners = entry_changes(old, new)

    async def stop(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()
        await asyncio.gather(*(w.stop(self.config.shutdown_grace_secs) for w in self.workers.values()))
        await self.supervisor.stop()
        if self.alerts is not None:
            await self.alerts.close()
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.hourly.flush(self.store)  # the last counts, kept across the restart
        for adapter in self.endpoints.values():
            await adapter.stop()
        if self._http is not None:
            await self._http.cleanup()
        for sandbox in self.sandboxes.values():
            await sandbox.stop()
        if self.store is not None and self._own_store:
            await self.store.close()
        self._step_executor.shutdown(wait=False, cancel_futures=True)
        log.info("hub_stopped", node=self.config.node)

    def _count_outcome(
        self, route: str, destination: str, outcome: Outcome, _elapsed: float, received_at: datetime | None = None
    ) -> None:
        key = (route, destination, outcome.value)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if outcome is Outcome.ACCEPT:
            self.hourly.add(route, destination, "delivered")
        elif outcome is Outcome.RETRY:
            self.hourly.add(route, destination, "failed")
        if outcome is Outcome.ACCEPT and received_at is not None:
            self.metrics.observe_delivery(destination, (utcnow() - received_at).total_seconds())

    async def pause(self, route: str, destination: str, *, paused: bool, by: str = "") -> None:
        """Pause or resume one queue on every node, kept across restarts (an operator's decision)."""
        assert self.store is not None
        await self.store.set_paused(route, destination, paused=paused, by=by)
        worker = self.workers.get((route, destination))
        if worker is not None:
            worker.paused = paused
            worker.wake.set()

    async def _sync_pauses(self) -> None:
        """Apply the stored pause decisions (they win over the config's `paused`, which is only the default)."""
        assert self.store is not None
        for key, paused in (await self.store.queue_pauses()).items():
            worker = self.workers.get(key)
            if worker is not None and worker.paused != paused:
                worker.paused = paused
                worker.wake.set()

    async def _follow_pauses(self) -> None:
        # Another node (or the API on another node) may pause or resume a queue: follow within seconds.
        while True:
            await asyncio.sleep(2.0)
            try:
                await self._sync_pauses()
            except StoreError:
                self.metrics.store_error("queue_pauses")

    async def purge(self) -> int:
        """Delete finished messages older than `retention.days`, batch by batch; returns how many."""
        cfg = self.config.retention
        if cfg.days is None or self.store is None:
            return 0
        before = utcnow() - timedelta(days=cfg.days)
        total = 0
        while True:
            n = await self.store.purge(before=before, statuses=tuple(cfg.statuses), batch=cfg.batch)
            total += n
            if n < cfg.batch:
                return total
            await asyncio.sleep(0)  # let the listeners in between batches

    async def _retention(self) -> None:
        while True:
            try:
                purged = await self.purge()
            except StoreError:
                self.metrics.store_error("purge")
            else:
                if purged:
                    log.info("retention_purged", messages=purged, older_than_days=self.config.retention.days)
            await asyncio.sleep(self.config.retention.every_secs)

    def _dequeued(self) -> None:
        self.undelivered = max(0, self.undelivered - 1)

    async def _refresh_backlog(self) -> None:
        # The count is kept as work comes and goes (submit adds, workers subtract); the store's figure
        # replaces it every 30 s to take in what other nodes and the CLI did. That COUNT is capped at
        # the high-water mark: over a deep backlog an uncapped one cost a quarter of the ingest rate.
        while True:
            await asyncio.sleep(30.0)
            try:
                self.undelivered = await self.store.undelivered_count(  # type: ignore[union-attr]
                    cap=self.config.high_water_mark
                )
            except StoreError:
                self.metrics.store_error("undelivered_count")

    async def _recover_leases(self) -> None:
        period = max(1.0, self.config.store.lease_secs / 4)
        while True:
            await asyncio.sleep(period)
            try:
                if await self.store.recover_leases():  # type: ignore[union-attr]
                    self._wake_all()
            except StoreError:
                self.metrics.store_error("recover_leases")

    async def _vacuum_hot_tables(self) -> None:
        """Keep the store's hot tables vacuumed (hub/store/pg_maintenance.py), on a connection of its own."""
        cfg = self.config.store
        vacuum = self.store.vacuum_hot_tables  # type: ignore[union-attr]
        while True:
            await asyncio.sleep(cfg.vacuum_check_secs)
            try:
                done = await vacuum(dead_rows=cfg.vacuum_dead_rows, dead_fraction=cfg.vacuum_dead_fraction)
            except StoreError:
                self.metrics.store_error("vacuum")
                continue
            for v in done:
                event = "store_analyzed" if v.analyzed_only else "store_vacuumed"
                log.info(event, table=v.table, dead_rows=v.dead_rows, secs=round(v.secs, 2))

    async def _listen_for_work(self) -> None:
        while True:
            try:
                await self.store.wait_for_work(1.0)  # type: ignore[union-attr]
            except StoreError:
                self.metrics.store_error("wait_for_work")
                await asyncio.sleep(1.0)
            self._wake_all()

    async def _flush_hourly(self) -> None:
        while True:
            await asyncio.sleep(HOURLY_FLUSH_SECS)
            try:
                await self.hourly.flush(self.store)  # type: ignore[arg-type]
            except StoreError:
                self.metrics.store_error("add_hourly")

    async def health(self) -> dict[str, Any]:
        """What /healthz says: the problems that stop this node from keeping or moving messages.

        The store must answer within two seconds; no supervised task may be waiting to restart
        after a crash; every listener must be accepting. A destination that is down is reported
        but is not the hub's fault, so it does not make the hub unhealthy.
        """
        problems: dict[str, str] = {}
        try:
            assert self.store is not None
            async with asyncio.timeout(2.0):
                await self.store.ping()
        except StoreError as exc:
            problems["store"] = str(exc)  # StoreError texts name the error type, never data
        except TimeoutError:
            problems["store"] = "no answer within 2s"
        for name, error in self.supervisor.unhealthy().items():
            problems[f"task {name}"] = f"restarting after {error}"
        for name, listener in self.listeners.items():
            serving = getattr(listener, "is_serving", None)
            if serving is not None and not serving():
                problems[f"listener {name}"] = "not accepting connections"
        down = {
            f"{w.route}/{w.destination}": w.down_since.isoformat()
            for w in self.workers.values()
            if w.down_since is not None
        }
        return {"problems": problems, "destinations_down": down}

    async def _on_final(self, outcome: FinalOutcome) -> None:
        """Run the message's outcome hook and submit what it returns (each under its dedup key)."""
        name = outcome.message.metadata.get("on_final", "")
        comp = registry.get("outcome_hook", name)
        if comp is None:
            log.error("unknown_outcome_hook", hook=name, message_id=outcome.message.id)
            return
        assert self.store is not None
        try:
            record = await self.store.get_message(outcome.message.id)
            follow_ups = await comp.factory(outcome, _OutcomeServices(self.store))
            for f in follow_ups:
                await self.submit(record.endpoint if record else "", f.message, dedup_key=f.dedup_key)
        except (StoreError, Retryable) as exc:
            # The outcome itself is recorded; the follow-up is not. Say so: an operator replays it.
            self.metrics.store_error("outcome_hook")
            log.error("outcome_hook_failed", hook=name, message_id=outcome.message.id, error=str(exc))

    # -- HTTP ---------------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        from hub.http import build_app

        app = build_app(self)
        self._http = web.AppRunner(app, access_log=None, keepalive_timeout=self.config.http.idle_timeout_secs)
        await self._http.setup()
        host, _, port = self.config.http.listen.rpartition(":")
        ssl_ctx = server_context(self.config.http.tls) if self.config.http.tls else None
        http = self.config.http
        slots = Slots(max_connections=http.max_connections, max_per_peer=http.max_connections_per_peer)
        site = SlottedSite(self._http, host or "127.0.0.1", int(port), slots=slots, ssl_context=ssl_ctx)
        await site.start()
        self.http_slots = slots
        self.http_port = site.bound_port
        log.info("http_started", listen=self.config.http.listen, port=self.http_port, tls=ssl_ctx is not None)

    def describe_sandboxes(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sandboxes.values()]


@dataclasses.dataclass(frozen=True, slots=True)
class _AdapterServices:
    """What an outbound adapter may ask of the hub (hub.ports.AdapterServices), and nothing else."""

    environment: str
    identity: IdentityUpdates


class _OutcomeServices:
    """The part of the store an outcome hook reads (OutcomeServices)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get_message(self, message_id: str) -> MessageRecord | None:
        return await self._store.get_message(message_id)

    async def correlated(self, correlation_id: str) -> list[MessageRecord]:
        return await self._store.search(SearchQuery(correlation_id=correlation_id, limit=1000))

    async def deliveries(self, message_ids: list[str]) -> dict[str, list[Delivery]]:
        return await self._store.deliveries(message_ids)


class ReplayTargetError(ValueError):
    """A replay asked for destinations the replayed message is not routed to; nothing was stored."""


async def replay(
    store: Store,
    settings: Settings,
    message_id: str,
    *,
    body: bytes | None = None,
    destinations: Collection[str] | None = None,
    wake: Any = None,
) -> SubmitResult:
    """Run a stored message again, as a new message derived from it; with or without a running hub.

    The body (the stored one, or a corrected one) is read again by the reader
    registered for its content type and by the checks of the listener it came
    from (``checks``), so a message refused before a fix is
    routed after it. A body still unusable is stored as a new rejected
    message (keeping the trail) and the MessageError is raised. With
    `destinations`, only those of the routed destinations get a delivery (a
    result already delivered to one system is not sent to it a second time);
    naming one the message is not routed to raises ReplayTargetError.
    """
    record = await store.get_message(message_id)
    if record is None:
        raise KeyError(message_id)
    original = record.message
    # A replay of a replay carries `replay_of` already: it now names the message replayed this time.
    metadata = {**original.metadata, "replay_of": original.id}
    new_body = original.body if body is None else body
    reader = registry.get("reader", original.content_type)
    new = original.derive(body=new_body, **metadata)
    listener = settings.component_configs.get(("inbound", record.endpoint))
    checks = [registry.get("check", name) for name in getattr(listener, "checks", ())]
    if reader is not None:
        try:
            metadata.update(reader.factory(new_body))
            for check in checks:  # what the listener checks before its ACK, and the metadata it adds
                if check is not None:
                    metadata.update(check.factory(new_body))
        except MessageError as exc:
            await store.store_rejected(new, endpoint=record.endpoint, reason=exc.reason)
            raise
        new = original.derive(body=new_body, **metadata)
    deliveries = route_message(settings.routes, record.endpoint, new)
    if destinations is not None:
        wanted = set(destinations)
        unknown = sorted(wanted - {d.destination for d in deliveries})
        if unknown or not wanted:
            routed = ", ".join(sorted({d.destination for d in deliveries})) or "none"
            raise ReplayTargetError(f"not routed to {', '.join(unknown) or 'any destination given'} (routed: {routed})")
        deliveries = [d for d in deliveries if d.destination in wanted]
    result = await store.submit(new, deliveries, endpoint=record.endpoint, dedup_key=None)
    if wake:
        wake()
    return result
