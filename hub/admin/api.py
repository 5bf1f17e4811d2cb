"""The admin API under ``/api``: one table of operations, mounted on the hub's aiohttp app.

Each :class:`Operation` names its method, path, minimum role, query and body
models and response model; :func:`mount` registers them behind one guard
(authentication, role, validation, error mapping) and the OpenAPI document
(``/api/openapi.json``, :mod:`hub.admin.openapi`) is written from the same
table. The API offers what the CLI does (``hub messages/show/replay/dead/
requeue/identity``) plus queues, pause/resume and the audit trail.

Every payload view and every action appends to the audit trail *before* it
happens, so that nothing is done or shown unrecorded: if the entry cannot be
written, the request fails with 503. A refused action (403) is recorded too.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.admin import audit, content_search
from hub.admin.auth import Authenticator, Principal, bootstrap_token_path, load_or_create_bootstrap_token
from hub.admin.dashboard import queue_state, waiting_reason
from hub.admin.models import (
    AuditEntry,
    AuditPage,
    AuditParams,
    AuditVerify,
    BulkReplayRequest,
    BulkReplayResult,
    ContentSearchPage,
    ContentSearchParams,
    DeadLetter,
    DeadPage,
    DeadParams,
    DeliveryTrace,
    DeliveryView,
    EndpointsView,
    IdentityList,
    IdentityParams,
    IdentitySummary,
    IdentityView,
    LoginRequest,
    LoginResult,
    MessageSummary,
    PauseRequest,
    PauseResult,
    Payload,
    QueueView,
    ReloadView,
    ReplayRequest,
    ReplayResult,
    ReplySummary,
    ReplyView,
    RequeueRequest,
    RequeueResult,
    ResolveRequest,
    ReviewDetail,
    ReviewList,
    ReviewParams,
    ReviewView,
    SearchPage,
    SearchParams,
    SentSummary,
    SentView,
    StatsParams,
    StatsView,
    StepOutput,
    Trace,
    TraitRow,
    Whoami,
)
from hub.admin.reviews import compare, message_traits
from hub.environments import HubEnvironment
from hub.errors import IdentityHold, MessageError, StoreError
from hub.replies import PeerReply
from hub.runtime import ReplayTargetError
from hub.stats import summarise
from hub.statuses import DeliveryStatus, MessageStatus, ReviewState
from hub.store import (
    Attempt,
    ContentQuery,
    Delivery,
    IdentityStore,
    MessageRecord,
    SearchQuery,
    SearchStore,
    SentPayload,
    Store,
)
from hub.store.base import CONTENT_MIN_CHARS, searchable_text

if TYPE_CHECKING:
    from hub.runtime import Hub

__all__ = ["ADMIN_KEY", "OPERATIONS", "AdminState", "Operation", "mount"]

log = structlog.get_logger("hub.admin")


@dataclasses.dataclass
class AdminState:
    hub: Hub
    auth: Authenticator
    openapi: dict[str, Any] = dataclasses.field(default_factory=dict)


ADMIN_KEY: web.AppKey[AdminState] = web.AppKey("admin", AdminState)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One authorised request, its validated inputs and who made it."""

    request: web.Request
    hub: Hub
    principal: Principal | None
    query: Any
    body: Any

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal


Handler = Callable[[Call], Awaitable[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One admin API operation: the single source of the route and of its OpenAPI entry."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    role: str | None = "viewer"
    """Minimum role; None: public."""
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = False
    response: type[BaseModel] | None = None
    response_list: bool = False
    path_params: tuple[tuple[str, str, str], ...] = ()
    """(name, JSON type, description)."""
    audited: str = ""
    """The audit action it records, if any."""
    description: str = ""


# -- helpers ---------------------------------------------------------------------------------------------
def _json(model: BaseModel | list[BaseModel] | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        data: Any = model.model_dump(mode="json", by_alias=True)
    elif isinstance(model, list):
        data = [m.model_dump(mode="json", by_alias=True) for m in model]
    else:
        data = model
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def _error(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": error, "detail": detail}, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def _store(call: Call) -> Store:
    store = call.hub.store
    if store is None:
        raise ApiError(503, "store not open")
    return store


def _delivery_view(d: Delivery) -> DeliveryView:
    return DeliveryView(
        id=d.id, route=d.route, destination=d.destination, status=d.status, attempts=d.attempts,
        max_attempts=d.max_attempts, next_attempt_at=d.next_attempt_at, last_error=d.last_error,
        updated_at=d.updated_at, output_metadata=dict(d.output_metadata),
    )  # fmt: skip


def _summary(rec: MessageRecord, deliveries: list[Delivery]) -> MessageSummary:
    m = rec.message
    md = m.metadata
    return MessageSummary(
        id=m.id, status=rec.status, reason=rec.reason, endpoint=rec.endpoint, control_id=md.get("control_id", ""),
        message_type=md.get("message_type", ""), sending_app=md.get("sending_app", ""),
        sending_facility=md.get("sending_facility", ""), patient_key=md.get("patient_key", ""),
        received_at=m.received_at, correlation_id=m.correlation_id, parent_id=m.parent_id,
        content_type=m.content_type, size=len(m.body), deliveries=[_delivery_view(d) for d in deliveries],
    )  # fmt: skip


def _search_query(params: SearchParams, *, limit: int, before: str | None) -> SearchQuery:
    fields = params.model_dump(exclude={"before", "limit"})
    return SearchQuery(**fields, before_id=before, limit=limit)


def _filters_for_audit(params: SearchParams) -> dict[str, Any]:
    return {k: str(v) for k, v in params.model_dump(exclude={"limit", "before"}, exclude_none=True).items()}


def _wake_workers(hub: Hub) -> None:
    for worker in hub.workers.values():
        worker.wake.set()


async def _audit(call: Call, action: str, **kw: Any) -> None:
    """Record before acting; an audit trail that cannot be written stops the request (fail closed)."""
    try:
        await audit.record(_store(call), call.who, action, **kw)
    except StoreError:
        raise ApiError(503, "audit trail unavailable: nothing was done") from None


_TEXT_TYPES = ("text/", "message/")
_TEXT_SUFFIXES = ("+xml", "/xml", "+json", "/json", "+er7")


def _decode(content_type: str, body: bytes) -> tuple[str, str]:
    """(encoding, text) of a payload: through the text codec of its format when it has one (HL7 v2: its MSH-18
    character set), other text as UTF-8, else base64."""
    ct = content_type.split(";")[0].strip().lower()
    codec = registry.get("text", ct)
    if codec is not None:  # a format that declares its own character set (HL7 v2: MSH-18)
        with contextlib.suppress(MessageError):
            return codec.factory.decode(body)  # type: ignore[no-any-return]
    elif ct.startswith(_TEXT_TYPES) or ct.endswith(_TEXT_SUFFIXES):
        with contextlib.suppress(UnicodeDecodeError):
            return "utf-8", body.decode("utf-8")
    return "base64", base64.b64encode(body).decode()


# -- handlers: identity of the caller ------------------------------------------------------------------------
async def _openapi(call: Call) -> dict[str, Any]:
    return call.request.app[ADMIN_KEY].openapi


async def _login(call: Call) -> LoginResult:
    state = call.request.app[ADMIN_KEY]
    req: LoginRequest = call.body
    client = call.request.remote or ""
    attempt = Principal(req.username[:64], "none", "login")
    if state.auth.login_blocked(f"{req.username}|{client}"):
        await _audit_refusal(call, attempt, "login_throttled", client)
        raise ApiError(429, "too many failed logins; wait a few minutes")
    result = await state.auth.login(req.username, req.password, client=client)
    if result is None:
        log.warning("login_failed", client=client)
        await _audit_refusal(call, attempt, "login_failed", client)
        raise ApiError(401, "unknown user or wrong password")
    token, principal, expires = result
    try:
        await audit.record(_store(call), principal, "login")
    except StoreError:
        raise ApiError(503, "audit trail unavailable") from None
    return LoginResult(
        name=principal.name, role=principal.role, kind="session", token=token,  # type: ignore[arg-type]
        expires_at=datetime.fromtimestamp(expires, UTC),
    )  # fmt: skip


async def _audit_refusal(call: Call, who: Principal, action: str, client: str) -> None:
    """A refused login is audited; if the trail cannot be written the refusal stands anyway."""
    try:
        await audit.record(_store(call), who, action, detail={"client": client}, outcome="refused")
    except StoreError:
        log.error("audit_failed", action=action)


async def _whoami(call: Call) -> Whoami:
    return Whoami(name=call.who.name, role=call.who.role, kind=call.who.kind)  # type: ignore[arg-type]


# -- handlers: flows and queues --------------------------------------------------------------------------------
def _describe(component: Any) -> dict[str, Any]:
    describe = getattr(component, "describe", None)
    try:
        return dict(describe()) if callable(describe) else {}
    except Exception:  # a component's description must not break the dashboard
        return {}


async def _endpoints(call: Call) -> EndpointsView:
    hub = call.hub
    cfg = hub.config
    listeners = [
        {
            "name": name, "type": entry.type, "describe": _describe(hub.listeners.get(name)),
            "counters": hub.metrics.endpoint(name).as_dict(),
        }
        for name, entry in cfg.listeners.items()
    ]  # fmt: skip
    endpoints = [
        {"name": name, "type": entry.type, "describe": _describe(hub.endpoints.get(name))}
        for name, entry in cfg.endpoints.items()
    ]
    routes = []
    for route in hub.settings.routes:
        dests = []
        for policy in route.to:
            worker = hub.workers.get((route.route, policy.destination))
            dests.append(
                {
                    "destination": policy.destination,
                    "paused": worker.paused if worker else None,
                    "in_flight": worker.in_flight if worker else 0,
                    "outcomes": _outcomes(hub, route.route, policy.destination),
                }
            )
        routes.append(
            {
                "route": route.route, "description": route.description, "from": route.from_, "when": route.when,
                "steps": [name for name, _ in route.step_specs()], "destinations": dests,
            }
        )  # fmt: skip
    return EndpointsView.model_validate(
        {
            "node": cfg.node, "undelivered": hub.undelivered, "counters": hub.counters, "listeners": listeners,
            "endpoints": endpoints, "routes": routes,
        }
    )  # fmt: skip


def _outcomes(hub: Hub, route: str, destination: str) -> dict[str, int]:
    return {o: n for (r, d, o), n in hub.outcomes.items() if (r, d) == (route, destination)}


async def _queues(call: Call) -> list[QueueView]:
    """Every queue with its state and what to do; those that need someone first (down, failing, dead letters)."""
    hub = call.hub
    store = _store(call)
    stats = {(q.route, q.destination): q for q in await hub.metrics.refresh_queues(store, max_age_secs=0)}
    errors = await store.queue_last_errors()
    keys = list(hub.workers) + [k for k in stats if k not in hub.workers]
    now = datetime.now(UTC)
    out = []
    for route, destination in keys:
        q = stats.get((route, destination))
        worker = hub.workers.get((route, destination))
        state = queue_state(q, worker)
        error, error_at = errors.get((route, destination), ("", None))
        out.append(
            (state.rank, QueueView(
                route=route, destination=destination, depth=q.pending if q else 0, retrying=q.retrying if q else 0,
                in_flight=q.in_flight if q else (worker.in_flight if worker else 0), held=q.held if q else 0,
                dead=q.dead if q else 0,
                oldest_age_secs=max(0.0, (now - q.oldest_at).total_seconds()) if q and q.oldest_at else None,
                paused=worker.paused if worker else None, failing=bool(q and q.retrying),
                outcomes=_outcomes(hub, route, destination), state=state.state,  # type: ignore[arg-type]
                attention=state.attention, advice=state.advice,  # type: ignore[arg-type]
                down_since=worker.down_since if worker else None, down_reason=worker.down_reason if worker else "",
                last_error=error, last_error_at=error_at,
            ))
        )  # fmt: skip
    return [view for _, view in sorted(out, key=lambda item: item[0])]


async def _stats(call: Call) -> StatsView:
    q: StatsParams = call.query
    since = datetime.now(UTC) - timedelta(hours=q.hours - 1)
    rows = [*await _store(call).read_hourly(since), *call.hub.hourly.unflushed()]
    return StatsView.model_validate(summarise(rows, hours=q.hours))


async def _set_paused(call: Call, paused: bool) -> PauseResult:
    destination = call.request.match_info["destination"]
    req: PauseRequest = call.body
    workers = [
        (route, w)
        for (route, dest), w in call.hub.workers.items()
        if dest == destination and (req.route is None or route == req.route)
    ]
    if not workers:
        raise ApiError(404, f"no delivery worker for destination {destination!r}")
    await _audit(call, "pause" if paused else "resume", target=destination, detail={"routes": [r for r, _ in workers]})
    try:
        for route, _ in workers:
            await call.hub.pause(route, destination, paused=paused, by=call.who.name)
    except StoreError:
        raise ApiError(503, "the store is unavailable: nothing was changed") from None
    return PauseResult(destination=destination, workers=[{"route": r, "paused": w.paused} for r, w in workers])


async def _reload(call: Call) -> ReloadView:
    # The hub records the reload in the audit trail itself, with its diff, before applying it.
    try:
        result = await call.hub.reload(by=call.who.name, role=call.who.role)
    except StoreError:
        raise ApiError(503, "audit trail unavailable: nothing was changed") from None
    return ReloadView(**result.as_dict())


async def _pause(call: Call) -> PauseResult:
    return await _set_paused(call, True)


async def _resume(call: Call) -> PauseResult:
    return await _set_paused(call, False)


# -- handlers: messages ---------------------------------------------------------------------------------------
_PATIENT_FILTERS = ("ins", "ipp", "patient_key")


async def _search(call: Call) -> SearchPage:
    params: SearchParams = call.query
    store = _store(call)
    if any(getattr(params, k) for k in _PATIENT_FILTERS):
        # Looking a patient up is an access to their record: recorded, like a payload view.
        await _audit(call, "search_patient", detail=_filters_for_audit(params))
    records = await store.search(_search_query(params, limit=params.limit + 1, before=params.before))
    more = len(records) > params.limit
    records = records[: params.limit]
    deliveries = await store.deliveries([r.message.id for r in records])
    items = [_summary(r, deliveries[r.message.id]) for r in records]
    for item, r in zip(items, records, strict=True):
        children: list[MessageRecord] = []
        if r.status == MessageStatus.UNROUTED:  # e.g. an MSSanté mail: its documents went on as messages of their own
            found = await store.search(SearchQuery(correlation_id=r.message.correlation_id, limit=51))
            children = [c for c in found if c.message.parent_id == r.message.id]
        _with_derived(item, children)
    return SearchPage(
        items=items,
        next_before=records[-1].message.id if more and records else None,
    )


async def _search_content(call: Call) -> ContentSearchPage:
    params: ContentSearchParams = call.query
    if "\x00" in params.text:
        raise ApiError(400, "invalid request", [{"loc": "text", "msg": "NUL is not searchable"}])
    try:
        since, until = content_search.window(params.since, params.until)
    except ValueError as exc:
        raise ApiError(400, "invalid request", [{"loc": "since", "msg": str(exc)}]) from None
    field = content_search.parse_field(params.text)
    needle = field.value if field else params.text
    if len(needle) < CONTENT_MIN_CHARS:
        raise ApiError(400, "invalid request", [{"loc": "text", "msg": f"at least {CONTENT_MIN_CHARS} characters"}])
    # Searching payloads reads health data: recorded first (fail closed), without the searched text.
    detail = content_search.audit_detail(params.text, field, since, until, params.limit)
    await _audit(call, "search_content", detail=detail)
    # A field condition narrows the index's candidates: fetch more of them, then keep those that match.
    fetch = params.limit + 1 if field is None else min(params.limit * 10, 2000)
    found = await _store(call).search_content(ContentQuery(text=needle, since=since, until=until, limit=fetch))
    records = found if field is None else [r for r in found if field.matches(searchable_text(r.message.body))]
    truncated = len(records) > params.limit or (field is not None and len(found) == fetch)
    records = records[: params.limit]
    deliveries = await _store(call).deliveries([r.message.id for r in records])
    items = [_summary(r, deliveries[r.message.id]) for r in records]
    # The index is written after the commit: say when messages of this window may not be found yet.
    lag = await _store(call).content_index_lag()
    lagging = lag.oldest_received_at is not None and lag.oldest_received_at < until
    return ContentSearchPage(
        items=items, since=since, until=until, truncated=truncated,
        index_pending=lag.pending if lagging else 0,
        index_pending_since=lag.oldest_received_at if lagging else None,
    )  # fmt: skip


async def _get_record(call: Call) -> MessageRecord:
    message_id = call.request.match_info["message_id"]
    rec = await _store(call).get_message(message_id)
    if rec is None:
        raise ApiError(404, f"no message {message_id}")
    return rec


def _ack(outcome: str, error: str) -> str:
    if outcome == "accept":
        return "accepted" + (f": {error}" if error else "")
    if outcome == "hold":
        return "not sent (held for the patient's identity)"
    return error or outcome


async def _trace(call: Call) -> Trace:
    store = _store(call)
    rec = await _get_record(call)
    mid = rec.message.id
    deliveries = (await store.deliveries([mid]))[mid]
    reviews = [r for r in await store.list_reviews(limit=10_000) if r.message_id == mid]
    sent = await store.sent_payloads([d.id for d in deliveries], body=False)
    traced = []
    for d in deliveries:
        held = await store.dead_letter_ahead(d.id) if d.status == DeliveryStatus.PENDING and d.ordering_key else None
        reason = await _waiting(call.hub, store, rec, d, reviews, held)
        attempts = [
            {
                "number": a.number, "started_at": a.started_at, "finished_at": a.finished_at,
                "duration_ms": round((a.finished_at - a.started_at).total_seconds() * 1000, 3),
                "outcome": a.outcome, "error": a.error, "acknowledgement": _ack(a.outcome, a.error),
                "reply": _reply_summary(a.reply),
            }
            for a in await store.attempts(d.id)
        ]  # fmt: skip
        view = _delivery_view(d).model_dump()
        s = sent.get(d.id)
        traced.append(
            DeliveryTrace(
                **view, sent=None if s is None else SentSummary(
                    content_type=s.content_type, size=s.size, computed_at=s.computed_at, sent_id=s.sent_id,
                    changed=s.body is not None or s.content_type != rec.message.content_type,
                ), ordering_key=d.ordering_key, created_at=d.created_at, identity_override=d.identity_override,
                attempts_log=attempts, held_behind_dead=held, waiting_reason=reason,  # type: ignore[arg-type]
            )
        )  # fmt: skip
    # Related: replays and derived messages (same correlation id), and acknowledgements received for it.
    correlation = rec.message.correlation_id
    related_recs = [
        r
        for r in [
            *await store.search(SearchQuery(correlation_id=correlation, limit=51)),
            *await store.search(SearchQuery(ack_for=correlation, limit=50)),
        ]
        if r.message.id != mid
    ][:100]
    related_deliveries = await store.deliveries([r.message.id for r in related_recs])
    summary = _summary(rec, deliveries)
    _with_derived(summary, [r for r in related_recs if r.message.parent_id == mid])
    return Trace(
        message=summary,
        metadata=dict(rec.message.metadata),
        deliveries=traced,
        related=[_summary(r, related_deliveries[r.message.id]) for r in related_recs],
        reviews=await _review_views(store, reviews),
    )


def _reply_summary(r: PeerReply | None) -> ReplySummary | None:
    """An attempt's reply without its bytes: the trace is open to viewers, the bytes only to payload readers."""
    if r is None:
        return None
    return ReplySummary(
        kind=r.kind, summary=r.summary, content_type=r.content_type, size=r.size, truncated=r.truncated,
        received_at=r.received_at,
    )  # fmt: skip


def _reply_view(a: Attempt) -> ReplyView:
    """An attempt's reply with its bytes decoded (the `sent` operation: operators, audited)."""
    r = a.reply
    assert r is not None
    encoding, text = _decode(r.content_type, r.body)
    summary = _reply_summary(r)
    assert summary is not None
    return ReplyView(**summary.model_dump(), number=a.number, outcome=a.outcome, encoding=encoding, text=text)


async def _waiting(
    hub: Hub, store: IdentityStore, rec: MessageRecord, d: Delivery, reviews: list[Any], dead_ahead: int | None
) -> str:
    """Why delivery `d` waits (see hub.admin.dashboard.waiting_reason), from the store and this node's worker."""
    if d.status in (DeliveryStatus.DELIVERED, DeliveryStatus.DISCARDED):
        return ""
    review = next((r.id for r in reviews if r.delivery_id == d.id and r.state == ReviewState.OPEN), None)
    identity_status = None
    if d.status == DeliveryStatus.AWAITING_IDENTITY and rec.message.metadata.get("patient_key"):
        record = await store.get_identity(rec.message.metadata["patient_key"])
        identity_status = record.status if record else None
    worker = hub.workers.get((d.route, d.destination))
    return waiting_reason(d, worker, review_id=review, identity_status=identity_status, dead_ahead=dead_ahead)


_STATUS_ORDER = (
    MessageStatus.FAILED,
    MessageStatus.IDENTITY_REVIEW,
    MessageStatus.AWAITING_IDENTITY,
    MessageStatus.PENDING,
    MessageStatus.REJECTED,
    MessageStatus.UNROUTED,
    MessageStatus.DELIVERED,
)


def _with_derived(summary: MessageSummary, children: list[MessageRecord]) -> None:
    """A message without deliveries of its own that went on as others shows their outcome (the worst first)."""
    summary.effective_status = summary.status
    if summary.deliveries or not children:
        return
    summary.derived = [
        {"id": c.message.id, "status": c.status, "message_type": c.message.metadata.get("message_type", "")}
        for c in children
    ]
    statuses = {c.status for c in children}
    summary.effective_status = next((s for s in _STATUS_ORDER if s in statuses), summary.status)


async def _payload(call: Call) -> Payload:
    rec = await _get_record(call)
    m = rec.message
    await _audit(call, "view_payload", message_id=m.id, detail={"size": len(m.body), "content_type": m.content_type})
    encoding, text = _decode(m.content_type, m.body)
    return Payload(
        message_id=m.id, content_type=m.content_type, size=len(m.body), encoding=encoding,
        text=text,
    )  # fmt: skip


async def _delivery_of(call: Call, rec: MessageRecord) -> Delivery:
    mid = rec.message.id
    try:
        delivery_id = int(call.request.match_info["delivery_id"])
    except ValueError:
        raise ApiError(404, "no such delivery") from None
    d = next((d for d in (await _store(call).deliveries([mid]))[mid] if d.id == delivery_id), None)
    if d is None:
        raise ApiError(404, f"message {mid} has no delivery {delivery_id}")
    return d


async def _sent(call: Call) -> SentView:
    """What the delivery sent: the stored output of its route's steps, resent as is by its retries."""
    rec = await _get_record(call)
    d = await _delivery_of(call, rec)
    store = _store(call)
    s = (await store.sent_payloads([d.id])).get(d.id)
    worker = call.hub.workers.get((d.route, d.destination))
    if s is None and worker is not None and not worker.pipeline and d.attempts:
        # a route without steps sends the inbound message as it is: nothing of its own is kept
        m = rec.message
        s = SentPayload(d.id, m.id, m.parent_id, m.content_type, None, m.metadata, m.received_at, size=len(m.body))
    if s is None:
        raise ApiError(404, f"delivery {d.id} has sent nothing yet")
    replies = [a for a in await store.attempts(d.id) if a.reply is not None]
    await _audit(
        call, "view_sent", message_id=rec.message.id, target=f"{d.route}->{d.destination}",
        detail={"delivery_id": d.id, "size": s.size, "content_type": s.content_type, "replies": len(replies)},
    )  # fmt: skip
    out = s.message(rec.message)
    encoding, text = _decode(out.content_type, out.body)
    before = rec.message.metadata
    return SentView(
        message_id=rec.message.id, delivery_id=d.id, route=d.route, destination=d.destination, sent_id=s.sent_id,
        content_type=out.content_type, size=len(out.body), encoding=encoding, text=text,
        changed=out.body != rec.message.body or out.content_type != rec.message.content_type,
        metadata_added={k: v for k, v in out.metadata.items() if before.get(k) != v}, computed_at=s.computed_at,
        replies=[_reply_view(a) for a in replies],
    )  # fmt: skip


async def _output(call: Call) -> StepOutput:
    """The 'after' view: the route's steps run again, now, on the stored message (a dry run: nothing is sent)."""
    hub = call.hub
    rec = await _get_record(call)
    mid = rec.message.id
    d = await _delivery_of(call, rec)
    worker = hub.workers.get((d.route, d.destination))
    if worker is None:
        raise ApiError(409, f"route {d.route!r} to {d.destination!r} does not run on this node")
    await _audit(
        call, "view_output", message_id=mid, target=f"{d.route}->{d.destination}", detail={"delivery_id": d.id}
    )
    pipeline = worker.pipeline
    try:
        # The worker's own step run, without its identity gate: what the steps give today, sent or not.
        ctx = await worker.step_context(rec.message, identity_override=d.identity_override, gate=False)
        out = await worker.run_steps(rec.message, ctx)
    except (MessageError, IdentityHold) as exc:
        raise ApiError(422, "a step refuses the message", getattr(exc, "reason", str(exc))) from None
    encoding, text = _decode(out.content_type, out.body)
    before = rec.message.metadata
    return StepOutput(
        message_id=mid, delivery_id=d.id, steps=list(pipeline.names), content_type=out.content_type,
        size=len(out.body), encoding=encoding,
        text=text, metadata_added={k: v for k, v in out.metadata.items() if before.get(k) != v},
    )  # fmt: skip


def _corrected_body(content_type: str, text: str) -> bytes:
    """The bytes of a body corrected as text: through the text codec of its format when it has one (HL7 v2:
    segment ends and the MSH-18 character set), else UTF-8."""
    codec = registry.get("text", content_type)
    if codec is not None:
        try:
            return codec.factory.encode(text)  # type: ignore[no-any-return]
        except MessageError:
            raise ApiError(422, "the corrected body has a character its declared character set cannot hold") from None
    return text.encode()


async def _replay(call: Call) -> ReplayResult:
    rec = await _get_record(call)
    req: ReplayRequest = call.body
    body = None if req.body is None else _corrected_body(rec.message.content_type, req.body)
    mid = rec.message.id
    detail: dict[str, Any] = {"corrected": body is not None}
    if req.destinations is not None:
        detail["destinations"] = req.destinations
    await _audit(call, "replay", message_id=mid, detail=detail, outcome="requested")
    try:
        result = await call.hub.replay(mid, body=body, destinations=req.destinations)
    except (MessageError, ReplayTargetError) as exc:
        error = ("still refused", exc.reason) if isinstance(exc, MessageError) else ("not replayed", str(exc))
        # The entry above says it was asked; this one says it did not happen, and why.
        await _audit(call, "replay", message_id=mid, detail={**detail, "error": error[1]}, outcome="failed")
        raise ApiError(422, *error) from None
    await _audit(call, "replay", message_id=mid, detail={**detail, "new_id": result.message_id})
    return ReplayResult(replayed=mid, new_id=result.message_id, deliveries=result.deliveries)


async def _replay_bulk(call: Call) -> BulkReplayResult:
    req: BulkReplayRequest = call.body
    limit = min(req.limit, call.hub.config.admin.max_bulk)
    records = await _store(call).search(_search_query(req.filter, limit=limit, before=None))
    ids = sorted(r.message.id for r in records)  # oldest first: replays keep the original order
    if req.dry_run:
        return BulkReplayResult(dry_run=True, matched=ids, replayed=[], errors=[])
    await _audit(
        call, "replay_bulk", message_id=ids[0] if len(ids) == 1 else None,
        detail={"filter": _filters_for_audit(req.filter), "count": len(ids), "message_ids": ids}, outcome="requested",
    )  # fmt: skip
    done, errors = [], []
    for mid in ids:
        try:
            result = await call.hub.replay(mid)
        except MessageError as exc:
            errors.append({"message_id": mid, "error": exc.reason})
            continue
        done.append(ReplayResult(replayed=mid, new_id=result.message_id, deliveries=result.deliveries))
    await _audit(
        call, "replay_bulk", message_id=ids[0] if len(ids) == 1 else None,
        detail={"replayed": len(done), "failed": [e["message_id"] for e in errors]},
        outcome="failed" if errors and not done else "partial" if errors else "ok",
    )  # fmt: skip
    return BulkReplayResult(dry_run=False, matched=ids, replayed=done, errors=errors)


# -- handlers: dead letters, reviews, identities --------------------------------------------------------------------
async def _dead(call: Call) -> DeadPage:
    q: DeadParams = call.query
    rows = await _store(call).find_deliveries(
        status=DeliveryStatus.DEAD, destination=q.destination, limit=q.limit + 1, after_id=q.after
    )
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return DeadPage(
        items=[
            DeadLetter(
                delivery_id=d.id, message_id=d.message_id, route=d.route, destination=d.destination,
                attempts=d.attempts, last_error=d.last_error, updated_at=d.updated_at,
            )
            for d in rows
        ],
        next_after=rows[-1].id if more and rows else None,
    )  # fmt: skip


async def _requeue(call: Call) -> RequeueResult:
    return await _on_dead(call, "requeue")


async def _discard(call: Call) -> RequeueResult:
    return await _on_dead(call, "discard")


async def _on_dead(call: Call, action: str) -> RequeueResult:
    """Requeue (send again, attempts reset) or discard (give up; the patient's later messages go on)."""
    req: RequeueRequest = call.body
    store = _store(call)
    cap = call.hub.config.admin.max_bulk
    ids = list(dict.fromkeys(req.delivery_ids))
    more = False
    if req.all_dead:
        dead = await store.find_deliveries(status=DeliveryStatus.DEAD, destination=req.destination, limit=cap + 1)
        more = len(dead) > cap
        ids += [d.id for d in dead[:cap] if d.id not in ids]
    if len(ids) > cap:
        raise ApiError(400, f"at most {cap} deliveries per {action} (admin.max_bulk)")
    if not ids or req.dry_run:
        return RequeueResult(requeued=0, matched=len(ids), more=more)
    await _audit(
        call, action, target=req.destination or "",
        detail={"delivery_ids": ids, "all_dead": req.all_dead},
    )  # fmt: skip
    if action == "requeue":
        count = await store.requeue(ids)
        call.hub.undelivered += count
    else:
        count = await store.discard(ids)
    _wake_workers(call.hub)
    return RequeueResult(requeued=count, matched=len(ids), more=more)


async def _review_views(store: SearchStore, items: list[Any]) -> list[ReviewView]:
    """Reviews with the route and destination of the delivery each one holds."""
    deliveries = await store.deliveries(sorted({r.message_id for r in items}))
    where = {d.id: (d.route, d.destination) for ds in deliveries.values() for d in ds}
    return [
        ReviewView.model_validate(
            {**r.as_dict(), "route": where.get(r.delivery_id, ("", ""))[0],
             "destination": where.get(r.delivery_id, ("", ""))[1]}
        )
        for r in items
    ]  # fmt: skip


async def _reviews(call: Call) -> ReviewList:
    q: ReviewParams = call.query
    await _audit(call, "list_reviews", detail={"state": q.state, "limit": q.limit})
    store = _store(call)
    items = await store.list_reviews(state=q.state, limit=q.limit)
    return ReviewList(items=await _review_views(store, items))


async def _review(call: Call) -> ReviewDetail:
    """One review: the registry's traits beside the message's, and every destination waiting on the decision."""
    store = _store(call)
    try:
        review_id = int(call.request.match_info["review_id"])
    except ValueError:
        raise ApiError(404, "no such review") from None
    everything = await store.list_reviews(state=None, limit=100_000)
    review = next((r for r in everything if r.id == review_id), None)
    if review is None:
        raise ApiError(404, "no such review")
    reveal = call.who.can("operator")
    if reveal:  # the patient's traits, in clear: recorded like a payload view
        await _audit(call, "view_review", message_id=review.message_id, target=str(review_id))
    record = await store.get_identity(review.patient_key)
    rec = await store.get_message(review.message_id)
    theirs = dict(record.traits) if record is not None else {}
    ours = message_traits(rec.message) if rec is not None else None
    same_message = [r for r in everything if r.message_id == review.message_id and r.state == ReviewState.OPEN]
    [view, *_] = await _review_views(store, [review])
    return ReviewDetail(
        review=view, identity_status=record.status if record else None, ins_known=bool(record and record.ins),
        traits=[TraitRow.model_validate(row) for row in compare(theirs, ours, reveal=reveal, reason=review.reason)],
        masked=not reveal, waiting=await _review_views(store, same_message),
    )  # fmt: skip


async def _resolve(call: Call) -> ReviewView:
    store = _store(call)
    try:
        review_id = int(call.request.match_info["review_id"])
    except ValueError:
        raise ApiError(404, "no such review") from None
    req: ResolveRequest = call.body
    open_reviews = await store.list_reviews(state=ReviewState.OPEN, limit=100_000)
    current = next((r for r in open_reviews if r.id == review_id), None)
    if current is None:
        raise ApiError(409, f"review {review_id} is not open")
    await _audit(
        call, "resolve_review", message_id=current.message_id, target=str(review_id), detail={"action": req.action}
    )
    resolved = await store.resolve_review(review_id, action=req.action, by=call.who.name)
    if resolved is None:
        raise ApiError(409, f"review {review_id} is not open")
    if req.action == "release":
        _wake_workers(call.hub)
    return ReviewView.model_validate(resolved.as_dict())


async def _identity(call: Call) -> IdentityView:
    store = _store(call)
    key = call.request.match_info["patient_key"]
    await _audit(call, "view_identity", target=key[:200])
    record = await store.get_identity(key)
    if record is None:
        raise ApiError(404, "no such identity")
    history = [
        {"at": h.at, "event": h.event, "message_id": h.message_id, "status": h.status, "note": h.note}
        for h in await store.identity_history(key)
    ]
    held = await store.search(SearchQuery(patient_key=key, status=MessageStatus.AWAITING_IDENTITY, limit=1000))
    return IdentityView.model_validate(
        {**record.as_dict(), "history": history, "awaiting_identity": [r.message.id for r in held]}
    )


async def _identities(call: Call) -> IdentityList:
    q: IdentityParams = call.query
    # Listing identities shows INS and IPP of many patients at once: audited like a search by patient.
    await _audit(call, "list_identities", detail={"status": q.status, "limit": q.limit})
    records = await _store(call).list_identities(status=q.status, limit=q.limit)
    return IdentityList(items=[IdentitySummary.model_validate(r.as_dict()) for r in records])


# -- handlers: audit trail ------------------------------------------------------------------------------------------
async def _audit_list(call: Call) -> AuditPage:
    q: AuditParams = call.query
    rows = await _store(call).list_audit(before_id=q.before, message_id=q.message_id, actor=q.actor, limit=q.limit + 1)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return AuditPage(
        items=[AuditEntry.model_validate(r.as_dict()) for r in rows], next_before=rows[-1].id if more and rows else None
    )


async def _audit_verify(call: Call) -> AuditVerify:
    report = await audit.verify_chain(_store(call), keys=call.hub.audit_keys)
    return AuditVerify.model_validate(report.as_dict())


# -- the table ------------------------------------------------------------------------------------------------------
_MSG_ID = (("message_id", "string", "Message id (UUIDv7)."),)

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/api/openapi.json", _openapi, "This document (OpenAPI 3.1).", "meta", role=None),
    Operation(
        "POST", "/api/login", _login, "Log a local user in; returns a session token.", "meta", role=None,
        body=LoginRequest, body_required=True, response=LoginResult, audited="login",
    ),
    Operation("GET", "/api/whoami", _whoami, "Who the token belongs to, and its role.", "meta", response=Whoami),
    Operation(
        "GET", "/api/endpoints", _endpoints, "Listeners, endpoints and routes, with live counters.", "flows",
        response=EndpointsView,
    ),
    Operation(
        "POST", "/api/config/reload", _reload, "Reload the routes: validated as `hub check`, applied without "
        "a restart, recorded in the audit trail with the diff of the route files.", "flows", role="admin",
        response=ReloadView,
        description="A configuration that fails the check, or that changes listeners, endpoints, sandboxes, the "
        "store or the HTTP server, is refused and nothing changes (`applied: false` with the reason). Connections "
        "and stored deliveries are kept; new messages take the new routes.",
    ),
    Operation(
        "GET", "/api/queues", _queues, "Each (route, destination) queue: depth, oldest age, in flight, failing, "
        "paused.", "flows", response=QueueView, response_list=True,
    ),
    Operation(
        "GET", "/api/stats", _stats, "Hourly totals (received, delivered, failed, dead, rejected), kept in the "
        "store across restarts.", "flows", query=StatsParams, response=StatsView,
    ),
    Operation(
        "POST", "/api/destinations/{destination}/pause", _pause, "Stop sending to a destination (this node).",
        "flows", role="operator", body=PauseRequest, response=PauseResult,
        path_params=(("destination", "string", "Endpoint name."),), audited="pause",
        description="Deliveries stay queued and are sent after resume; the decision holds on every node and "
        "across restarts (over the config's `paused`).",
    ),
    Operation(
        "POST", "/api/destinations/{destination}/resume", _resume, "Send to a paused destination again.", "flows",
        role="operator", body=PauseRequest, response=PauseResult,
        path_params=(("destination", "string", "Endpoint name."),), audited="resume",
    ),
    Operation(
        "GET", "/api/messages", _search, "Search messages by INS, IPP, MSH-10, document id, status, time range.",
        "messages", query=SearchParams, response=SearchPage, audited="search_patient",
        description="Newest first, paged with `before`. A search by INS, IPP or patient key is recorded in the "
        "audit trail.",
    ),
    Operation(
        "GET", "/api/search/content", _search_content, "Search the stored payloads for a text or an HL7 v2 field "
        "value, over a time window (recorded in the audit trail, without the text).", "messages", role="operator",
        query=ContentSearchParams, response=ContentSearchPage, audited="search_content",
        description="Index-backed (trigram), newest first, at most `limit` results, over at most 31 days (default: "
        "the last 24 h), cancelled after 10 s. Only the first 64 KiB of each payload are indexed.",
    ),
    Operation(
        "GET", "/api/messages/{message_id}", _trace, "One message's trace: metadata, deliveries, attempts, "
        "what the steps added, related messages, reviews.", "messages", response=Trace, path_params=_MSG_ID,
    ),
    Operation(
        "GET", "/api/messages/{message_id}/payload", _payload, "The message body (recorded in the audit trail).",
        "messages", role="operator", response=Payload, path_params=_MSG_ID, audited="view_payload",
    ),
    Operation(
        "GET", "/api/messages/{message_id}/deliveries/{delivery_id}/output", _output,
        "What the delivery's route steps make of the message (the 'after' view; a dry run).", "messages",
        role="operator", response=StepOutput, audited="view_output",
        path_params=(*_MSG_ID, ("delivery_id", "integer", "Delivery id.")),
        description="The steps run again now, with today's identity registry, on the stored message: the "
        "result may differ from what was sent if the registry changed since. 422 when a step refuses it.",
    ),
    Operation(
        "GET", "/api/messages/{message_id}/deliveries/{delivery_id}/sent", _sent,
        "What the delivery sent, and what the destination answered to each attempt.",
        "messages", role="operator", response=SentView, audited="view_sent",
        path_params=(*_MSG_ID, ("delivery_id", "integer", "Delivery id.")),
        description="The bytes, content type and metadata sent to the destination (its route steps' output, "
        "stored by its first attempt and resent by its retries), beside the peer's reply to every attempt it "
        "answered (an ACK, an HTTP body, SMTP reply lines; cut to the route's reply_max_bytes); recorded in the "
        "audit trail like a payload view. 404 until a first attempt computed it. A requeue computes it again with "
        "today's steps; so does an attempt after the patient's identity record changed.",
    ),
    Operation(
        "POST", "/api/messages/{message_id}/replay", _replay, "Run a stored message again, optionally corrected.",
        "messages", role="operator", body=ReplayRequest, response=ReplayResult, path_params=_MSG_ID,
        audited="replay",
        description="The replay is a new message derived from the stored one (same correlation id, parent id "
        "pointing back), read again, routed and delivered. 422 when the body is still refused.",
    ),
    Operation(
        "POST", "/api/replay", _replay_bulk, "Replay every message a search matches (oldest first).", "messages",
        role="operator", body=BulkReplayRequest, body_required=True, response=BulkReplayResult,
        audited="replay_bulk",
    ),
    Operation(
        "GET", "/api/dead", _dead, "Dead-lettered deliveries, oldest first.", "dead letters", query=DeadParams,
        response=DeadPage,
    ),
    Operation(
        "POST", "/api/dead/requeue", _requeue, "Send dead-lettered deliveries again (attempts reset).",
        "dead letters", role="operator", body=RequeueRequest, body_required=True, response=RequeueResult,
        audited="requeue",
    ),
    Operation(
        "POST", "/api/dead/discard", _discard,
        "Give up dead-lettered deliveries: they stay in the trail as discarded, and the later deliveries of "
        "their ordering key (held behind them) go on.",
        "dead letters", role="operator", body=RequeueRequest, body_required=True, response=RequeueResult,
        audited="discard",
    ),
    Operation(
        "GET", "/api/reviews", _reviews, "The identity review queue.", "identity", query=ReviewParams,
        response=ReviewList,
    ),
    Operation(
        "GET", "/api/reviews/{review_id}", _review, "One review: the registry's value beside the message's, trait by "
        "trait (masked for viewers; an operator's view is audited), and every destination waiting on it.",
        "identity", response=ReviewDetail, path_params=(("review_id", "integer", "Review id."),),
        audited="view_review",
    ),
    Operation(
        "POST", "/api/reviews/{review_id}/resolve", _resolve, "Release (trait check waived) or discard a "
        "reviewed delivery.", "identity", role="operator", body=ResolveRequest, body_required=True,
        response=ReviewView, path_params=(("review_id", "integer", "Review id."),), audited="resolve_review",
    ),
    Operation(
        "GET", "/api/identities", _identities, "The identity registry: local identities, status, INS.", "identity",
        query=IdentityParams, response=IdentityList,
    ),
    Operation(
        "GET", "/api/identities/{patient_key}", _identity,
        "One local identity: status, INS, history, messages held for it.", "identity", response=IdentityView,
        path_params=(("patient_key", "string", "`IPP@authority`."),),
    ),
    Operation(
        "GET", "/api/audit", _audit_list, "The audit trail, newest first.", "audit", role="admin",
        query=AuditParams, response=AuditPage,
    ),
    Operation(
        "GET", "/api/audit/verify", _audit_verify, "Check the audit trail's hash chain from its first entry.",
        "audit", role="admin", response=AuditVerify,
    ),
)  # fmt: skip


def _guard(op: Operation, state: AdminState) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = await state.auth.authenticate(request.headers.get("Authorization"))
        if op.role is not None:
            if principal is None:
                return _error(401, "authentication required", headers={"WWW-Authenticate": 'Bearer realm="hub"'})
            if not principal.can(op.role):
                if op.audited and state.hub.store is not None:
                    with contextlib.suppress(StoreError):
                        await audit.record(
                            state.hub.store, principal, op.audited, outcome="denied",
                            message_id=request.match_info.get("message_id"), target=request.path[:200],
                        )  # fmt: skip
                return _error(403, "forbidden", {"needs": op.role, "role": principal.role})
        try:
            query = None
            if op.query is not None:
                query = op.query.model_validate({k: v for k, v in request.query.items() if v != ""})
            body = None
            if op.body is not None:
                raw = await request.read()
                if not raw.strip():
                    if op.body_required:
                        raise ApiError(400, "a JSON body is required")
                    raw = b"{}"
                body = op.body.model_validate_json(raw)
            result = await op.handler(Call(request, state.hub, principal, query, body))
        except PydanticValidationError as exc:
            problems = [
                {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors(include_input=False)
            ]
            return _error(400, "invalid request", problems)
        except ApiError as exc:
            return _error(exc.status, exc.error, exc.detail)
        except StoreError:
            return _error(503, "store unavailable")
        return result if isinstance(result, web.StreamResponse) else _json(result)

    return handle


def mount(app: web.Application, hub: Hub) -> AdminState:
    """Register the admin API on `app` (and make the bootstrap token when nothing is configured)."""
    from hub.admin.openapi import build_document

    config = hub.config.admin
    bootstrap = None
    if not (config.users or config.tokens):
        path = bootstrap_token_path(hub.config)
        bootstrap = load_or_create_bootstrap_token(path)
        log_ = log.warning if hub.config.environment == HubEnvironment.PRODUCTION else log.info
        log_("admin_bootstrap_token", path=str(path), hint="no admin users or tokens configured; use this token")
    state = AdminState(hub=hub, auth=Authenticator(config, bootstrap_token=bootstrap))
    operations = [*OPERATIONS, *_contributed(hub, {(op.method, op.path) for op in OPERATIONS})]
    state.openapi = build_document(operations)
    app[ADMIN_KEY] = state
    for op in operations:
        app.router.add_route(op.method, op.path, _guard(op, state))
    return state


def _contributed(hub: Hub, taken: set[tuple[str, str]]) -> list[Operation]:
    """Operations a listener or endpoint adds (``admin_operations()``, e.g. mailbox administration); the
    first component to offer a path serves it."""
    extra = []
    for component in (*hub.listeners.values(), *hub.endpoints.values()):
        for op in getattr(component, "admin_operations", tuple)():
            if (op.method, op.path) not in taken:
                taken.add((op.method, op.path))
                extra.append(op)
    return extra
