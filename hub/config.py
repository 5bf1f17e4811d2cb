"""Process configuration (`config/hub.yaml`) and routes (`routes/*.yaml`), validated at load.

Every model forbids unknown keys and describes every field: these models are
the reference for the YAML files. `load_config` returns a fully
cross-checked `Settings`: listeners, endpoints and sandboxes are validated
against the config model of the adapter they name; routes are checked for
unknown listeners, endpoints and steps, and for step content types that do
not chain. Every problem is reported as `file:line: text`, all at once.
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.alerting.config import AlertsConfig
from hub.conditions import RouteFilter
from hub.environments import HubEnvironment, HubEnvironmentName
from hub.errors import ConfigError
from hub.message import Message
from hub.production import production_problems
from hub.replies import REPLY_MAX_BYTES
from hub.statuses import FinishedMessageStatus, MessageStatus
from hub.tls import TlsConfig
from hub.userstep import add_python_path, load_user_step, spec_of
from hub.yamlsource import Located, load_located

__all__ = [
    "AdminConfig",
    "AdminToken",
    "AdminUser",
    "ComponentEntry",
    "DestinationPolicy",
    "HubConfig",
    "RetryPolicy",
    "RouteConfig",
    "Settings",
    "StoreConfig",
    "load_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StoreConfig(_Model):
    kind: Literal["sqlite", "postgres"] = Field("sqlite", description="Which store implementation to use.")
    path: str = Field(
        "var/hub.db", description="SQLite database file, relative to the working directory (sqlite only)."
    )
    dsn: str | None = Field(
        None, description="PostgreSQL DSN, e.g. `${HUB_PG_DSN}` (postgres only; ignored, and may be empty, for sqlite)."
    )
    schema_: str | None = Field(
        None,
        alias="schema",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema for the hub's tables (created if missing); default: the search path.",
    )
    pool_size: int = Field(8, ge=2, le=200, description="PostgreSQL connections held by this process.")
    max_batch: int = Field(512, ge=1, le=10_000, description="Most messages committed in one group-commit transaction.")
    index_delay_secs: float = Field(
        0.05,
        ge=0,
        le=86_400,
        description="The content-search index is written after the commit, off the ACK path: how long committed "
        "messages gather before they are indexed in one batch. A search says how many are not indexed yet; "
        "what a crash left unindexed is indexed at the next start.",
    )
    lease_secs: float = Field(
        10.0,
        gt=0,
        description="How long a claimed delivery stays owned without renewal. Workers renew every third of it "
        "while a delivery runs, and send only under a lease renewed less than half of it ago; a dead node's "
        "deliveries are taken over after about 1.25 times it.",
    )
    vacuum_check_secs: float = Field(
        30.0,
        ge=0,
        description="PostgreSQL only: how often the hub reads pg_stat_user_tables for its hot tables (deliveries, "
        "messages, what was sent, attempts, search keys and text) and VACUUMs (never FULL) those with too many dead "
        "rows, whatever the server's autovacuum setting; one node of a cluster at a time. 0 turns the task off.",
    )
    vacuum_dead_rows: int = Field(
        10_000,
        ge=0,
        description="PostgreSQL only: a hot table is vacuumed once its dead rows exceed this plus "
        "`vacuum_dead_fraction` times its live rows, and analysed once the rows written since its last "
        "ANALYZE do.",
    )
    vacuum_dead_fraction: float = Field(0.05, ge=0, le=10, description="PostgreSQL only: see `vacuum_dead_rows`.")

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> StoreConfig:
        if self.kind == "postgres" and not self.dsn:
            raise ValueError("a postgres store needs a dsn (the shipped config reads it from $HUB_PG_DSN)")
        return self


class HttpConfig(_Model):
    listen: str = Field(
        "127.0.0.1:8080",
        description="host:port of the HTTP server (health, admin API under /api, console at /, /metrics, sandboxes).",
    )
    enabled: bool = Field(True, description="Start the HTTP server.")
    max_connections: int = Field(
        256,
        ge=1,
        description="Connections served at once; a newcomer over the limit takes the slot of the oldest connection "
        "that has not yet sent a complete request (hub/slots.py), or is closed when there is none.",
    )
    max_connections_per_peer: int = Field(
        64, ge=1, description="Connections one client address may hold at once (same rule over its share)."
    )
    idle_timeout_secs: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Close a connection that sends no request this long after connecting or after its last "
        "response (HTTP keep-alive); the library's own default is an hour, which lets idle connections pile up.",
    )
    tls: TlsConfig | None = Field(
        None,
        description="Serve HTTPS (FHIR intake, admin API, console, metrics); with require_client_cert, only "
        "clients holding a certificate from ca_file (mutual TLS, e.g. for DUIs posting FHIR).",
    )


Role = Literal["viewer", "operator", "admin"]
# scrypt$N$r$p$salt$hash | pbkdf2_sha256$iterations$salt$hash (base64) | sha256$hex (tokens only)
_B64 = r"[A-Za-z0-9+/=]+"
_SECRET_HASH = rf"^(scrypt\$\d+\$\d+\$\d+\${_B64}\${_B64}|pbkdf2_sha256\$\d+\${_B64}\${_B64})$"
_TOKEN_HASH = r"^(sha256\$[0-9a-f]{64}|scrypt\$.+|pbkdf2_sha256\$.+)$"


class AdminUser(_Model):
    role: Role = Field(
        description="viewer (no payloads, no actions), operator (payloads, replay, pause, review), admin."
    )
    password_hash: str = Field(
        pattern=_SECRET_HASH,
        description="Salted hash of the password (`python -m hub.admin hash-password`): "
        "`scrypt$N$r$p$salt$hash` or `pbkdf2_sha256$iterations$salt$hash`; may be a `${ENV}` reference.",
    )


class AdminToken(_Model):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="Who uses the token, as the audit trail names it."
    )
    role: Role = Field(description="viewer, operator or admin.")
    token_hash: str | None = Field(
        None,
        pattern=_TOKEN_HASH,
        description="Hash of the bearer token (`python -m hub.admin hash-token`): `sha256$hex` for a random token "
        "of 32 bytes or more, or a salted scrypt/pbkdf2 hash.",
    )
    token: str | None = Field(
        None,
        min_length=24,
        description="The bearer token itself, only as an environment reference (`${HUB_ADMIN_TOKEN}`); "
        "prefer token_hash in files.",
    )

    @model_validator(mode="after")
    def _one_secret(self) -> AdminToken:
        if (self.token_hash is None) == (self.token is None):
            raise ValueError("give exactly one of token_hash and token")
        return self


class AdminConfig(_Model):
    enabled: bool = Field(True, description="Serve the admin API under /api and the web console at /.")
    users: dict[str, AdminUser] = Field(
        default_factory=dict, description="Local users by login name; they log in with POST /api/login."
    )
    tokens: list[AdminToken] = Field(default_factory=list, description="Bearer tokens for scripts and the console.")
    session_secs: float = Field(
        8 * 3600.0, gt=0, le=7 * 86400, description="Lifetime of the session token a user gets at login."
    )
    session_key: str | None = Field(
        None,
        min_length=32,
        description="Key signing session tokens, from the environment (`${HUB_SESSION_KEY}`); give every node the "
        "same one so that a session works on each. Unset: a random key per process (sessions end at restart).",
    )
    bootstrap_token_file: str | None = Field(
        None,
        description="With no users and no tokens configured, an admin token is generated once and kept in this "
        "file (mode 0600) to bootstrap access. Unset: `admin-token` beside the SQLite database, or "
        "`var/admin-token` with PostgreSQL.",
    )
    metrics_auth: bool = Field(
        False, description="Require a bearer token (any role) on /metrics; the metrics hold no patient data."
    )
    max_bulk: int = Field(
        1000, ge=1, le=100_000, description="Most messages one bulk replay, or deliveries one requeue, may touch."
    )
    api_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Where the `hub` command reaches this hub's admin API (e.g. behind a proxy); unset: "
        "http(s):// + `http.listen`. `$HUB_URL` wins over it.",
    )


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    format: Literal["json", "console"] = Field("json", description="JSON lines, or coloured text for a terminal.")


class ComponentEntry(_Model):
    """One named listener, endpoint or sandbox: `type` names a registered adapter, the rest is its config."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Registered adapter name, e.g. `mllp`.")

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _finished_without_dead_letters() -> list[FinishedMessageStatus]:
    return [MessageStatus.DELIVERED, MessageStatus.REJECTED, MessageStatus.UNROUTED]


class RetentionConfig(_Model):
    days: float | None = Field(
        None, gt=0, description="Delete finished messages received more than this many days ago; unset: keep all."
    )
    statuses: list[FinishedMessageStatus] = Field(
        default_factory=_finished_without_dead_letters,
        description="Which finished messages go: dead letters (`failed`) stay unless listed.",
    )
    batch: int = Field(1000, ge=1, le=100_000, description="Messages deleted per transaction (never one giant DELETE).")
    every_secs: float = Field(600.0, gt=0, description="How often the purge runs.")


class AuditConfig(_Model):
    key: str | None = Field(
        None,
        min_length=32,
        description="Secret keying the audit chain (HMAC-SHA-256), from the environment (`${HUB_AUDIT_KEY}`); "
        "it never goes into the database, so that write access to the database cannot forge a chain that "
        "verifies. Unset (and no key_file): a key made once in `audit-key` beside the SQLite database (or "
        "`var/audit-key`); production requires key or key_file.",
    )
    key_file: str | None = Field(
        None, description="File holding the key (first line, 32 characters or more), instead of `key`."
    )
    key_id: str = Field(
        "k1",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Name of the current key, written in each entry's hash; give a new key a new id to rotate.",
    )
    previous_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Keys retired by a rotation, by id (from the environment): entries made with them still verify.",
    )


class HubConfig(_Model):
    node: str = Field(
        "hub",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="This process's name in a cluster; leases it held are released when it restarts.",
    )
    environment: HubEnvironmentName = Field(
        HubEnvironment.DEVELOPMENT,
        description="Production refuses sandboxes, components accepting test or demonstration identities, "
        "development certificates, and unauthenticated listeners bound beyond loopback (hub/production.py).",
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="The durable store.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="The HTTP server.")
    admin: AdminConfig = Field(
        default_factory=AdminConfig, description="Admin API, web console and metrics: users, tokens and roles."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")
    audit: AuditConfig = Field(
        default_factory=AuditConfig, description="The key of the audit trail's HMAC chain, and retired keys."
    )
    high_water_mark: int = Field(
        100_000,
        ge=1,
        description="Undelivered deliveries above which inbound adapters answer RETRY (AE/503/451).",
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="Purging finished messages (the audit trail is kept whole)."
    )
    shutdown_grace_secs: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight deliveries may finish before being released."
    )
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig,
        description="Alert rules (dead letters, queue depth and age, destination down, reviews waiting, listener or "
        "store down, certificate expiry) and where notices go (webhook, mail).",
    )
    listeners: dict[str, ComponentEntry] = Field(default_factory=dict, description="Inbound adapters by name.")
    endpoints: dict[str, ComponentEntry] = Field(default_factory=dict, description="Outbound adapters by name.")
    sandboxes: dict[str, ComponentEntry] = Field(
        default_factory=dict,
        description="Local stand-ins for national services and peers, started with the hub.",
    )
    routes: list[str] = Field(
        default_factory=lambda: ["../routes/*.yaml"],
        description="Glob patterns of route files, relative to this config file.",
    )
    python_path: list[str] = Field(
        default_factory=lambda: ["../routes/python"],
        description="Folders (relative to this config file) holding the modules of `python:` route steps.",
    )
    route_tests: list[str] = Field(
        default_factory=lambda: ["../routes/tests/*.yaml"],
        description="Glob patterns of route test case files run by `hub test`, relative to this config file.",
    )


class RetryPolicy(_Model):
    max_attempts: int = Field(10, ge=1, le=10_000, description="Attempts before the delivery is dead-lettered.")
    initial_secs: float = Field(1.0, gt=0, description="Delay before the second attempt.")
    max_secs: float = Field(300.0, gt=0, description="Cap on the delay between attempts.")
    multiplier: float = Field(2.0, ge=1.0, description="Growth of the delay from one attempt to the next.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random spread of each delay, as a fraction of it.")


class DestinationPolicy(_Model):
    destination: str = Field(description="Name of an endpoint from config/hub.yaml.")
    ordering_key: str | None = Field(
        None,
        description="Metadata key whose value orders deliveries (FIFO per value, e.g. `patient_key`); "
        "different values run in parallel. Unset: no ordering.",
    )
    max_in_flight: int = Field(4, ge=1, le=1000, description="Deliveries sent at once to this destination.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry and backoff.")
    require_qualified_ins: bool = Field(
        False,
        description="Send only messages whose patient has a qualified INS in the registry (the DMP, patient "
        "mailboxes); others wait as awaiting_identity and go out when an ADT qualifies the identity.",
    )
    paused: bool = Field(
        False, description="Start with delivery paused: messages are stored and queued, not sent, until resumed."
    )
    probe_max_secs: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="While the destination cannot be reached (circuit open), the longest wait between two probes; "
        "the wait starts at 1 s and doubles.",
    )
    hold_behind_dead: bool = Field(
        True,
        description="With an ordering key: when a delivery dead-letters, the later ones with the same key wait "
        "behind it (never overtake it) until it is requeued or discarded. False lets them go on.",
    )
    reply_max_bytes: int = Field(
        REPLY_MAX_BYTES,
        ge=0,
        le=16 * 2**20,
        description="The most bytes of the peer's reply (ACK, HTTP body, SMTP lines) kept with each attempt; the "
        "rest is cut (the reply is marked truncated, its full size kept). 0 keeps only its summary.",
    )


class RouteConfig(_Model):
    route: str = Field(pattern=r"^[a-z0-9_][a-z0-9_-]{0,63}$", description="Unique route name.")
    description: str = Field("", description="What the route is for.")
    from_: list[str] = Field(alias="from", description="Listener name(s) the route takes messages from.")
    when: dict[str, Any] = Field(
        default_factory=dict,
        description="Filter, every entry must hold: a metadata key (see README, Routes) with a text (equals), "
        "a list (one of) or {equals|in|not_in|matches|present: ...}; or `hl7:` / `fhirpath:` / `xpath:` "
        "mapping paths into the body to such tests, e.g. `hl7: {PV1-2: I}`.",
    )
    steps: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="Registered steps, applied in order: a name, or `{name: {settings}}` for a step with settings "
        "(checked against the step's config model, `hub describe NAME`); or the user's own function, "
        "`python: module:function` or `python: {function: module:function, settings: {...}}`.",
    )
    to: list[DestinationPolicy] = Field(min_length=1, description="Destinations and their delivery policy.")

    @field_validator("from_", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("steps")
    @classmethod
    def _one_step_per_item(cls, v: list[Any]) -> list[Any]:
        for item in v:
            if isinstance(item, dict) and len(item) != 1:
                raise ValueError("a step with settings is written {name: {settings}}, one name per item")
        return v

    def step_specs(self) -> list[tuple[str, Any]]:
        """(name, settings) of each step."""
        return [(s, {}) if isinstance(s, str) else next(iter(s.items())) for s in self.steps]

    _filter: RouteFilter | None = PrivateAttr(None)

    def compile_conditions(self) -> RouteFilter:
        """Compile `when:` (once); ValueError listing its problems when it cannot be used."""
        if self._filter is None:
            compiled = RouteFilter(self.when)
            if compiled.problems:
                raise ValueError("; ".join(f"when.{'.'.join(loc)}: {text}" for loc, text in compiled.problems))
            self._filter = compiled
        return self._filter

    def matches(self, endpoint: str, message: Message, cache: dict[str, Any] | None = None) -> bool:
        """Whether a message from `endpoint` passes `when:`; `cache` shares parsed bodies between routes."""
        if endpoint not in self.from_:
            return False
        return self.compile_conditions().matches(message, {} if cache is None else cache)


@dataclasses.dataclass
class Settings:
    """The whole validated configuration of one hub process."""

    path: Path
    hub: HubConfig
    routes: list[RouteConfig]
    route_files: dict[str, Path]
    component_configs: dict[tuple[str, str], BaseModel]

    def listener_config(self, name: str) -> BaseModel:
        return self.component_configs[("inbound", name)]

    def endpoint_config(self, name: str) -> BaseModel:
        return self.component_configs[("outbound", name)]


def _problems(doc: Located, exc: PydanticValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple("from" if p == "from_" else p for p in (*prefix, *err["loc"]))
        dotted = ".".join(str(p) for p in loc) or "(document)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{doc.where(loc)}: {dotted}: {msg}")
    return out


def load_config(path: str | Path) -> Settings:
    """Load and cross-check config and routes; raise ConfigError listing every problem."""
    registry.load_builtin()
    path = Path(path)
    doc = load_located(path)
    problems: list[str] = []
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}:1: the config file must be a mapping")
    try:
        hub = HubConfig.model_validate(doc.data)
    except PydanticValidationError as exc:
        raise ConfigError(_problems(doc, exc)) from None

    component_configs: dict[tuple[str, str], BaseModel] = {}
    kinds: tuple[tuple[str, registry.Kind], ...] = (
        ("listeners", "inbound"),
        ("endpoints", "outbound"),
        ("sandboxes", "sandbox"),
    )
    for section, kind in kinds:
        for name, entry in getattr(hub, section).items():
            comp = registry.get(kind, entry.type)
            if comp is None:
                known = ", ".join(registry.names(kind)) or "none"
                problems.append(
                    f"{doc.where((section, name, 'type'))}: {section}.{name}.type: "
                    f"unknown {kind} adapter {entry.type!r} (known: {known})"
                )
                continue
            try:
                component_configs[(kind, name)] = comp.config.model_validate(entry.settings())
            except PydanticValidationError as exc:
                problems += _problems(doc, exc, (section, name))

    add_python_path([path.parent / p for p in hub.python_path])
    routes: list[RouteConfig] = []
    route_files: dict[str, Path] = {}
    files: list[Path] = []
    for pattern in hub.routes:
        matched = sorted(glob.glob(str(path.parent / pattern)))
        if not matched:
            problems.append(f"{doc.where(('routes',))}: routes: no file matches {pattern!r}")
        files += [Path(m) for m in matched]
    for file in files:
        try:
            rdoc = load_located(file)
        except ConfigError as exc:
            problems += exc.problems
            continue
        try:
            route = RouteConfig.model_validate(rdoc.data)
        except PydanticValidationError as exc:
            problems += _problems(rdoc, exc)
            continue
        problems += _check_route(route, rdoc, hub, route_files)
        routes.append(route)
        route_files[route.route] = file
    problems += production_problems(hub, component_configs, doc.where)
    if problems:
        raise ConfigError(problems)
    return Settings(path, hub, routes, route_files, component_configs)


def _check_route(route: RouteConfig, doc: Located, hub: HubConfig, seen: dict[str, Path]) -> list[str]:
    problems = []
    if route.route in seen:
        problems.append(f"{doc.where(('route',))}: route {route.route!r} is also defined in {seen[route.route]}")
    for i, listener in enumerate(route.from_):
        if listener not in hub.listeners:
            problems.append(
                f"{doc.where(('from', i) if len(route.from_) > 1 else ('from',))}: from: unknown listener {listener!r}"
            )
    compiled = RouteFilter(route.when)
    for loc, text in compiled.problems:
        problems.append(f"{doc.where(('when', *loc))}: when.{'.'.join(loc)}: {text}")
    if not compiled.problems:
        route.compile_conditions()
    content_type: str | None = None
    for i, (step, settings) in enumerate(route.step_specs()):
        if step == "python":
            problems += _check_user_step(doc, i, settings)
            continue
        comp = registry.get("step", step)
        if comp is None:
            problems.append(
                f"{doc.where(('steps', i))}: steps.{i}: unknown step {step!r} "
                f"(known: {', '.join(registry.names('step')) or 'none'})"
            )
            continue
        try:
            comp.config.model_validate(settings or {}, context={"route_dir": str(doc.path.parent)})
        except PydanticValidationError as exc:
            problems += _problems(doc, exc, ("steps", i, step))
        if content_type and comp.consumes and content_type not in comp.consumes:
            problems.append(
                f"{doc.where(('steps', i))}: steps.{i}: {step!r} takes {'/'.join(comp.consumes)} "
                f"but the previous step gives {content_type}"
            )
        content_type = comp.produces or content_type
    names = [d.destination for d in route.to]
    for i, dest in enumerate(route.to):
        if dest.destination not in hub.endpoints:
            problems.append(
                f"{doc.where(('to', i, 'destination'))}: to.{i}.destination: unknown endpoint {dest.destination!r}"
            )
        if names.count(dest.destination) > 1 and names.index(dest.destination) != i:
            problems.append(
                f"{doc.where(('to', i, 'destination'))}: to.{i}.destination: {dest.destination!r} listed twice"
            )
    return problems


def _check_user_step(doc: Located, i: int, settings: Any) -> list[str]:
    """`hub check` of a `python:` step: the spec, the import, the function and its settings."""
    loc = ("steps", i, "python")
    try:
        spec = spec_of(settings)
    except PydanticValidationError as exc:
        return _problems(doc, exc, loc)
    try:
        load_user_step(spec)
    except PydanticValidationError as exc:
        return _problems(doc, exc, (*loc, "settings") if isinstance(settings, dict) else loc)
    except ValueError as exc:
        return [f"{doc.where(loc)}: steps.{i}.python: {exc}"]
    return []
