"""Delivery workers: one per (route, destination), turning stored deliveries into sends.

A worker claims due deliveries under a lease (the store keeps FIFO per
ordering key), runs the route's steps, calls the outbound adapter (at most
`max_in_flight` sends at a time) and records the outcome:

* ACCEPT → ``delivered``;
* RETRY → ``pending`` again after an exponential backoff with jitter, capped,
  until ``max_attempts``; then ``dead``;
* REJECT (the peer refused, or a step found the message unusable) → ``dead`` at once.

The steps run once per delivery (a route without steps sends the inbound message and keeps nothing):
their output (body, content type, metadata, outgoing message id)
is stored with the first recorded outcome (:class:`~hub.store.SentPayload`, same transaction) and
every later attempt resends it as is. Steps that read the patient's identity ran against one
version of the registry record; when the record has changed since (qualified, merged, corrected),
the steps run again, since the old stamp would now be wrong. The identity gate of the destination
(qualified INS required) is checked at every attempt either way. A requeue drops the stored output
(an operator fixed the cause: today's steps run); a replay is a new message, so its steps run.

What the destination's peer answered (:class:`~hub.replies.PeerReply`: returned by the adapter's
``send``, or attached to the error it raised) is stored with the attempt, cut to the route's
``reply_max_bytes``, in the same write as the outcome; it is never logged.

A destination that cannot be reached (refused, TLS failure, connect time-out:
:class:`~hub.errors.Unreachable`) is an outage, not an attempt: the delivery
goes back to ``pending`` with its attempts untouched and the worker's circuit
opens (``down_since``). While it is open the worker sends one probe at a time,
with a delay that doubles up to the policy's ``probe_max_secs``; the first answer
from the peer, whatever it says, closes the circuit. So no outage, however
long, dead-letters anything.

With an ordering key and ``hold_behind_dead`` (the default), a dead letter
holds the later deliveries of its key until an operator requeues or discards
it: they never overtake it.

Store errors (the database is restarting, the disk is full) make the worker
back off, doubling up to a few seconds, instead of spinning on failed claims.

Leases: a claim holds a delivery for `lease_secs`. The worker renews the leases
of everything it holds every third of that, for as long as the delivery runs
(a slow step, a slow receiver), and starts a send only while its last renewal
is less than half a lease old: a worker cut off from the store, or whose
delivery was taken back, never sends it. A dead node's leases simply expire,
and any node's lease recovery gives its deliveries back within
``lease_secs`` plus a quarter of it.

Claiming ahead: besides the deliveries being sent, a worker holds up to
``max_in_flight`` more, claimed and leased, in a local FIFO queue, and starts
the next one the moment a send's slot frees, without a round trip to the store
(whose claim may wait behind an outcome commit). The store hands out a key's
next delivery only once the earlier one's outcome is committed, so a key has
at most one delivery held here and the local queue cannot reorder a key. What
is queued is renewed like everything held, and given back to the store (its
attempt uncounted) when the circuit opens, the queue is paused, or the worker
stops: nothing waits on a worker that will not send it.

Time: the worker reads it only through its :class:`~hub.clock.Clock` (probe delays, retry backoff's
``next_attempt_at``, polling, lease ages, store back-off), so a test can drive a long outage with a
:class:`~hub.clock.ManualClock`. The store compares ``next_attempt_at`` with its own time when it claims.
Shutdown grace periods stay on the real clock.

On shutdown the worker stops claiming, gives back what it had queued, lets
in-flight sends finish for a grace period, then cancels the rest and gives
their deliveries back to the store.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from hub.clock import Clock, SystemClock
from hub.config import DestinationPolicy, RetryPolicy
from hub.documents import apply_steps
from hub.errors import (
    AwaitingIdentity,
    DeliveryError,
    IdentityHold,
    MessageError,
    Outcome,
    Rejected,
    StoreError,
    Unreachable,
)
from hub.identity import IdentityStatus
from hub.message import Message
from hub.outcomes import FinalOutcome
from hub.pipeline import Pipeline, StepContext
from hub.ports import OutboundAdapter
from hub.replies import PeerReply
from hub.statuses import DeliveryStatus
from hub.store import Claimed, DeliveryStore, IdentityRecord, SearchStore, SentPayload
from hub.supervisor import Supervisor

__all__ = ["DestinationWorker", "backoff_secs"]

log = structlog.get_logger("hub.delivery")

#: First delay between probes of a destination that cannot be reached (seconds); the cap is per policy.
PROBE_FIRST_SECS = 1.0
#: Backoff after a store error (first, cap), so that a database outage costs no CPU.
STORE_BACKOFF_FIRST_SECS = 0.2
STORE_BACKOFF_MAX_SECS = 5.0
#: Deliveries a worker may have between claim and recorded outcome, as a multiple of max_in_flight.
_RECORDING_FACTOR = 4
#: Deliveries claimed ahead of free send slots (held in the worker's local queue), as a multiple of max_in_flight.
PREFETCH_FACTOR = 1


def backoff_secs(policy: RetryPolicy, attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before the next attempt after `attempts` failed ones: exponential, capped, with jitter."""
    base = min(policy.max_secs, policy.initial_secs * policy.multiplier ** max(attempts - 1, 0))
    return max(0.0, base * (1 + policy.jitter * (2 * rand() - 1)))


class WorkerStore(DeliveryStore, SearchStore, Protocol):
    """What a delivery worker needs of the store: its queue, and the search its steps' document versions use."""


class DestinationWorker:
    def __init__(
        self,
        *,
        store: WorkerStore,
        route: str,
        policy: DestinationPolicy,
        adapter: OutboundAdapter,
        pipeline: Pipeline,
        owner: str,
        lease_secs: float,
        step_executor: Executor | None = None,
        poll_secs: float = 1.0,
        on_outcome: Callable[[str, str, Outcome, float, datetime], None] | None = None,
        on_dequeued: Callable[[], None] | None = None,
        on_store_error: Callable[[str], None] | None = None,
        on_dead: Callable[[str, str], None] | None = None,
        identity_lookup: Callable[[str], Awaitable[IdentityRecord | None]] | None = None,
        environment: str = "development",
        on_final: Callable[[FinalOutcome], Awaitable[None]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.identity_lookup = identity_lookup
        self.environment = environment
        self.route = route
        self.policy = policy
        self.destination = policy.destination
        self.adapter = adapter
        self.pipeline = pipeline
        self.owner = owner
        self.lease_secs = lease_secs
        self.step_executor = step_executor
        self.poll_secs = poll_secs
        self.on_outcome = on_outcome
        self.on_dequeued = on_dequeued
        self.on_store_error = on_store_error
        self.on_dead = on_dead
        self.on_final = on_final
        self.wake = asyncio.Event()
        self.paused = False
        self._inflight: dict[asyncio.Task[None], int] = {}
        # Deliveries whose send has not returned yet: what max_in_flight bounds. A delivery leaves it as
        # soon as the adapter answers, while its outcome is still being recorded (group-committed), so the
        # next sends do not wait on the store's commit; FIFO per key is the store's, which does not offer
        # a key's next delivery before this one's outcome is committed.
        self._sending: set[int] = set()
        # Claimed ahead of a free send slot, in claim order (see the module docstring: claiming ahead).
        self._ready: deque[Claimed] = deque()
        self.prefetch = PREFETCH_FACTOR * policy.max_in_flight
        self.given_back = 0  # deliveries claimed ahead then released unsent (circuit open, pause, stop)
        self._stopping = False
        self._claimed_at = self.clock.now()
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        #: Monotonic time until which each held delivery's lease is known good (claim or last renewal).
        self._lease_until: dict[int, float] = {}
        # Circuit: set while the destination cannot be reached.
        self.down_since: datetime | None = None
        self.down_reason = ""
        self.probe_max_secs = policy.probe_max_secs
        self.probe_first_secs = min(PROBE_FIRST_SECS, self.probe_max_secs)
        self.probes = 0  # failed probes since this worker started (tests, metrics)
        self._probe_delay = 0.0
        self._next_probe = 0.0
        self._store_backoff = 0.0
        self._orphans_possible = False

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def queued(self) -> int:
        """Deliveries claimed ahead and waiting here for a send slot."""
        return len(self._ready)

    @property
    def queued_ids(self) -> list[int]:
        """Ids of the deliveries claimed ahead, in the order they will be sent."""
        return [c.delivery.id for c in self._ready]

    @property
    def held_leases(self) -> frozenset[int]:
        """Ids of the deliveries this worker holds a lease on (claimed, outcome not yet recorded)."""
        return frozenset(self._lease_until)

    @property
    def name(self) -> str:
        return f"deliver:{self.route}:{self.destination}"

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Start claiming and renewing leases; under `supervisor`, a crash of either restarts it with backoff."""
        if supervisor is None:
            supervisor = Supervisor()
        self._task = supervisor.start(self.name, self._run)
        self._renewer = supervisor.start(f"leases:{self.route}:{self.destination}", self._renew_leases)

    async def stop(self, grace_secs: float) -> None:
        self._stopping = True
        self.wake.set()
        if self._task is not None:
            # The loop ends at its next turn; one waiting to be restarted after a crash is cancelled.
            done, _ = await asyncio.wait([self._task], timeout=1.0)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._give_back_queued("shutdown")
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight), timeout=grace_secs)
            left = {self._inflight[t] for t in pending}
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if left:
                # If the store is down, their leases expire and another node (or our restart) takes them.
                try:
                    await self.store.release(sorted(left), owner=self.owner)
                except StoreError:
                    self._store_error("release")
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def _renew_leases(self) -> None:
        """Keep the leases of every held delivery, every third of a lease; forget those taken back."""
        while True:
            await self.clock.sleep(self.lease_secs / 3)
            ids = list(self._lease_until)
            if not ids:
                continue
            asked_at = self.clock.monotonic()
            try:
                held = await self.store.renew(ids, owner=self.owner, lease_secs=self.lease_secs)
            except StoreError:
                self._store_error("renew")
                continue  # the leases age: sends stop starting once they are half gone
            for delivery_id in ids:
                if delivery_id in held:
                    if delivery_id in self._lease_until:
                        self._lease_until[delivery_id] = asked_at + self.lease_secs
                elif self._lease_until.pop(delivery_id, None) is not None:
                    log.warning("lease_lost", destination=self.destination, delivery_id=delivery_id)

    def _holds_lease(self, delivery_id: int) -> bool:
        """Whether a send may start: the lease was confirmed less than half a lease ago."""
        return self._lease_until.get(delivery_id, 0.0) - self.clock.monotonic() > self.lease_secs / 2

    async def _run(self) -> None:
        clock = self.clock
        while not self._stopping:
            await asyncio.sleep(0)  # let the sends that ended in this turn free their slots: fewer, fuller claims
            if self._ready and (self.down_since is not None or self.paused):
                # Nothing claimed ahead waits on a worker that will not send it now (any node may take it).
                await self._give_back_queued("circuit open" if self.down_since is not None else "paused")
            self._start_queued()
            free = self._room()
            claimed: list[Claimed] = []
            if self._orphans_possible and not await self._release_orphans():
                await self._store_pause()
                continue
            self._claimed_at = clock.now()
            if free > 0 and not self.paused:
                if self.down_since is not None:
                    self._next_probe = clock.monotonic() + self._probe_delay  # the probe's answer may close it
                asked_at = self.clock.monotonic()
                try:
                    claimed = await self.store.claim(
                        self.route,
                        self.destination,
                        limit=free,
                        owner=self.owner,
                        lease_secs=self.lease_secs,
                        hold_behind_dead=self.policy.hold_behind_dead and self.policy.ordering_key is not None,
                    )
                except StoreError as exc:
                    self._store_error("claim")
                    log.warning("claim_failed", route=self.route, destination=self.destination, error=str(exc))
                    self._orphans_possible = True  # the claim may have committed with its answer lost
                    await self._store_pause()
                    continue
                self._store_backoff = 0.0
                for c in claimed:
                    self._lease_until[c.delivery.id] = asked_at + self.lease_secs
                self._ready.extend(claimed)  # in the store's order: next_attempt_at, id
                self._start_queued()
            if claimed and len(claimed) == free and self.down_since is None:
                continue  # the queue may hold more, and there is room: wait for room
            await self._sleep()

    def _start_queued(self) -> None:
        """Start sends from the local queue, oldest first, while there are free slots.

        Circuit open: one probe at a time, and only when nothing else is in flight.
        """
        if self._stopping or self.paused:
            return
        while self._ready:
            if self.down_since is None:
                if len(self._sending) >= self.policy.max_in_flight:
                    return
            elif self._inflight:
                return
            c = self._ready.popleft()
            self._sending.add(c.delivery.id)
            task = asyncio.create_task(self._deliver(c))
            self._inflight[task] = c.delivery.id
            task.add_done_callback(self._done)

    async def _give_back_queued(self, why: str) -> None:
        """Release the deliveries claimed ahead (attempt uncounted) so that they wait on no one."""
        if not self._ready:
            return
        ids = [c.delivery.id for c in self._ready]
        self._ready.clear()
        for delivery_id in ids:
            self._lease_until.pop(delivery_id, None)
        try:
            await self.store.release(ids, owner=self.owner)
        except StoreError:
            self._store_error("release")
            # Given back by release_orphans once the store answers again (or when their leases run out).
            self._orphans_possible = True
        self.given_back += len(ids)
        log.info("queued_released", route=self.route, destination=self.destination, count=len(ids), reason=why)

    async def _release_orphans(self) -> bool:
        keep = [*self._inflight.values(), *(c.delivery.id for c in self._ready)]
        try:
            released = await self.store.release_orphans(self.route, self.destination, owner=self.owner, keep=keep)
        except StoreError:
            self._store_error("release_orphans")
            return False
        self._orphans_possible = False
        if released:
            log.info("orphan_claims_released", route=self.route, destination=self.destination, count=released)
        return True

    def _room(self) -> int:
        """How many more deliveries to claim now, or one probe while the circuit is open.

        Up to max_in_flight being sent plus `prefetch` queued here, within the bound on everything
        held; once the local queue has some, a claim waits until it can take at least half of
        `prefetch` (fewer, fuller claims: each is a round trip and, on SQLite, a write transaction).
        """
        if self.down_since is None:
            room = min(
                self.policy.max_in_flight + self.prefetch - len(self._sending) - len(self._ready),
                _RECORDING_FACTOR * self.policy.max_in_flight - len(self._inflight) - len(self._ready),
            )
            if self._ready and room < max(1, self.prefetch // 2):
                return 0
            return room
        if self._inflight or self._ready or self.clock.monotonic() < self._next_probe:
            return 0
        return 1

    async def _store_pause(self) -> None:
        """Back off after a store error (doubling, capped), waking early only to stop."""
        self._store_backoff = min(STORE_BACKOFF_MAX_SECS, max(STORE_BACKOFF_FIRST_SECS, self._store_backoff * 2))
        self.wake.clear()
        give_up = self.clock.monotonic() + self._store_backoff
        while not self._stopping:
            left = give_up - self.clock.monotonic()
            if left <= 0 or not await self.clock.wait(self.wake, left):
                return
            self.wake.clear()

    def _circuit_open(self, reason: str) -> None:
        """The destination could not be reached: probe it, one delivery at a time, with growing delays."""
        self.probes += 1
        if self.down_since is None:
            self.down_since = self.clock.now()
            self._probe_delay = self.probe_first_secs
            log.warning("destination_down", route=self.route, destination=self.destination, reason=reason)
        else:
            self._probe_delay = min(self.probe_max_secs, self._probe_delay * 2)
        self.down_reason = reason
        self._next_probe = self.clock.monotonic() + self._probe_delay

    def _circuit_close(self) -> None:
        if self.down_since is not None:
            down_for = (self.clock.now() - self.down_since).total_seconds()
            log.info("destination_up", route=self.route, destination=self.destination, down_secs=round(down_for, 1))
        self.down_since = None
        self.down_reason = ""

    def _store_error(self, operation: str) -> None:
        if self.on_store_error is not None:
            self.on_store_error(operation)

    def _done(self, task: asyncio.Task[None]) -> None:
        delivery_id = self._inflight.pop(task, 0)
        self._sending.discard(delivery_id)
        self._lease_until.pop(delivery_id, None)
        self._start_queued()
        self.wake.set()

    def _sent(self, delivery_id: int) -> None:
        self._sending.discard(delivery_id)
        self.wake.set()

    async def _hold(self, c: Claimed, hold: IdentityHold, started: datetime) -> None:
        """Park a delivery until its identity is settled; FIFO per key keeps later ones behind it."""
        try:
            await self._record(
                c.delivery.id,
                status=hold.status,
                next_attempt_at=None,
                error=hold.reason,
                outcome="hold",
                started_at=started,
                review=hold.reason if hold.status == DeliveryStatus.IDENTITY_REVIEW else None,
            )
        except StoreError as exc:
            log.error("hold_not_recorded", delivery_id=c.delivery.id, error=str(exc))
            return
        if self.on_dequeued:
            self.on_dequeued()
        log.info(
            "delivery_held",
            message_id=c.message.id,
            delivery_id=c.delivery.id,
            route=self.route,
            destination=self.destination,
            status=hold.status,
        )

    async def _record(self, delivery_id: int, **outcome: Any) -> bool:
        """store.finish, tried again while the store is away (for up to the lease's length).

        The outcome is known (the peer answered): losing it would send the message again when the
        lease expires. While the delivery stays in flight, its ordering key stays held.
        """
        clock = self.clock
        give_up = clock.monotonic() + self.lease_secs
        delay = STORE_BACKOFF_FIRST_SECS
        while True:
            try:
                return await self.store.finish(delivery_id, owner=self.owner, **outcome)
            except StoreError:
                self._store_error("finish")
                if self._stopping or clock.monotonic() + delay > give_up:
                    raise
            await clock.sleep(delay)
            delay = min(STORE_BACKOFF_MAX_SECS, delay * 2)

    async def _sleep(self) -> None:
        timeout = self.poll_secs
        if self.down_since is not None and not self._inflight:
            timeout = max(0.0, min(timeout, self._next_probe - self.clock.monotonic()))
        elif len(self._sending) < self.policy.max_in_flight and not self.paused:
            try:
                due = await self.store.next_due(self.route, self.destination)
            except StoreError:
                self._store_error("next_due")
                due = None
            # Due before the claim just made, yet not claimed: held back by its ordering key (another
            # node's send, say), so wait for a wake-up rather than spin on it.
            if due is not None and due > self._claimed_at:
                timeout = min(timeout, max(0.0, (due - self.clock.now()).total_seconds()))
        self.wake.clear()
        if timeout <= 0:
            await asyncio.sleep(0)
            return
        await self.clock.wait(self.wake, timeout)

    async def step_context(
        self, message: Message, *, identity_override: bool = False, gate: bool = True
    ) -> StepContext:
        """What the route's steps run with: the patient's identity when a step (or, with `gate`, the
        destination) needs it.

        With `gate`, raise AwaitingIdentity (to hold the delivery) when the destination requires a qualified INS
        the registry does not have; without it (a dry run), the steps run with what the registry has.
        """
        gated = gate and self.policy.require_qualified_ins
        if not (self.pipeline.needs_identity or gated) or self.identity_lookup is None:
            return StepContext(identity_override=identity_override, environment=self.environment)
        key = message.metadata.get("patient_key", "")
        record = await self.identity_lookup(key) if key else None
        if gated and (record is None or record.status != IdentityStatus.QUALIFIEE or not record.ins):
            why = "no identity in the registry" if record is None else f"identity is {record.status}, not qualifiee"
            raise AwaitingIdentity(f"destination requires a qualified INS: {why}")
        return StepContext(identity=record, identity_override=identity_override, environment=self.environment)

    async def run_steps(self, message: Message, ctx: StepContext) -> Message:
        """The route's steps on `message`, in the step executor (on the loop once known to be short: see
        :func:`hub.documents.runs_inline`); a correction's step may ask for the
        versions the hub sent (hub/documents.py). The one place a delivery's steps run (the admin API's
        dry run too)."""
        return await apply_steps(self.pipeline, message, ctx, self.store, self.step_executor)

    def _identity_basis(self, ctx: StepContext) -> str:
        """Which identity the steps run against (see SentPayload.basis): "" when they read none."""
        if not self.pipeline.needs_identity:
            return ""
        return f"v{ctx.identity.version}" if ctx.identity is not None else "-"

    async def _outgoing(self, c: Claimed) -> tuple[Message, SentPayload | None, dict[str, str] | None]:
        """(the message to send, its SentPayload when computed now, the metadata the steps added).

        An earlier attempt's output is reused while the identity it was computed with is current.
        """
        ctx = await self.step_context(c.message, identity_override=c.delivery.identity_override)
        if not self.pipeline:  # no step: the inbound message is what is sent, nothing to keep
            return c.message, None, None
        basis = self._identity_basis(ctx)
        if c.sent is not None and c.sent.basis == basis:
            return c.sent.message(c.message), None, None
        message = await self.run_steps(c.message, ctx)
        before = c.message.metadata
        output = {k: v for k, v in message.metadata.items() if before.get(k) != v}
        return message, SentPayload.of(c.delivery.id, c.message, message, basis), output

    async def _deliver(self, c: Claimed) -> None:
        d = c.delivery
        started = self.clock.now()
        error = ""
        retry_after: float | None = None
        hold: IdentityHold | None = None
        output: dict[str, str] | None = None
        sent: SentPayload | None = None
        reply: PeerReply | None = None
        reached = True
        try:
            message, sent, output = await self._outgoing(c)
            if not self._holds_lease(d.id):
                # Taken back, or not renewed for half a lease (cut off from the store): another worker
                # may be sending it now. Not ours to send, nor to record.
                log.warning("send_skipped_lease_lost", destination=self.destination, delivery_id=d.id)
                return
            reply = await self.adapter.send(message)
            outcome = Outcome.ACCEPT
        except IdentityHold as exc:
            hold, outcome, error = exc, Outcome.RETRY, exc.reason
        except MessageError as exc:
            outcome, error = Outcome.REJECT, f"step refused the message: {exc.reason}"
        except Rejected as exc:
            outcome, error, reply = Outcome.REJECT, str(exc), exc.reply
        except Unreachable as exc:
            outcome, error, reached = Outcome.RETRY, f"destination unreachable: {exc}", False
        except DeliveryError as exc:
            outcome, error, reply = Outcome.RETRY, str(exc), exc.reply
            retry_after = getattr(exc, "retry_after_secs", None)
        except StoreError as exc:
            self._store_error("identity_lookup")
            outcome, error = Outcome.RETRY, f"identity look-up failed: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an adapter bug must not kill the worker: retry, and say so
            outcome, error = Outcome.RETRY, f"adapter error: {type(exc).__name__}"
            log.error("adapter_error", destination=self.destination, delivery_id=d.id, error=type(exc).__name__)
        self._sent(d.id)
        if hold is not None:
            self._start_queued()
            await self._hold(c, hold, started)
            return
        if reached:
            self._circuit_close()
        else:
            self._circuit_open(error)
        self._start_queued()  # the slot goes to the next queued delivery now, not after the outcome's commit
        status, next_at = self._next_status(c, outcome, reached=reached, retry_after=retry_after)
        elapsed = (self.clock.now() - started).total_seconds()
        if self.on_outcome:
            self.on_outcome(self.route, self.destination, outcome, elapsed, c.message.received_at)
        try:
            kept = await self._record(
                d.id,
                status=status,
                next_attempt_at=next_at,
                error=error,
                outcome=outcome.value,
                started_at=started,
                output_metadata=output,
                count_attempt=reached,
                sent=sent,
                reply=self._kept(reply),
            )
        except StoreError as exc:
            log.error("outcome_not_recorded", delivery_id=d.id, error=str(exc))
            return
        await self._recorded(c, kept, status, outcome, error)

    def _kept(self, reply: object) -> PeerReply | None:
        """The peer's reply as stored: cut to the route's bound (anything but a PeerReply is not one)."""
        return reply.capped(self.policy.reply_max_bytes) if isinstance(reply, PeerReply) else None

    def _next_status(
        self, c: Claimed, outcome: Outcome, *, reached: bool, retry_after: float | None
    ) -> tuple[DeliveryStatus, datetime | None]:
        """The delivery's status after this attempt, and when to try again if it stays pending."""
        d = c.delivery
        if outcome is Outcome.ACCEPT:
            return DeliveryStatus.DELIVERED, None
        if not reached:
            # an outage: the attempt is given back and the circuit decides when to probe
            return DeliveryStatus.PENDING, None
        if outcome is Outcome.RETRY and d.attempts < d.max_attempts:
            delay = backoff_secs(self.policy.retry, d.attempts)
            if retry_after:
                delay = max(delay, retry_after)
            return DeliveryStatus.PENDING, self.clock.now() + timedelta(seconds=delay)
        return DeliveryStatus.DEAD, None

    async def _recorded(self, c: Claimed, kept: bool, status: DeliveryStatus, outcome: Outcome, error: str) -> None:
        """What follows a recorded outcome: queue gauges, the final-outcome hook, dead-letter counts and logs."""
        d = c.delivery
        if kept and status != DeliveryStatus.PENDING and self.on_dequeued:
            self.on_dequeued()
        final = status in (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD)
        if kept and final and self.on_final and c.message.metadata.get("on_final"):
            await self.on_final(FinalOutcome(c.message, self.destination, status, error))
        if not kept:
            log.warning("lease_lost", delivery_id=d.id, destination=self.destination)
        elif status == DeliveryStatus.DEAD:
            if self.on_dead is not None:
                self.on_dead(self.route, self.destination)
            log.warning(
                "delivery_dead",
                message_id=c.message.id,
                delivery_id=d.id,
                route=self.route,
                destination=self.destination,
                attempts=d.attempts,
                outcome=outcome.value,
            )
