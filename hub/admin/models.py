"""Request and response bodies of the admin API; their JSON Schemas are the OpenAPI components.

Handlers build every response through these models, so the document at
``/api/openapi.json`` describes what the API really returns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hub.statuses import MessageStatusName, ReviewState, ReviewStateName

__all__ = [
    "AuditEntry",
    "AuditPage",
    "AuditParams",
    "AuditVerify",
    "BulkReplayRequest",
    "BulkReplayResult",
    "DeadLetter",
    "DeadPage",
    "DeadParams",
    "DeliveryTrace",
    "DeliveryView",
    "EndpointsView",
    "ErrorBody",
    "IdentityList",
    "IdentityParams",
    "IdentitySummary",
    "IdentityView",
    "LoginRequest",
    "LoginResult",
    "MessageSummary",
    "PauseRequest",
    "PauseResult",
    "Payload",
    "QueueView",
    "ReplayRequest",
    "ReplayResult",
    "ReplySummary",
    "ReplyView",
    "RequeueRequest",
    "RequeueResult",
    "ResolveRequest",
    "ReviewDetail",
    "ReviewList",
    "ReviewParams",
    "ReviewView",
    "SearchPage",
    "SearchParams",
    "StatsParams",
    "StatsView",
    "StepOutput",
    "Trace",
    "Whoami",
]


#: Largest row id a cursor may name (SQLite INTEGER and PostgreSQL bigint are 64-bit signed).
_MAX_ID = 2**63 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------------------
class SearchParams(_In):
    """Message search: every filter is index-backed; results are newest first."""

    ins: str | None = Field(
        None,
        max_length=64,
        description="INS (NIR/NIA): messages carrying it, stamped with it, or of a local identity the registry "
        "maps to it.",
    )
    ipp: str | None = Field(None, max_length=64, description="Local patient id (IPP), in any assigning authority.")
    patient_key: str | None = Field(None, max_length=200, description="Exact patient key, `IPP@authority`.")
    control_id: str | None = Field(None, max_length=200, description="HL7 v2 MSH-10 message control id.")
    document_id: str | None = Field(None, max_length=256, description="Document uniqueId (`root^extension`).")
    status: MessageStatusName | None = Field(None, description="Message status.")
    message_type: str | None = Field(None, max_length=64, description="HL7 MSH-9 as `ADT^A01`, or a resource type.")
    sending_app: str | None = Field(None, max_length=200, description="HL7 MSH-3.")
    sending_facility: str | None = Field(None, max_length=200, description="HL7 MSH-4.")
    correlation_id: str | None = Field(None, max_length=64, description="Correlation id (the original inbound id).")
    since: datetime | None = Field(None, description="Received at or after (ISO 8601).")
    until: datetime | None = Field(None, description="Received before (ISO 8601).")
    before: str | None = Field(None, max_length=64, description="Paging cursor: `next_before` of the previous page.")
    limit: int = Field(50, ge=1, le=200, description="Page size.")


class DeadParams(_In):
    destination: str | None = Field(None, max_length=200, description="Only this destination's dead letters.")
    after: int = Field(0, ge=0, le=_MAX_ID, description="Paging cursor: `next_after` of the previous page.")
    limit: int = Field(100, ge=1, le=1000, description="Page size.")


class IdentityParams(_In):
    status: str | None = Field(None, max_length=32, description="Only identities with this RNIV status.")
    limit: int = Field(1000, ge=1, le=10_000, description="Most identities listed (by patient key).")


class ReviewParams(_In):
    state: ReviewStateName | None = Field(ReviewState.OPEN, description="Review state.")
    limit: int = Field(200, ge=1, le=10_000, description="Most reviews listed.")


class AuditParams(_In):
    before: int | None = Field(None, ge=1, le=_MAX_ID, description="Paging cursor: `next_before` of the previous page.")
    message_id: str | None = Field(None, max_length=64, description="Entries about this message.")
    actor: str | None = Field(None, max_length=200, description="Entries of this user or token.")
    limit: int = Field(100, ge=1, le=1000, description="Page size.")


class LoginRequest(_In):
    username: str = Field(max_length=200, description="Login name (admin.users).")
    password: str = Field(max_length=1024, description="Password.")


class ReplayRequest(_In):
    body: str | None = Field(
        None,
        max_length=16 * 2**20,
        description="Corrected message text to replay instead of the stored body (HL7 v2 line ends may be LF).",
    )
    destinations: list[str] | None = Field(
        None,
        max_length=100,
        description="Replay only to these of the message's destinations (e.g. the one that failed), so that "
        "systems that already have it do not get it twice. Unset: every destination its routes give.",
    )


class BulkReplayRequest(_In):
    filter: SearchParams = Field(description="Which messages (search filters; `limit`/`before` are ignored).")
    limit: int = Field(100, ge=1, description="Most messages to replay (capped by admin.max_bulk).")
    dry_run: bool = Field(False, description="Only list what would be replayed.")


class RequeueRequest(_In):
    delivery_ids: list[int] = Field(default_factory=list, max_length=100_000, description="Dead deliveries.")
    all_dead: bool = Field(False, description="Every dead delivery (of `destination` when given), up to max_bulk.")
    destination: str | None = Field(None, description="With all_dead: only this destination's.")
    dry_run: bool = Field(False, description="Only count what would be requeued (`matched`); nothing changes.")


class PauseRequest(_In):
    route: str | None = Field(None, description="Only this route's worker for the destination (default: all).")


class ResolveRequest(_In):
    action: Literal["release", "discard"] = Field(
        description="release: send it, the trait check waived for it; discard: dead-letter it."
    )


# -- responses -----------------------------------------------------------------------------------------
class ErrorBody(_Out):
    error: str = Field(description="What went wrong.")
    detail: Any = Field(None, description="Details (validation problems, the role needed...).")


class Whoami(_Out):
    name: str
    role: Literal["viewer", "operator", "admin"]
    kind: Literal["token", "session", "bootstrap"]


class LoginResult(Whoami):
    token: str = Field(description="Session token, to send as `Authorization: Bearer <token>`.")
    expires_at: datetime


class DeliveryView(_Out):
    id: int
    route: str
    destination: str
    status: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    last_error: str
    updated_at: datetime
    output_metadata: dict[str, str] = Field(description="What the route's steps added (e.g. the INS stamped, why).")


class MessageSummary(_Out):
    id: str
    status: str
    reason: str = Field(description="Why it was refused (status rejected).")
    endpoint: str
    control_id: str
    message_type: str
    sending_app: str
    sending_facility: str
    patient_key: str
    received_at: datetime
    correlation_id: str
    parent_id: str | None
    content_type: str
    size: int = Field(description="Body size in bytes.")
    deliveries: list[DeliveryView]
    derived: list[dict[str, str]] = Field(
        default_factory=list,
        description="For a message that went on as others (an MSSanté mail as its documents): {id, status, "
        "message_type} of each message derived from it.",
    )
    effective_status: str = Field(
        "", description="The status to show: the message's own, or for one with no delivery of its own, that of "
        "what was derived from it (e.g. a mail whose documents were delivered)."
    )


class SearchPage(_Out):
    items: list[MessageSummary]
    next_before: str | None = Field(description="Pass as `before` for the next (older) page; null at the end.")


class ReplySummary(_Out):
    """What the destination's peer answered to one attempt, without its bytes (the `sent` operation shows them)."""

    kind: str = Field(description="How it came: hl7v2-ack, http, smtp, local (the hub's own destination).")
    summary: str = Field(description="The verdict read from it: MSA-1, the HTTP status, the SMTP codes.")
    content_type: str
    size: int = Field(description="Bytes the peer sent.")
    truncated: bool = Field(description="Only the first reply_max_bytes (the route's setting) were kept.")
    received_at: datetime


class AttemptView(_Out):
    number: int
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    outcome: str = Field(description="accept, retry, reject, or hold (identity).")
    error: str
    acknowledgement: str = Field(description="What the peer answered, as far as the adapter reported it.")
    reply: ReplySummary | None = Field(
        None, description="The peer's reply to this attempt (none: it did not answer, e.g. a time-out)."
    )


class ReplyView(ReplySummary):
    """One attempt's reply with its bytes, decoded."""

    number: int = Field(description="The attempt it answered.")
    outcome: str
    encoding: str = Field(description="As in Payload: the character set `text` was read with, or base64.")
    text: str = Field(description="The reply's bytes as kept, decoded.")


class SentSummary(_Out):
    content_type: str
    size: int
    changed: bool = Field(description="The steps changed the body (false: the inbound bytes were sent as they came).")
    computed_at: datetime = Field(description="When the steps ran (once; retries resend this output).")
    sent_id: str = Field(description="The outgoing message's id (an idempotency key downstream).")


class DeliveryTrace(DeliveryView):
    sent: SentSummary | None = Field(
        None, description="What this delivery sends, computed by its first attempt (body: the `sent` operation)."
    )
    ordering_key: str | None
    created_at: datetime
    identity_override: bool
    held_behind_dead: int | None = Field(
        None,
        description="Waiting behind this dead letter of the same ordering key (requeue or discard it to go on).",
    )
    attempts_log: list[AttemptView]
    waiting_reason: str = Field(
        "", description="Why it is not delivered yet: behind review N, awaiting a qualified identity, destination "
        "down, paused, held behind dead letter X, retrying; empty when delivered or simply queued."
    )


class ReviewView(_Out):
    review_id: int
    delivery_id: int
    message_id: str
    patient_key: str
    reason: str
    state: ReviewStateName
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str
    route: str = Field("", description="The route of the delivery waiting on this review.")
    destination: str = Field("", description="The destination waiting on this review.")


class TraitRow(_Out):
    trait: str = Field(description="Strict trait (StrictTraits field name).")
    label: str
    registry: str = Field(description="The registry's value (masked `•••` for the viewer role).")
    message: str = Field(description="The message's value (masked `•••` for the viewer role).")
    differs: bool


class ReviewDetail(_Out):
    review: ReviewView
    identity_status: str | None = Field(description="The registry's RNIV status for the patient key.")
    ins_known: bool = Field(description="The registry holds an INS for it.")
    traits: list[TraitRow] = Field(description="The registry's value beside the message's, trait by trait.")
    masked: bool = Field(description="Values are masked (viewer role); the operator role sees them (audited).")
    waiting: list[ReviewView] = Field(
        description="Every open review of the same message: one per destination waiting on the decision."
    )


class ReviewList(_Out):
    items: list[ReviewView]


class Trace(_Out):
    message: MessageSummary
    metadata: dict[str, str] = Field(description="Inbound metadata (routing keys read from the message).")
    deliveries: list[DeliveryTrace]
    related: list[MessageSummary] = Field(description="Messages with the same correlation id (replays, splits).")
    reviews: list[ReviewView]


class Payload(_Out):
    message_id: str
    content_type: str
    size: int
    encoding: str = Field(
        description="How `text` was read from the body: a character set (utf-8, latin-1, ...; for HL7 v2 the one "
        "its MSH-18 declares) or base64 when the body is not text."
    )
    text: str = Field(description="The body, decoded (or base64 when it is not text).")


class SentView(_Out):
    message_id: str
    delivery_id: int
    route: str
    destination: str
    sent_id: str = Field(description="The outgoing message's id, the same at every attempt.")
    content_type: str
    size: int
    encoding: str = Field(description="As in Payload: the character set `text` was read with, or base64.")
    text: str = Field(description="The bytes this delivery sent (and resends on retry), decoded.")
    changed: bool = Field(description="The steps changed the body.")
    metadata_added: dict[str, str] = Field(description="Metadata the steps added or changed.")
    computed_at: datetime = Field(
        description="When the route's steps produced it (the first attempt, or the first after the patient's "
        "identity record changed, or after a requeue)."
    )
    replies: list[ReplyView] = Field(
        default_factory=list,
        description="What the destination's peer answered, attempt by attempt (those it answered), beside what was "
        "sent: the ACK, the HTTP body (an OperationOutcome, a SOAP RegistryResponse), the SMTP reply lines.",
    )


class StepOutput(_Out):
    message_id: str
    delivery_id: int
    steps: list[str] = Field(description="The route's steps, applied in order to the stored message.")
    content_type: str
    size: int
    encoding: str = Field(description="As in Payload: the character set `text` was read with, or base64.")
    text: str = Field(description="What the steps produce from the stored message now (the 'after' view).")
    metadata_added: dict[str, str] = Field(description="Metadata the steps added or changed.")


class ReplayResult(_Out):
    replayed: str = Field(description="The stored message replayed.")
    new_id: str
    deliveries: int


class BulkReplayResult(_Out):
    dry_run: bool
    matched: list[str]
    replayed: list[ReplayResult]
    errors: list[dict[str, str]] = Field(description="Messages still refused: {message_id, error}.")


class DeadLetter(_Out):
    delivery_id: int
    message_id: str
    route: str
    destination: str
    attempts: int
    last_error: str
    updated_at: datetime


class DeadPage(_Out):
    items: list[DeadLetter]
    next_after: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class RequeueResult(_Out):
    requeued: int
    matched: int = Field(0, description="Deliveries the request names (what a dry run would requeue).")
    more: bool = Field(description="all_dead stopped at admin.max_bulk; call again for the rest.")


class PauseResult(_Out):
    destination: str
    workers: list[dict[str, Any]] = Field(description="Each worker of the destination: {route, paused}.")


class ReloadView(_Out):
    applied: bool = Field(description="Whether the new routes are in force.")
    reason: str = Field(description="Why the reload was refused (empty when applied).")
    problems: list[str] = Field(description="`hub check` problems of the new configuration, as file:line: text.")
    added: list[str] = Field(description="route/destination queues added.")
    removed: list[str] = Field(description="route/destination queues removed: they deliver what they hold, no more.")
    changed: list[str] = Field(
        description="route/destination queues whose delivery policy or endpoint changed (new worker)."
    )
    endpoints: list[str] = Field(
        description="Endpoints added (`+name`), changed (`~name`: a new adapter took over its queues) or removed (`-`)."
    )
    listeners: list[str] = Field(description="Listeners started (`+name`), restarted (`~name`) or stopped (`-name`).")
    diff: str = Field(description="Unified diff of the route and table files, as recorded in the audit trail.")


class QueueView(_Out):
    route: str
    destination: str
    depth: int = Field(description="Deliveries waiting, retries included.")
    retrying: int
    in_flight: int
    held: int = Field(description="Waiting for the patient's identity (qualified INS or review).")
    dead: int
    oldest_age_secs: float | None
    paused: bool | None = Field(description="This node's worker paused; null when no worker runs the queue here.")
    failing: bool = Field(description="Deliveries are being retried after failures.")
    down_since: datetime | None = Field(
        None, description="The destination cannot be reached since then (circuit open, probed; no attempt counted)."
    )
    down_reason: str = Field("", description="Why the last probe failed (connection refused, TLS, time-out).")
    outcomes: dict[str, int] = Field(description="Attempts by outcome since this node started.")
    state: Literal["down", "failing", "paused", "held", "running"] = Field(
        "running", description="down (unreachable, see down_since), failing, paused, held (identity), running."
    )
    attention: Literal["alert", "warn", ""] = Field(
        "", description="alert: someone should act now; warn: something waits on a person; empty: fine."
    )
    advice: str = Field("", description="What to do about it, in a sentence.")
    last_error: str = Field("", description="Newest error of a delivery still waiting or dead.")
    last_error_at: datetime | None = Field(None, description="When that error happened.")


class StatsParams(_In):
    hours: int = Field(24, ge=1, le=24 * 31, description="How many hours back, this one included.")


class StatsView(_Out):
    hours: list[datetime] = Field(description="The start of each hour (UTC), oldest first.")
    series: dict[str, list[int]] = Field(
        description="Per counter (received, delivered, failed, dead, rejected), one count per hour: received and "
        "rejected are messages taken by listeners, the others deliveries."
    )
    totals: dict[str, int] = Field(description="The series summed.")
    queues: list[dict[str, Any]] = Field(
        description="Per (route, destination) over the period: received (deliveries routed), delivered, failed "
        "(attempts to retry), dead; listeners have route \"\" and received/rejected."
    )


class ListenerView(_Out):
    name: str
    type: str
    describe: dict[str, Any]
    counters: dict[str, int] = Field(description="received, accepted, duplicates, rejected, refused.")


class EndpointView(_Out):
    name: str
    type: str
    describe: dict[str, Any]


class RouteDestination(_Out):
    destination: str
    paused: bool | None
    in_flight: int
    outcomes: dict[str, int]


class RouteView(_Out):
    route: str
    description: str
    from_: list[str] = Field(alias="from")
    when: dict[str, Any]
    steps: list[str]
    destinations: list[RouteDestination]

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class EndpointsView(_Out):
    node: str
    undelivered: int
    counters: dict[str, int]
    listeners: list[ListenerView]
    endpoints: list[EndpointView]
    routes: list[RouteView]


class IdentityEventView(_Out):
    at: datetime
    event: str
    message_id: str | None
    status: str
    note: str


class IdentitySummary(_Out):
    patient_key: str
    authority: str
    local_id: str
    status: str = Field(description="RNIV status: provisoire, recuperee, validee, qualifiee.")
    ins: str | None
    ins_oid: str | None
    attributes: list[str] = Field(description="RNIV attributes (DOUT, FICT, HOMA).")
    merged_into: str | None
    version: int
    updated_at: datetime | None


class IdentityList(_Out):
    items: list[IdentitySummary]


class IdentityView(IdentitySummary):
    history: list[IdentityEventView]
    awaiting_identity: list[str] = Field(description="Messages held until this identity is qualified.")


class AuditEntry(_Out):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    message_id: str | None
    target: str
    detail: dict[str, Any]
    outcome: str
    prev_hash: str
    hash: str


class AuditPage(_Out):
    items: list[AuditEntry]
    next_before: int | None


class AuditVerify(_Out):
    ok: bool
    checked: int
    head_id: int
    head_hash: str
    first_bad_id: int | None
    problem: str
    keyed: int


class ContentSearchParams(_In):
    """Content search: a substring of the stored payloads, or an HL7 v2 field value, over a time window."""

    text: str = Field(
        min_length=3,
        max_length=200,
        description="Text to find in the payloads (case-insensitive, 3 characters or more), or an HL7 v2 field "
        "condition such as `PID-5.1=DUPONT` (segment-field[.component[.subcomponent]]=value). Never recorded.",
    )
    since: datetime | None = Field(None, description="Received at or after (ISO 8601); default: 24 h before `until`.")
    until: datetime | None = Field(None, description="Received before (ISO 8601); default: now. At most 31 days.")
    limit: int = Field(50, ge=1, le=200, description="Most results returned.")


class ContentSearchPage(_Out):
    items: list[MessageSummary] = Field(description="Newest first.")
    since: datetime
    until: datetime
    truncated: bool = Field(description="More messages matched than `limit`: narrow the window or the text.")
    index_pending: int = Field(
        0,
        description="Messages committed but not yet in the content index (indexing follows the commit), counted "
        "when the oldest of them was received before `until`: while not 0, the result may miss them; search again "
        "in a moment.",
    )
    index_pending_since: datetime | None = Field(None, description="When the oldest of them was received.")
