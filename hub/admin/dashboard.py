"""What the dashboard says about a queue: its state, whether it needs someone, and what to do.

One (route, destination) queue is, in order of precedence:

=========  ==================================================================================
down       the destination cannot be reached (the delivery worker's circuit is open, since when)
failing    deliveries are being retried after errors the destination answered
paused     an operator stopped sending (kept across restarts)
held       deliveries wait for the patient's identity (a qualified INS, or an identity review)
running    none of the above
=========  ==================================================================================

``attention`` is ``alert`` when someone should act now (down, failing, dead
letters), ``warn`` when something waits on a person (paused, held), else empty;
the dashboard sorts and colours rows by it, and ``advice`` says what to do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hub.statuses import DeliveryStatus
from hub.store import QueueStats

__all__ = ["QueueState", "queue_state"]

_RANK = {"alert": 0, "warn": 1, "": 2}


@dataclasses.dataclass(frozen=True, slots=True)
class QueueState:
    state: str
    attention: str
    advice: str

    @property
    def rank(self) -> int:
        return _RANK[self.attention]


def queue_state(q: QueueStats | None, worker: Any) -> QueueState:
    """The state of one queue from the store's counts and this node's worker (None if it runs elsewhere)."""
    dead = q.dead if q else 0
    held = q.held if q else 0
    down_since = getattr(worker, "down_since", None) if worker is not None else None
    advice: list[str] = []
    if down_since is not None:
        state = "down"
        advice.append(
            f"destination unreachable since {down_since:%Y-%m-%d %H:%M:%S} UTC: check the peer and the network; "
            "deliveries wait and go out when it answers"
        )
    elif q and q.retrying:
        state = "failing"
        advice.append(f"{q.retrying} being retried: read the last error; fix the peer or the route")
    elif worker is not None and worker.paused:
        state = "paused"
    elif held:
        state = "held"
    else:
        state = "running"
    if worker is not None and worker.paused:
        advice.append("paused by an operator: resume to send")
    if dead:
        advice.append(f"{dead} dead letter{'s' if dead > 1 else ''}: fix the cause, then requeue or discard")
    if held:
        advice.append(f"{held} waiting for the patient's identity: see the identity review, or an ADT qualifying it")
    if state in ("down", "failing") or dead:
        attention = "alert"
    elif state in ("paused", "held") or held:
        attention = "warn"
    else:
        attention = ""
    return QueueState(state, attention, "; ".join(advice))


def waiting_reason(
    delivery: Any,
    worker: Any,
    *,
    review_id: int | None = None,
    identity_status: str | None = None,
    dead_ahead: int | None = None,
) -> str:
    """Why a delivery that is not delivered yet waits, in a sentence ("" when it is done or simply queued)."""
    status = delivery.status
    if status == DeliveryStatus.IDENTITY_REVIEW:
        return f"waiting behind identity review {review_id}" if review_id else "waiting for an identity review"
    if status == DeliveryStatus.AWAITING_IDENTITY:
        have = f" (the registry has it as {identity_status})" if identity_status else " (not in the registry yet)"
        return f"awaiting a qualified identity{have}: sent when an ADT qualifies it"
    if status == DeliveryStatus.DEAD:
        return "dead letter: requeue or discard it once the cause is fixed"
    if status not in (DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT):
        return ""
    if worker is not None and worker.down_since is not None:
        return f"destination down since {worker.down_since:%Y-%m-%d %H:%M:%S} UTC: sent when it answers"
    if worker is not None and worker.paused:
        return "the queue is paused: sent after resume"
    if dead_ahead:
        return f"held behind dead letter {dead_ahead} (same ordering key): requeue or discard it first"
    if status == DeliveryStatus.PENDING and delivery.attempts:
        return f"retrying after {delivery.attempts} failed attempt(s); next at {delivery.next_attempt_at:%H:%M:%S} UTC"
    return ""
