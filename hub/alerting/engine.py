"""Evaluate the alert rules every `check_secs`, notify when a condition starts, repeats, and ends.

Each rule yields zero or more *conditions*, keyed by (rule, subject): a queue
(``route -> destination``), a listener, the store, a certificate file. A new
condition sends a ``firing`` notice to the rule's channels; one still true
after ``renotify_secs`` sends it again (``repeat``); one no longer true sends
``resolved``. A notice a channel could not take is tried again at the next
check. A rule that could not be evaluated (the store is down) keeps its
conditions as they were: an outage never reads as a recovery.

Texts name routes, destinations, counts and durations; error texts pass
through the log redaction (:func:`hub.logs.redact_text`): no health data.

In a cluster (several nodes on one PostgreSQL store) the rules about what the
nodes share (queues, dead letters, identity reviews, a destination down) are
evaluated by one node only, the holder of the store's ``alerts`` lease,
renewed at every check: one notice for the cluster. When the holder dies its
lease runs out (:data:`LEASE_CHECKS` checks, at least :data:`MIN_LEASE_SECS`) and another node takes it over
with the state the holder saved there (what fired, when it was last sent), so
a condition already announced is not announced again and its recovery is
still told. The rules about a node itself (its listeners, its view of the
store, its certificate files) are evaluated by every node, each naming its
node.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel

from hub.alerting.channels import Notice, Sender, build_sender
from hub.alerting.config import AlertRule, AlertsConfig
from hub.errors import DeliveryError, StoreError
from hub.logs import redact_text
from hub.statuses import ReviewState

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["AlertEngine", "Condition", "certificate_files"]

log = structlog.get_logger("hub.alerts")

_QUEUE_RULES = ("dead_letters", "queue_depth", "queue_age")
#: Rules about what every node shares: evaluated by the lease holder only.
CLUSTER_RULES = (*_QUEUE_RULES, "reviews_waiting", "destination_down")
LEASE = "alerts"
#: The lease lasts this many checks: a holder that missed one check keeps it, a dead one loses it soon.
LEASE_CHECKS = 3
#: ... and never less than this: a check slowed by a channel that answers late must not hand the lease over.
MIN_LEASE_SECS = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    rule: AlertRule
    subject: str
    summary: str


@dataclasses.dataclass(slots=True)
class _Active:
    condition: Condition
    since: datetime
    sent_at: datetime | None = None
    unsent: set[str] = dataclasses.field(default_factory=set)


class AlertEngine:
    def __init__(self, hub: Hub, config: AlertsConfig) -> None:
        self.hub, self.config = hub, config
        self.senders: dict[str, Sender] = {name: build_sender(name, c) for name, c in config.channels.items()}
        self.active: dict[tuple[str, str], _Active] = {}
        self._resolved_unsent: list[tuple[Notice, set[str]]] = []
        self.holds_lease = False
        """Whether this node evaluates the cluster rules (it held the lease at the last check)."""
        self.checks = 0
        """Checks done since start."""

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_secs)
            await self.check()

    async def close(self) -> None:
        if self.holds_lease:
            with contextlib.suppress(StoreError):  # shutdown: another node takes over at its next check
                await self._save_state()
                await self.hub.store.release_lease(LEASE, owner=self.hub.config.node)  # type: ignore[union-attr]
            self.holds_lease = False
        for sender in self.senders.values():
            await sender.close()

    # -- the cluster lease -------------------------------------------------------------------------------------
    async def _take_lease(self) -> None:
        """Take or renew the lease; on taking it over, resume the previous holder's conditions; on losing it,
        forget the cluster conditions (their notices are the holder's now)."""
        store = self.hub.store
        if store is None or not hasattr(store, "take_lease"):
            self.holds_lease = True  # a store without leases: one node
            return
        try:
            state = await store.take_lease(
                LEASE, owner=self.hub.config.node, secs=max(self.config.check_secs * LEASE_CHECKS, MIN_LEASE_SECS)
            )
        except StoreError:
            return  # the store is down: nothing of the cluster can be evaluated; keep the role as it was
        if state is None:
            if self.holds_lease:
                log.info("alert_lease_lost", node=self.hub.config.node)
            self.holds_lease = False
            self.active = {k: a for k, a in self.active.items() if a.condition.rule.when not in CLUSTER_RULES}
            self._resolved_unsent = [(n, c) for n, c in self._resolved_unsent if n.kind not in CLUSTER_RULES]
            return
        if not self.holds_lease:
            log.info("alert_lease_taken", node=self.hub.config.node)
            self.active.update(self._load_state(state))
        self.holds_lease = True

    async def _save_state(self) -> None:
        """Save the cluster conditions with the lease, for whoever takes it over."""
        store = self.hub.store
        if store is None or not hasattr(store, "save_lease_state"):
            return
        state = [
            {
                "rule": a.condition.rule.name, "subject": a.condition.subject, "summary": a.condition.summary,
                "since": a.since.isoformat(), "sent_at": a.sent_at.isoformat() if a.sent_at else None,
                "unsent": sorted(a.unsent),
            }
            for a in self.active.values()
            if a.condition.rule.when in CLUSTER_RULES
        ]  # fmt: skip
        if not await store.save_lease_state(LEASE, owner=self.hub.config.node, state=json.dumps(state)):
            self.holds_lease = False

    def _load_state(self, state: str) -> dict[tuple[str, str], _Active]:
        rules = {r.name: r for r in self.config.rules}
        out: dict[tuple[str, str], _Active] = {}
        try:
            saved = json.loads(state) if state else []
            for item in saved:
                rule = rules.get(item["rule"])
                if rule is None or rule.when not in CLUSTER_RULES:
                    continue  # a rule since removed from the config
                active = _Active(
                    Condition(rule, item["subject"], item["summary"]), datetime.fromisoformat(item["since"]),
                    datetime.fromisoformat(item["sent_at"]) if item["sent_at"] else None,
                    set(item["unsent"]) & set(self.senders),
                )  # fmt: skip
                out[(rule.name, active.condition.subject)] = active
        except (ValueError, KeyError, TypeError):
            log.warning("alert_state_unreadable")  # start afresh: at worst a notice is sent again
            return {}
        return out

    # -- one check ---------------------------------------------------------------------------------------------
    async def check(self, now: datetime | None = None) -> list[Notice]:
        """Evaluate every rule once and send what has to be said; returns the notices sent."""
        now = now or datetime.now(UTC)
        await self._take_lease()
        found, evaluated = await self._evaluate(now)
        sent: list[Notice] = []
        for key, condition in found.items():
            active = self.active.get(key)
            if active is None:
                active = self.active[key] = _Active(condition, now, unsent=self._channels(condition.rule))
            active.condition = condition
            renotify = self.config.renotify_secs
            due = active.sent_at is not None and renotify > 0 and (now - active.sent_at).total_seconds() >= renotify
            if due:
                active.unsent = self._channels(condition.rule)
            if active.unsent:
                notice = self._notice("firing", active, now, repeat=active.sent_at is not None)
                active.unsent = await self._send(notice, active.unsent, sent)
                if not active.unsent or active.sent_at is None:
                    active.sent_at = now
        for key in [k for k, a in self.active.items() if k not in found and a.condition.rule.name in evaluated]:
            active = self.active.pop(key)
            self._resolved_unsent.append(
                (self._notice("resolved", active, now), self._channels(active.condition.rule))
            )
        retry = []
        for notice, channels in self._resolved_unsent:
            left = await self._send(notice, channels, sent)
            if left:
                retry.append((notice, left))
        self._resolved_unsent = retry
        if self.holds_lease:
            with contextlib.suppress(StoreError):
                await self._save_state()
        self.checks += 1
        return sent

    def _channels(self, rule: AlertRule) -> set[str]:
        return set(rule.channels if rule.channels is not None else self.senders)

    def _notice(self, status: str, active: _Active, now: datetime, repeat: bool = False) -> Notice:
        c = active.condition
        return Notice(
            status=status, rule=c.rule.name, kind=c.rule.when, severity=c.rule.severity, subject=c.subject,
            summary=c.summary, since=active.since.isoformat(), node=self.hub.config.node, at=now.isoformat(),
            repeat=repeat,
        )  # fmt: skip

    async def _send(self, notice: Notice, channels: set[str], sent: list[Notice]) -> set[str]:
        left = set()
        for name in sorted(channels):
            try:
                await self.senders[name].send(notice)
            except DeliveryError as exc:
                log.warning("alert_not_sent", channel=name, rule=notice.rule, status=notice.status, error=str(exc))
                left.add(name)
                continue
            log.info("alert_sent", channel=name, rule=notice.rule, status=notice.status, subject=notice.subject)
            if notice not in sent:
                sent.append(notice)
        return left

    # -- evaluation ------------------------------------------------------------------------------------------------
    async def _evaluate(self, now: datetime) -> tuple[dict[tuple[str, str], Condition], set[str]]:
        found: dict[tuple[str, str], Condition] = {}
        evaluated: set[str] = set()
        rules = self.config.rules
        store_ok = await self._store_answers()
        queues = None
        if store_ok and any(r.when in _QUEUE_RULES for r in rules):
            try:
                queues = await self.hub.metrics.refresh_queues(self.hub.store, max_age_secs=0)  # type: ignore[arg-type]
            except StoreError:
                queues = None
        reviews: int | None = None
        if store_ok and any(r.when == "reviews_waiting" for r in rules):
            try:
                reviews = len(await self.hub.store.list_reviews(state=ReviewState.OPEN, limit=10_000))  # type: ignore[union-attr]
            except StoreError:
                reviews = None
        for rule in rules:
            conditions: list[Condition] | None
            if rule.when in CLUSTER_RULES and not self.holds_lease:
                continue  # another node evaluates it for the cluster
            if rule.when in _QUEUE_RULES:
                conditions = None if queues is None else list(self._queue_conditions(rule, queues, now))
            elif rule.when == "reviews_waiting":
                conditions = None if reviews is None else (
                    [Condition(rule, "identity review", f"{reviews} identity review(s) waiting for a decision")]
                    if reviews >= rule.limit else []
                )  # fmt: skip
            elif rule.when == "destination_down":
                conditions = list(self._down_conditions(rule, now))
            elif rule.when == "listener_down":
                conditions = [
                    Condition(rule, f"listener {name}", f"listener {name} is not accepting connections")
                    for name, listener in self.hub.listeners.items()
                    if not _serving(listener)
                ]
            elif rule.when == "store_down":
                conditions = [] if store_ok else [Condition(rule, "store", "the store does not answer within 2 s")]
            else:
                conditions = list(self._certificate_conditions(rule, now))
            if conditions is None:
                continue
            evaluated.add(rule.name)
            for c in conditions:
                found[(rule.name, c.subject)] = c
        return found, evaluated

    async def _store_answers(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                await self.hub.store.ping()  # type: ignore[union-attr]
        except (StoreError, TimeoutError):
            return False
        return True

    @staticmethod
    def _matches(rule: AlertRule, route: str, destination: str) -> bool:
        return (rule.route is None or rule.route == route) and (
            rule.destination is None or rule.destination == destination
        )

    def _queue_conditions(self, rule: AlertRule, queues: list[Any], now: datetime) -> Iterator[Condition]:
        for q in queues:
            if not self._matches(rule, q.route, q.destination):
                continue
            subject = f"{q.route} -> {q.destination}"
            if rule.when == "dead_letters" and q.dead >= rule.limit:
                yield Condition(rule, subject, f"{q.dead} dead letter(s) on {subject}: fix the cause, then requeue")
            elif rule.when == "queue_depth" and q.pending >= rule.limit:
                yield Condition(rule, subject, f"{q.pending} deliveries waiting on {subject}")
            elif rule.when == "queue_age" and q.oldest_at is not None:
                minutes = (now - q.oldest_at).total_seconds() / 60
                if minutes >= rule.limit:
                    yield Condition(rule, subject, f"oldest delivery on {subject} waits for {minutes:.0f} min")

    def _down_conditions(self, rule: AlertRule, now: datetime) -> Iterator[Condition]:
        for (route, destination), worker in self.hub.workers.items():
            since = worker.down_since
            if since is None or not self._matches(rule, route, destination):
                continue
            minutes = (now - since).total_seconds() / 60
            if minutes >= rule.limit:
                reason = redact_text(worker.down_reason or "")[:200]
                yield Condition(
                    rule, f"{route} -> {destination}",
                    f"{destination} unreachable for {minutes:.0f} min (since {since:%H:%M:%S} UTC): {reason}",
                )  # fmt: skip

    def _certificate_conditions(self, rule: AlertRule, now: datetime) -> Iterator[Condition]:
        from cryptography import x509

        for path in certificate_files(self.hub):
            try:
                cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
            except (OSError, ValueError):
                continue  # hub check and the adapters report unreadable files
            days = (cert.not_valid_after_utc - now) / timedelta(days=1)
            if days <= rule.limit:
                when = cert.not_valid_after_utc.date().isoformat()
                text = f"certificate {path} expires {when} ({days:.0f} days)" if days > 0 else f"{path} expired {when}"
                yield Condition(rule, f"certificate {path}", text)


def certificate_files(hub: Hub) -> list[str]:
    """Every `cert_file` of the config: the HTTP server's and each listener's, endpoint's and sandbox's."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                item = getattr(value, name)
                if name == "cert_file" and isinstance(item, str) and item not in found:
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(hub.config.http)
    for component in hub.settings.component_configs.values():
        walk(component)
    return found


def _serving(listener: object) -> bool:
    """Whether a listener accepts connections; one that cannot tell (no ``is_serving()``) counts as serving."""
    is_serving = getattr(listener, "is_serving", None)
    return is_serving is None or bool(is_serving())
