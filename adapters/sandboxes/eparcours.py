"""e-Parcours sandbox: a small FHIR R4 server standing in for a regional coordination platform.

It listens on its own address (``listen``; TLS and mutual TLS optional) and
serves, from memory (bounded by ``keep``, oldest evicted first):

=====================================  ===============================================================
``POST /token``                        OAuth2 client credentials (RFC 6749 §4.4; client id and secret
                                       in HTTP Basic or the form): a Bearer token for ``token_ttl_secs``
``GET  /metadata``                     CapabilityStatement
``POST /``                             transaction (atomic: all entries or none, FHIR R4 §3.1.0.11.2)
                                       or batch Bundle; answers a transaction-response / batch-response
``POST /{type}``                       create; ``If-None-Exist`` makes it conditional (§3.1.0.8.1):
                                       no match creates (201), one match answers 200 with it, more 412
``PUT  /{type}/{id}``                  update (or create with that id)
``PUT  /{type}?search``                conditional update (§3.1.0.4.3)
``GET  /{type}/{id}``                  read
``GET  /{type}?params``                search: ``_id``, ``identifier`` (also masterIdentifier and
                                       Bundle.identifier), ``patient`` / ``subject`` (reference, or
                                       ``patient.identifier`` chained), ``_tag``, ``status``, ``type``,
                                       ``code``, ``_count``, ``_offset``; unknown parameters are ignored
=====================================  ===============================================================

Writes need a token from ``/token`` (401 with ``WWW-Authenticate: Bearer``
otherwise, RFC 6750 §3); reads do not, so tests and people can look. Every
written resource is validated like the hub's intake does (fhir.resources R4B
and the FR Core INS rules, `mappings.fhir.validate`): 400 for structure,
422 for profile rules, with an OperationOutcome.

A transaction Bundle that claims the PDSm ITI-65 profile
(``pdsm-comprehensive-provide-document-bundle`` in ``meta.profile``) is first checked against the
PDSm / IHE MHD rules the hub ships (`mappings.fhir.profiles`): 422 with one issue per broken rule
(cardinality, fixed and pattern values, required bindings, slices, contained references, reference
targets, FHIRPath invariants). The rows of that check are in ``EPARCOURS.md`` beside this module.

Fault knobs (config, or ``POST /sandboxes/<name>/faults`` on the hub's HTTP
port): ``fail_status`` answers writes with that status (e.g. 503, 429, 500),
for the next ``fail_count`` writes (0: until cleared), with ``Retry-After:
retry_after_secs`` when set; ``delay_secs`` slows every request down;
``revoke_tokens: true`` forgets every token issued (the next write gets 401);
``token_ttl_secs`` changes the lifetime of tokens issued from now on.
``GET /sandboxes/<name>/requests`` lists the last requests (method, path, status).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import re
import secrets
import time
import urllib.parse
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import Field

from adapters.sandboxes.http_site import serve_app
from adapters.tls import TlsConfig
from hub.content_types import ContentType
from hub.environments import HubEnvironment, HubEnvironmentName
from hub.errors import MessageError
from hub.message import utcnow
from hub.registry import ComponentConfig, register
from mappings.fhir.common import Issue, dump_json, load_json, operation_outcome
from mappings.fhir.profiles import PDSM_BUNDLE, validate_bundle
from mappings.fhir.validate import model_class, validate_fhir, validate_structure

__all__ = ["EParcoursSandbox", "EParcoursSandboxConfig", "FhirError"]


class EParcoursSandboxConfig(ComponentConfig):
    listen: str = Field("127.0.0.1:8091", description="host:port of the sandbox's own FHIR server.")
    tls: TlsConfig | None = Field(None, description="Serve HTTPS; `require_client_cert` for mutual TLS.")
    clients: dict[str, str] = Field(
        default_factory=lambda: {"hub": "hub-secret"},
        description="OAuth2 clients allowed to get a token: client_id -> client_secret.",
    )
    require_token: bool = Field(True, description="Writes need a Bearer token from POST /token.")
    token_ttl_secs: int = Field(3600, ge=1, le=86_400, description="Lifetime of the tokens issued (expires_in).")
    keep: int = Field(10_000, ge=1, le=1_000_000, description="Resources kept in memory; the oldest go first.")
    environment: HubEnvironmentName = Field(
        HubEnvironment.TEST,
        description="`production` refuses the INS test and demonstration roots, like the platform would.",
    )
    max_body_bytes: int = Field(16 * 2**20, ge=1024, description="Largest request body accepted (413 above).")
    fail_status: int | None = Field(
        None, ge=400, le=599, description="Answer writes with this HTTP status (fault injection), e.g. 503."
    )
    fail_count: int = Field(0, ge=0, description="How many writes fail_status applies to (0: all until cleared).")
    retry_after_secs: int | None = Field(None, ge=0, description="Retry-After sent with the injected failures.")
    delay_secs: float = Field(0.0, ge=0, le=600, description="Wait this long before answering any request.")


class FhirError(Exception):
    """A FHIR interaction that fails with an HTTP status and OperationOutcome issues."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__(status)
        self.status = status
        self.issues = issues


def _fail(status: int, code: str, diagnostics: str, expression: str = "") -> FhirError:
    return FhirError(status, [Issue("error", code, expression, diagnostics)])


def _unescape(value: str) -> list[str]:
    """Split a token on unescaped ``|`` and resolve FHIR search escapes (R4 search §3.1.1.5.7)."""
    parts, cur, i = [], "", 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur += value[i + 1]
            i += 2
            continue
        if ch == "|":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return parts


def _token_match(want: str, system: object, code: object) -> bool:
    parts = _unescape(want)
    if len(parts) == 1:
        return code == parts[0]
    sys_want, code_want = parts[0], parts[1]
    if sys_want == "":
        return not system and code == code_want
    if code_want == "":
        return system == sys_want
    return system == sys_want and code == code_want


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = (
        [i for i in resource.get("identifier") or [] if isinstance(i, dict)]
        if isinstance(resource.get("identifier"), list)
        else []
    )
    if isinstance(resource.get("identifier"), dict):  # Bundle.identifier is 0..1
        found.append(resource["identifier"])
    if isinstance(resource.get("masterIdentifier"), dict):
        found.append(resource["masterIdentifier"])
    return found


def _codings(concept: Any) -> list[dict[str, Any]]:
    if isinstance(concept, list):
        return [c for item in concept for c in _codings(item)]
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _references(resource: dict[str, Any], element: str) -> list[dict[str, Any]]:
    value = resource.get(element)
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, dict)]


def _rewrite_references(node: Any, mapping: dict[str, str]) -> list[str]:
    """Replace transaction fullUrls wherever they appear; return the urn: references left unresolved.

    FHIR R4 §3.1.0.11.2: the server replaces matching links in references and in uri/url
    elements (e.g. ``attachment.url`` naming the Binary, as ITI-65 does).
    """
    unresolved: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if value in mapping:
                    node[key] = mapping[value]
                elif key == "reference" and value.startswith(("urn:uuid:", "urn:oid:")):
                    unresolved.append(value)
            else:
                unresolved += _rewrite_references(value, mapping)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, str) and item in mapping:
                node[i] = mapping[item]
            else:
                unresolved += _rewrite_references(item, mapping)
    return unresolved


@register("sandbox", "eparcours", config=EParcoursSandboxConfig)
class EParcoursSandbox:
    """e-Parcours platform stand-in: FHIR R4 server with OAuth2, conditional create, transactions, faults."""

    def __init__(self, name: str = "eparcours", config: EParcoursSandboxConfig | None = None) -> None:
        self.name = name
        self.config = config or EParcoursSandboxConfig(listen="127.0.0.1:0")
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}
        self._order: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._tokens: dict[str, tuple[str, float]] = {}
        self.token_requests = 0
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self.fail_status = self.config.fail_status
        self.fail_count = self.config.fail_count
        self.retry_after_secs = self.config.retry_after_secs
        self.delay_secs = self.config.delay_secs
        self.token_ttl_secs = self.config.token_ttl_secs
        self._failing = self.fail_count
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The FHIR base URL clients use (``http(s)://host:port``)."""
        host = self.config.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": self.name,
            "kind": "eparcours",
            "listen": self.config.listen,
            "port": self.port,
            "base": self.base_url,
            "token_url": f"{self.base_url}/token",
            "resources": sum(len(v) for v in self.resources.values()),
        }

    async def start(self) -> None:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._middleware])
        app.router.add_post("/token", self._token)
        app.router.add_get("/metadata", self._metadata)
        app.router.add_post("/", self._bundle)
        app.router.add_post("/{type}", self._create)
        app.router.add_put("/{type}", self._conditional_update)
        app.router.add_put("/{type}/{id}", self._update)
        app.router.add_get("/{type}/{id}", self._read)
        app.router.add_get("/{type}", self._search)
        self._runner, self.port = await serve_app(app, self.config.listen, self.config.tls)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- fault knobs and listings on the hub's HTTP port ---------------------------------------------
    def http_routes(self) -> list[tuple[str, str, Any]]:
        return [("POST", "faults", self._faults), ("GET", "requests", self._requests)]

    def set_faults(self, **knobs: Any) -> dict[str, Any]:
        """Change fault knobs at run time (same names as the config, plus ``revoke_tokens``)."""
        if knobs.pop("revoke_tokens", False):
            self._tokens.clear()
        merged = {**self.config.model_dump(), **{k: getattr(self, k) for k in _KNOBS}, **knobs}
        checked = EParcoursSandboxConfig.model_validate(merged)
        for knob in _KNOBS:
            setattr(self, knob, getattr(checked, knob))
        if "fail_status" in knobs or "fail_count" in knobs:
            self._failing = self.fail_count
        return {knob: getattr(self, knob) for knob in _KNOBS}

    async def _faults(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError
            return web.json_response(self.set_faults(**data))
        except Exception:  # pydantic and JSON errors alike: the knobs are wrong
            return web.json_response({"error": "faults take a JSON object of known knobs"}, status=400)

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.requests))

    # -- HTTP plumbing -------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        try:
            response = await handler(request)
        except FhirError as exc:
            response = _response(exc.status, operation_outcome(exc.issues))
        except web.HTTPRequestEntityTooLarge:
            response = _response(413, operation_outcome([Issue("error", "too-long", "", "body too large")]))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _response(exc.status, operation_outcome([Issue("error", "not-found", "", exc.reason)]))
        self.requests.append(
            {"at": utcnow().isoformat(), "method": request.method, "path": request.path, "status": response.status}
        )
        return response

    def _require_token(self, request: web.Request) -> None:
        if not self.config.require_token:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Unauthorized('Bearer realm="eparcours"')
        known = self._tokens.get(token.strip())
        if known is None or known[1] < time.monotonic():
            self._tokens.pop(token.strip(), None)
            raise _Unauthorized('Bearer realm="eparcours", error="invalid_token"')

    def _injected_failure(self) -> web.Response | None:
        if self.fail_status is None:
            return None
        if self.fail_count:
            if self._failing <= 0:
                return None
            self._failing -= 1
        code = "throttled" if self.fail_status == 429 else "transient" if self.fail_status >= 500 else "processing"
        response = _response(self.fail_status, operation_outcome([Issue("error", code, "", "sandbox fault")]))
        if self.retry_after_secs is not None:
            response.headers["Retry-After"] = str(self.retry_after_secs)
        return response

    async def _write_prelude(self, request: web.Request) -> dict[str, Any] | web.Response:
        """Token, injected faults, then the JSON body; a Response when the request stops here."""
        try:
            self._require_token(request)
        except _Unauthorized as exc:
            issue = Issue("error", "login", "", "a valid Bearer token is required")
            response = _response(401, operation_outcome([issue]))
            response.headers["WWW-Authenticate"] = exc.challenge
            return response
        failure = self._injected_failure()
        if failure is not None:
            return failure
        media = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in ("application/fhir+json", "application/json"):
            raise _fail(415, "not-supported", "Content-Type must be application/fhir+json")
        body = await request.read()
        try:
            return load_json(body)
        except MessageError:
            raise _fail(400, "structure", "body is not a JSON object") from None

    # -- OAuth2 ---------------------------------------------------------------------------------------
    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(credentials).decode().partition(":")
                client_id, secret = urllib.parse.unquote(user), urllib.parse.unquote(password)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        expected = self.config.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, secret):
            # RFC 6749 §5.2: invalid_client is answered 401.
            return web.json_response({"error": "invalid_client"}, status=401, headers={"WWW-Authenticate": "Basic"})
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (client_id, time.monotonic() + self.token_ttl_secs)
        if len(self._tokens) > 10_000:
            self._tokens.pop(next(iter(self._tokens)))
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl_secs}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    # -- interactions ---------------------------------------------------------------------------------
    async def _metadata(self, request: web.Request) -> web.Response:
        rest_resources = [
            {"type": t, "interaction": [{"code": c} for c in ("read", "search-type", "create", "update")],
             "conditionalCreate": True, "conditionalUpdate": True}
            for t in ("Patient", "DocumentReference", "Binary", "List", "Encounter", "Observation",
                      "DiagnosticReport", "Specimen", "Bundle", "CareTeam")
        ]  # fmt: skip
        return _response(
            200,
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": "2026-01-01",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["application/fhir+json"],
                "implementation": {"description": "e-Parcours sandbox", "url": self.base_url},
                "rest": [
                    {
                        "mode": "server",
                        "security": {"service": [{"text": "OAuth2 client credentials"}]},
                        "resource": rest_resources,
                        "interaction": [{"code": "transaction"}, {"code": "batch"}],
                    }
                ],
            },
        )

    async def _create(self, request: web.Request) -> web.Response:
        prelude = await self._write_prelude(request)
        if isinstance(prelude, web.Response):
            return prelude
        kind = request.match_info["type"]
        status, resource = self.create(kind, prelude, if_none_exist=request.headers.get("If-None-Exist"))
        return self._written(status, resource)

    async def _update(self, request: web.Request) -> web.Response:
        prelude = await self._write_prelude(request)
        if isinstance(prelude, web.Response):
            return prelude
        status, resource = self.update(request.match_info["type"], prelude, rid=request.match_info["id"])
        return self._written(status, resource)

    async def _conditional_update(self, request: web.Request) -> web.Response:
        prelude = await self._write_prelude(request)
        if isinstance(prelude, web.Response):
            return prelude
        if not request.query_string:
            raise _fail(400, "required", "PUT needs an id or search parameters")
        status, resource = self.update(request.match_info["type"], prelude, query=request.query_string)
        return self._written(status, resource)

    async def _read(self, request: web.Request) -> web.Response:
        kind, rid = request.match_info["type"], request.match_info["id"]
        self._known_type(kind)
        resource = self.resources.get(kind, {}).get(rid)
        if resource is None:
            raise _fail(404, "not-found", "no such resource")
        response = _response(200, resource)
        response.headers["ETag"] = f'W/"{resource["meta"]["versionId"]}"'
        return response

    async def _search(self, request: web.Request) -> web.Response:
        kind = request.match_info["type"]
        self._known_type(kind)
        params = list(request.query.items())
        count = _int_param(request.query.get("_count"), 50, 0, 1000)
        offset = _int_param(request.query.get("_offset"), 0, 0, 10**9)
        found = self.search(kind, params)
        page = found[offset : offset + count]
        kept = [(k, v) for k, v in params if k not in ("_count", "_offset")]
        self_url = f"{self.base_url}/{kind}?{urllib.parse.urlencode([*kept, ('_count', count), ('_offset', offset)])}"
        links = [{"relation": "self", "url": self_url}]
        if offset + count < len(found):
            nxt = urllib.parse.urlencode([*kept, ("_count", count), ("_offset", offset + count)])
            links.append({"relation": "next", "url": f"{self.base_url}/{kind}?{nxt}"})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "link": links,
            "entry": [
                {"fullUrl": f"{self.base_url}/{kind}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in page
            ],
        }
        return _response(200, bundle)

    async def _bundle(self, request: web.Request) -> web.Response:
        prelude = await self._write_prelude(request)
        if isinstance(prelude, web.Response):
            return prelude
        if prelude.get("resourceType") != "Bundle" or prelude.get("type") not in ("transaction", "batch"):
            raise _fail(400, "invalid", "POST to the base takes a transaction or batch Bundle", "Bundle.type")
        if PDSM_BUNDLE in ((prelude.get("meta") or {}).get("profile") or []):
            # An ITI-65 Bundle claiming the PDSm profile is held to its rules, as the platform's validator
            # would (PDSm TD2 "conforme au profil PDSm_ComprehensiveProvideDocumentBundle").
            broken = validate_bundle(prelude)
            if broken:
                raise FhirError(
                    422, [Issue("error", "processing", i.location, f"{i.message} ({i.profile})") for i in broken]
                )
        if prelude["type"] == "transaction":
            return _response(200, self.transaction(prelude))
        return _response(200, self.batch(prelude))

    def _written(self, status: int, resource: dict[str, Any]) -> web.Response:
        response = _response(status, resource)
        kind, rid, version = resource["resourceType"], resource["id"], resource["meta"]["versionId"]
        response.headers["Location"] = f"{self.base_url}/{kind}/{rid}/_history/{version}"
        response.headers["ETag"] = f'W/"{version}"'
        return response

    # -- the store (synchronous: no await between check and commit, so each call is atomic) ----------
    def _known_type(self, kind: str) -> None:
        if model_class(kind) is None:
            raise _fail(404, "not-supported", "unknown resource type")

    def _validate(self, resource: dict[str, Any], kind: str, where: str | None = None) -> None:
        if resource.get("resourceType") != kind:
            raise _fail(400, "invalid", "resourceType does not match the URL", f"{where or kind}.resourceType")
        structure = validate_structure(resource, where)
        if any(i.is_error for i in structure):
            raise FhirError(400, [i for i in structure if i.is_error])
        issues = validate_fhir(resource, environment=self.config.environment, check_attachments=True, structure=False)
        errors = [i for i in issues if i.is_error]
        if errors:
            raise FhirError(422, [_relocate(i, kind, where) for i in errors])

    def search(self, kind: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Resources of ``kind`` matching every parameter (a parameter repeated must match each time)."""
        out = []
        for resource in self.resources.get(kind, {}).values():
            if all(self._matches(resource, name, value) for name, value in params):
                out.append(resource)
        return out

    def _matches(self, resource: dict[str, Any], name: str, value: str) -> bool:
        # Modifiers (:exact, :text, :Patient...) are not implemented: the plain parameter is applied.
        name = name.partition(":")[0]
        # A comma means OR (FHIR R4 search §3.1.1.4.2); tokens are split on unescaped commas only.
        alternatives = [v for v in re.split(r"(?<!\\),", value) if v] or [value]
        if name in ("_count", "_offset", "_sort", "_total", "_format", "_summary", "_elements"):
            return True
        if name == "_id":
            return resource.get("id") in alternatives
        if name == "identifier":
            return any(
                _token_match(v, i.get("system"), i.get("value")) for v in alternatives for i in _identifiers(resource)
            )
        if name == "_tag":
            tags = ((resource.get("meta") or {}).get("tag")) or []
            return any(_token_match(v, t.get("system"), t.get("code")) for v in alternatives for t in tags)
        if name in ("type", "code"):
            return any(
                _token_match(v, c.get("system"), c.get("code"))
                for v in alternatives
                for c in _codings(resource.get(name))
            )
        if name == "status":
            return resource.get("status") in alternatives
        if name in ("patient", "subject"):
            targets = {v if "/" in v else f"Patient/{v}" for v in alternatives}
            refs = _references(resource, "subject") + _references(resource, "patient")
            return any(
                str(r.get("reference", "")).split("/_history")[0].removeprefix(self.base_url + "/") in targets
                for r in refs
            )
        if name in ("patient.identifier", "subject.identifier"):
            refs = _references(resource, "subject") + _references(resource, "patient")
            for ref in refs:
                if isinstance(ref.get("identifier"), dict) and _token_match(
                    value, ref["identifier"].get("system"), ref["identifier"].get("value")
                ):
                    return True
                target = str(ref.get("reference", ""))
                rtype, _, rid = target.partition("/")
                linked = self.resources.get(rtype, {}).get(rid)
                if linked and any(_token_match(value, i.get("system"), i.get("value")) for i in _identifiers(linked)):
                    return True
            return False
        return True  # FHIR R4 search §3.1.1.4: unknown parameters are ignored (lenient handling)

    def _search_query(self, kind: str, query: str, where: str) -> list[dict[str, Any]]:
        params = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if not params:
            raise _fail(400, "invalid", "empty conditional search", where)
        return self.search(kind, params)

    def _commit(self, kind: str, resource: dict[str, Any], rid: str) -> dict[str, Any]:
        previous = self.resources.get(kind, {}).get(rid)
        version = int(previous["meta"]["versionId"]) + 1 if previous else 1
        stored = copy.deepcopy(resource)
        stored["id"] = rid
        meta = dict(stored.get("meta") or {})
        meta.update(versionId=str(version), lastUpdated=utcnow().isoformat(timespec="milliseconds"))
        stored["meta"] = meta
        stored.pop("resourceType")
        stored = {"resourceType": kind, **stored}
        self.resources.setdefault(kind, {})[rid] = stored
        self._order.pop((kind, rid), None)
        self._order[(kind, rid)] = None
        while len(self._order) > self.config.keep:
            (old_kind, old_id), _ = self._order.popitem(last=False)
            self.resources.get(old_kind, {}).pop(old_id, None)
        return stored

    def create(
        self, kind: str, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Create (201), or with ``if_none_exist`` return the one match (200); 412 when several match."""
        self._known_type(kind)
        self._validate(resource, kind)
        if if_none_exist:
            found = self._search_query(kind, if_none_exist, "If-None-Exist")
            if len(found) > 1:
                raise _fail(412, "multiple-matches", "If-None-Exist matches several resources")
            if found:
                return 200, found[0]
        return 201, self._commit(kind, resource, _new_id())

    def update(
        self, kind: str, resource: dict[str, Any], *, rid: str | None = None, query: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Update by id (or create with it), or conditionally by search (0: create, 1: update, more: 412)."""
        self._known_type(kind)
        self._validate(resource, kind)
        if query is not None:
            found = self._search_query(kind, query, "url")
            if len(found) > 1:
                raise _fail(412, "multiple-matches", "conditional update matches several resources")
            rid = found[0]["id"] if found else resource.get("id") or _new_id()
        assert rid is not None
        if resource.get("id") not in (None, rid):
            raise _fail(400, "invalid", "resource id does not match the URL", f"{kind}.id")
        existed = rid in self.resources.get(kind, {})
        return (200 if existed else 201), self._commit(kind, resource, rid)

    # -- Bundles ----------------------------------------------------------------------------------------
    def _plan(self, bundle: dict[str, Any], i: int, entry: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
        """(action, type, id, resource) for one entry; action is create, update or exists. Raises FhirError."""
        where = f"Bundle.entry[{i}]"
        request = entry.get("request") or {}
        method, url = request.get("method"), str(request.get("url") or "")
        resource = entry.get("resource")
        if method not in ("POST", "PUT") or not isinstance(resource, dict):
            raise _fail(422, "not-supported", "only POST and PUT entries are processed", f"{where}.request.method")
        path, _, query = url.partition("?")
        kind = path.strip("/").split("/")[0]
        self._known_type(kind)
        self._validate(resource, kind, f"{where}.resource")
        if method == "POST":
            cond = request.get("ifNoneExist")
            if cond:
                found = self._search_query(kind, str(cond), f"{where}.request.ifNoneExist")
                if len(found) > 1:
                    raise _fail(412, "multiple-matches", "ifNoneExist matches several resources", where)
                if found:
                    return "exists", kind, found[0]["id"], found[0]
            return "create", kind, _new_id(), resource
        if query:
            found = self._search_query(kind, query, f"{where}.request.url")
            if len(found) > 1:
                raise _fail(412, "multiple-matches", "conditional update matches several resources", where)
            rid = found[0]["id"] if found else str(resource.get("id") or _new_id())
            return ("update" if found else "create"), kind, rid, resource
        parts = path.strip("/").split("/")
        if len(parts) != 2:
            raise _fail(400, "invalid", "PUT url is Type/id or Type?search", f"{where}.request.url")
        existed = parts[1] in self.resources.get(kind, {})
        return ("update" if existed else "create"), kind, parts[1], resource

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Process a transaction atomically (all or nothing) and return its transaction-response."""
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        plans = [self._plan(bundle, i, e) for i, e in enumerate(entries)]  # raises before anything is written
        mapping = {
            str(e["fullUrl"]): f"{kind}/{rid}"
            for e, (_, kind, rid, _) in zip(entries, plans, strict=True)
            if e.get("fullUrl")
        }
        prepared = []
        for i, (_entry, (action, kind, rid, resource)) in enumerate(zip(entries, plans, strict=True)):
            if action == "exists":
                prepared.append((action, kind, rid, resource))
                continue
            body = copy.deepcopy(resource)
            left = _rewrite_references(body, mapping)
            if left:
                raise _fail(
                    422, "not-found", "reference to an entry not in the transaction", f"Bundle.entry[{i}].resource"
                )
            prepared.append((action, kind, rid, body))
        response_entries = []
        for action, kind, rid, body in prepared:
            stored = body if action == "exists" else self._commit(kind, body, rid)
            status = {"create": "201 Created", "update": "200 OK", "exists": "200 OK"}[action]
            response_entries.append({"response": _entry_response(status, stored)})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": response_entries}

    def batch(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Process each entry on its own; failures are reported per entry (batch-response)."""
        out = []
        for i, entry in enumerate(e for e in bundle.get("entry") or [] if isinstance(e, dict)):
            try:
                action, kind, rid, resource = self._plan(bundle, i, entry)
                body = copy.deepcopy(resource)
                if action != "exists":
                    if _rewrite_references(body, {}):
                        raise _fail(422, "not-found", "batch entries cannot reference each other", f"Bundle.entry[{i}]")
                    body = self._commit(kind, body, rid)
                status = {"create": "201 Created", "update": "200 OK", "exists": "200 OK"}[action]
                out.append({"response": _entry_response(status, body)})
            except FhirError as exc:
                out.append({"response": {"status": str(exc.status), "outcome": operation_outcome(exc.issues)}})
        return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


_KNOBS = ("fail_status", "fail_count", "retry_after_secs", "delay_secs", "token_ttl_secs")


class _Unauthorized(Exception):
    def __init__(self, challenge: str) -> None:
        super().__init__("unauthorized")
        self.challenge = challenge


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


def _int_param(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value))) if value is not None else default
    except ValueError:
        raise _fail(400, "invalid", "not an integer search parameter") from None


def _relocate(issue: Issue, kind: str, where: str | None) -> Issue:
    if not where or issue.expression.startswith(where):
        return issue
    expression = where + issue.expression[len(kind) :] if issue.expression.startswith(kind) else issue.expression
    return Issue(issue.severity, issue.code, expression, issue.diagnostics)


def _entry_response(status: str, stored: dict[str, Any]) -> dict[str, Any]:
    kind, rid, version = stored["resourceType"], stored["id"], stored["meta"]["versionId"]
    return {
        "status": status,
        "location": f"{kind}/{rid}/_history/{version}",
        "etag": f'W/"{version}"',
        "lastModified": stored["meta"]["lastUpdated"],
    }


def _response(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=dump_json(doc), content_type=ContentType.FHIR, charset="utf-8")
