"""FHIR R4 REST endpoint for DUIs and apps, served on the hub's HTTP port (flow F4).

Interactions, under ``base`` (default ``/fhir``):

=====================================  ====================================================
``GET  {base}/metadata``               the CapabilityStatement (FHIR R4 §3.1.0.13)
``POST {base}``                        a transaction (or, if enabled, batch) Bundle
``POST {base}/Bundle``                 a Bundle of an accepted type (transaction, message,
                                       document, collection)
``POST {base}/$process-message``       a message Bundle (FHIR R4 messaging)
``POST {base}/Patient``                a Patient
``POST {base}/DocumentReference``      a DocumentReference with its CDA or PDF attached
=====================================  ====================================================

Answers (one outcome vocabulary, DESIGN.md §3):

* **202 Accepted** once the body and its deliveries are committed
  (``ctx.submit``), never before. The hub takes custody and forwards; it is
  not the server of record, so it does not answer 201 with a Location it
  could not serve, nor a transaction-response naming resources that do not
  exist yet (FHIR R4 "Asynchronous Request Patterns" answers 202 too). The
  stored message id is in the ``X-Hub-Message-Id`` header and in the
  OperationOutcome body (``Prefer: return=minimal`` leaves the body out);
  ``Content-Location`` names its trace in the admin API (``/api/messages/{id}``).
  A repeated document/message Bundle identifier or DocumentReference
  masterIdentifier is a duplicate: **200**, the first message's id, not routed again.
* **400** (not JSON, not R4, structure) / **422** (FR Core, bindings, Bundle
  rules: FHIR R4 §3.1.0.4 "violated applicable FHIR profiles or server business
  rules") / **404, 405** (wrong URL or method) / **413** (over ``max_body_bytes``)
  / **415** (not ``application/fhir+json``, or another ``fhirVersion``): an
  OperationOutcome whose issues give a FHIRPath location and the hub's own
  text, never a value from the body. Every refused body that was received is
  stored first with status ``rejected`` and its reason (``ctx.reject``);
  an oversized one is stored cut, with ``truncated_from_bytes``.
* **503 + Retry-After** when the hub cannot keep the body now (store down,
  above its high-water mark): nothing was kept, the sender must resend.

Routing metadata: `mappings.fhir.reader` (``resource_type``, ``bundle_type``,
``patient_key`` as ``value@authority`` like HL7 v2's ``IPP@CX-4.1``, ``ins``,
``document_type``...), plus ``endpoint``, ``fhir_interaction`` and
``request_id`` (the ``X-Request-Id`` header, FHIR R4 §3.1.0.1.6).
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import Field, field_validator

from hub.content_types import ContentType
from hub.environments import HubEnvironment, HubEnvironmentName
from hub.errors import MessageError, Retryable
from hub.message import Message
from hub.ports import InboundContext
from hub.registry import ComponentConfig, register
from mappings.fhir.common import Issue, dump_json, load_json, operation_outcome
from mappings.fhir.patient_consistency import patient_consistency_issues
from mappings.fhir.reader import add_patient_authorities, fhir_metadata, remove_patient_authorities
from mappings.fhir.validate import validate_fhir, validate_structure

__all__ = ["FhirInbound", "FhirInboundConfig", "capability_statement"]

log = structlog.get_logger("hub.fhir.in")

_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_FHIR_VERSIONS = frozenset({"4.0", "4.0.1"})
_BundleType = Literal["transaction", "batch", "message", "document", "collection"]


def _default_bundle_types() -> list[_BundleType]:
    return ["transaction", "message", "document", "collection"]
_CHUNK = 64 * 1024


class FhirInboundConfig(ComponentConfig):
    base: str = Field(
        "/fhir",
        pattern=r"^(/[A-Za-z0-9._-]+)+$",
        description="Absolute path the FHIR endpoint is served under on the hub's HTTP port (no trailing /).",
    )
    max_body_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        le=256 * 2**20,
        description="Largest request body accepted; larger ones are answered 413 and stored cut.",
    )
    bundle_types: list[_BundleType] = Field(
        default_factory=_default_bundle_types,
        description="Bundle types accepted (POST {base} takes transaction/batch, POST {base}/Bundle any of these).",
    )
    attachment_content_types: list[str] = Field(
        default_factory=lambda: ["application/pdf", "text/xml", "application/xml", "application/hl7-v3+xml"],
        description="Content types accepted in DocumentReference attachments and Binary (CDA R2 or PDF).",
    )
    patient_authorities: dict[str, str] = Field(
        default_factory=dict,
        description="Identifier system -> authority name for patient_key (`value@authority`), so that a DUI's "
        "local identifier gets the same key as HL7 v2's IPP@CX-4.1, e.g. {'urn:oid:1.2.3': 'CHU-X'}.",
    )
    environment: HubEnvironmentName = Field(
        HubEnvironment.DEVELOPMENT, description="`production` refuses the INS test (.10) and demonstration (.11) roots."
    )
    dedup: bool = Field(
        True,
        description="Answer a repeated document/message Bundle identifier or DocumentReference masterIdentifier "
        "200 with the first message's id, without routing it again.",
    )
    retry_after_secs: int = Field(5, ge=1, le=3600, description="Retry-After sent with 503 when the hub is busy.")

    @field_validator("attachment_content_types")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [c.strip().lower() for c in v]


class _Refusal(Exception):
    """A request refused with an HTTP status and OperationOutcome issues (internal control flow)."""

    def __init__(self, status: int, issues: list[Issue], *, stored: bool = True) -> None:
        super().__init__(status)
        self.status = status
        self.issues = issues
        self.stored = stored


def capability_statement(base: str, config: FhirInboundConfig) -> dict[str, Any]:
    """The endpoint's CapabilityStatement (FHIR R4 CapabilityStatement, kind instance)."""
    create = [{"code": "create"}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "publisher": "interop-hub",
        "kind": "instance",
        "software": {"name": "interop-hub"},
        "implementation": {"description": "interop hub FHIR intake (store and forward)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Accepted bodies are stored before the 202 and forwarded by the hub's routes.",
                "resource": [
                    {"type": "Patient", "interaction": create},
                    {"type": "DocumentReference", "interaction": create},
                    {"type": "Bundle", "interaction": create},
                ],
                "interaction": [{"code": "transaction"}]
                + ([{"code": "batch"}] if "batch" in config.bundle_types else []),
                "operation": [
                    {
                        "name": "process-message",
                        "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
                    }
                ]
                if "message" in config.bundle_types
                else [],
            }
        ],
    }


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in header.split(";")]
    params = {}
    for p in parts[1:]:
        key, _, value = p.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


@register("inbound", "fhir", config=FhirInboundConfig)
class FhirInbound:
    """FHIR R4 REST intake on the hub's HTTP port: commit, then 202; 4xx + OperationOutcome (stored); 503."""

    def __init__(self, name: str, config: FhirInboundConfig, ctx: InboundContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self.base = config.base.rstrip("/")
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Routes are mounted by the hub before this; until now they answer 503."""
        add_patient_authorities(self.config.patient_authorities)  # replay in this process keys patients alike
        self._started = True

    async def stop(self) -> None:
        self._started = False
        remove_patient_authorities(self.config.patient_authorities)

    def describe(self) -> dict[str, Any]:
        return {"listener": self.name, "protocol": "fhir", "base": self.base}

    def http_routes(self) -> list[tuple[str, str, Any]]:
        """(method, absolute path, handler) for the hub's HTTP server."""
        b = self.base
        return [
            ("GET", f"{b}/metadata", self._metadata),
            ("POST", b, self._post_root),
            ("POST", f"{b}/Bundle", self._post_bundle),
            ("POST", f"{b}/$process-message", self._post_message),
            ("POST", f"{b}/Patient", self._post_patient),
            ("POST", f"{b}/DocumentReference", self._post_document),
            ("*", f"{b}/{{tail:.*}}", self._fallback),
        ]

    # -- handlers -----------------------------------------------------------------------------------
    async def _metadata(self, request: web.Request) -> web.Response:
        return _fhir_response(200, capability_statement(self.base, self.config))

    async def _fallback(self, request: web.Request) -> web.Response:
        known = {"metadata", "Bundle", "$process-message", "Patient", "DocumentReference", ""}
        tail = request.match_info.get("tail", "")
        if tail in known:
            issue = Issue("error", "not-supported", "", f"{request.method} is not supported on this URL")
            return _fhir_response(405, operation_outcome([issue]))
        issue = Issue("error", "not-found", "", "no such FHIR endpoint (Patient, DocumentReference, Bundle)")
        return _fhir_response(404, operation_outcome([issue]))

    async def _post_root(self, request: web.Request) -> web.Response:
        allowed = {t for t in ("transaction", "batch") if t in self.config.bundle_types}
        return await self._handle(request, "Bundle", allowed, interaction="transaction")

    async def _post_bundle(self, request: web.Request) -> web.Response:
        return await self._handle(request, "Bundle", set(self.config.bundle_types), interaction="create")

    async def _post_message(self, request: web.Request) -> web.Response:
        allowed = {"message"} & set(self.config.bundle_types)
        return await self._handle(request, "Bundle", allowed, interaction="process-message")

    async def _post_patient(self, request: web.Request) -> web.Response:
        return await self._handle(request, "Patient", set(), interaction="create")

    async def _post_document(self, request: web.Request) -> web.Response:
        return await self._handle(request, "DocumentReference", set(), interaction="create")

    # -- the one intake path ------------------------------------------------------------------------
    async def _handle(
        self, request: web.Request, resource_type: str, bundle_types: AbstractSet[str], *, interaction: str
    ) -> web.Response:
        if not self._started:
            return self._busy("the FHIR endpoint is not started")
        metadata = {"endpoint": self.name, "fhir_interaction": interaction, "resource_type": resource_type}
        request_id = request.headers.get("X-Request-Id", "")
        if request_id and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", request_id):
            metadata["request_id"] = request_id
        body, size = await self._read_body(request)
        try:
            if size > self.config.max_body_bytes:
                metadata["truncated_from_bytes"] = str(size)
                raise _Refusal(
                    413, [Issue("error", "too-long", "", f"body over max_body_bytes ({self.config.max_body_bytes})")]
                )
            self._check_content_type(request)
            doc, meta = self._validate(body, resource_type, bundle_types)
        except _Refusal as refusal:
            return await self._refuse(body, metadata, refusal)
        except Exception as exc:  # hostile input never costs a 500 without a stored trace of it
            log.error("fhir_validation_failed", listener=self.name, error=type(exc).__name__)
            issue = Issue("error", "exception", "", "the resource could not be validated")
            return await self._refuse(body, metadata, _Refusal(400, [issue]))
        metadata.update(meta)
        if "request_id" in metadata and "control_id" not in metadata:
            metadata["control_id"] = metadata["request_id"]
        message = Message.new(body, content_type=ContentType.FHIR, metadata=metadata)
        try:
            result = await self.ctx.submit(message, dedup_key=self._dedup_key(doc))
        except Retryable as exc:
            return self._busy(str(exc), exc.retry_after_secs)
        if result.duplicate:
            text = "duplicate of an already accepted message: not routed again"
            return self._accepted(request, 200, result.message_id, text)
        return self._accepted(request, 202, result.message_id, "accepted: stored, to be forwarded")

    async def _read_body(self, request: web.Request) -> tuple[bytes, int]:
        """The body, at most ``max_body_bytes`` of it; and its size (declared, or as far as it was read)."""
        limit = self.config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            # Not read at all: a client announcing too much is refused before it costs memory.
            return b"", declared
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await request.content.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            chunks.append(chunk)
        # Past the limit reading stops: the size is then "at least", and the stored body is cut at the limit.
        return b"".join(chunks)[:limit], size

    def _check_content_type(self, request: web.Request) -> None:
        media, params = _media_type(request.headers.get("Content-Type", ""))
        if media not in _JSON_TYPES:
            what = "FHIR XML is not supported here" if "xml" in media else "Content-Type is not application/fhir+json"
            raise _Refusal(415, [Issue("error", "not-supported", "", what)])
        version = params.get("fhirversion")
        if version and version not in _FHIR_VERSIONS:
            # FHIR R4 §3.1.0.17 (version parameter): this endpoint speaks R4 (4.0) only.
            raise _Refusal(415, [Issue("error", "not-supported", "", "fhirVersion other than 4.0 is not supported")])

    def _validate(
        self, body: bytes, resource_type: str, bundle_types: AbstractSet[str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        try:
            doc = load_json(body)
        except MessageError as exc:
            raise _Refusal(400, [Issue("error", "structure", "", exc.reason)]) from None
        kind = doc.get("resourceType")
        if kind != resource_type:
            raise _Refusal(
                400, [Issue("error", "invalid", "resourceType", f"this URL takes a {resource_type} resource")]
            )
        if kind == "Bundle" and doc.get("type") not in bundle_types:
            raise _Refusal(
                422, [Issue("error", "not-supported", "Bundle.type", "Bundle type not accepted on this URL")]
            )
        structure = validate_structure(doc)
        if any(i.is_error for i in structure):
            raise _Refusal(400, structure)
        # FR Core, bindings and Bundle rules: FHIR R4 §3.1.0.4 answers 422 for profile/business rules.
        issues = validate_fhir(
            doc,
            environment=self.config.environment,
            check_attachments=True,
            attachment_content_types=self.config.attachment_content_types,
            structure=False,
        )
        issues += patient_consistency_issues(doc)  # one Bundle, one patient: the INS stamped is the Bundle's
        if any(i.is_error for i in issues):
            raise _Refusal(422, issues)
        return doc, fhir_metadata(doc, authorities=self.config.patient_authorities)

    def _dedup_key(self, doc: dict[str, Any]) -> str | None:
        if not self.config.dedup:
            return None
        if doc.get("resourceType") == "Bundle" and doc.get("type") in ("document", "message"):
            ident = doc.get("identifier") or {}
            if ident.get("system") and ident.get("value"):
                return f"{self.name}|Bundle|{ident['system']}|{ident['value']}"
        if doc.get("resourceType") == "DocumentReference":
            master = doc.get("masterIdentifier") or {}
            if isinstance(master, dict) and master.get("system") and master.get("value"):
                return f"{self.name}|DocumentReference|{master['system']}|{master['value']}"
        return None

    async def _refuse(self, body: bytes, metadata: dict[str, str], refusal: _Refusal) -> web.Response:
        errors = [i for i in refusal.issues if i.is_error] or refusal.issues
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        reason = f"HTTP {refusal.status}: {errors[0]}{more}"
        message = Message.new(
            body, content_type=ContentType.FHIR, metadata={**metadata, "http_status": str(refusal.status)}
        )
        try:
            await self.ctx.reject(message, reason=reason)
        except Retryable as exc:
            # Not stored, so not refused for good: the sender keeps it and tries again.
            return self._busy(str(exc), exc.retry_after_secs)
        log.info(
            "fhir_rejected",
            listener=self.name,
            message_id=message.id,
            status=refusal.status,
            issues=len(refusal.issues),
            code=errors[0].code,
        )
        response = _fhir_response(refusal.status, operation_outcome(refusal.issues))
        response.headers["X-Hub-Message-Id"] = message.id
        return response

    def _busy(self, why: str, retry_after: float | None = None) -> web.Response:
        secs = max(1, round(retry_after)) if retry_after else self.config.retry_after_secs
        issue = Issue("error", "transient", "", "the hub cannot take this now; retry later")
        log.info("fhir_busy", listener=self.name, reason=why)
        response = _fhir_response(503, operation_outcome([issue]))
        response.headers["Retry-After"] = str(secs)
        return response

    def _accepted(self, request: web.Request, status: int, message_id: str, text: str) -> web.Response:
        # RFC 9110 §15.3.3: a 202 points to where the request's status can be followed (the admin API's
        # trace of the message; it needs an admin API token).
        headers = {"X-Hub-Message-Id": message_id, "Content-Location": f"/api/messages/{message_id}"}
        if "return=minimal" in request.headers.get("Prefer", ""):
            return web.Response(status=status, headers=headers)
        issue = {
            "severity": "information",
            "code": "informational",
            "diagnostics": text,
            "details": {"text": f"message {message_id}"},
        }
        response = _fhir_response(status, {"resourceType": "OperationOutcome", "issue": [issue]})
        response.headers.update(headers)
        return response


def _fhir_response(status: int, doc: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=dump_json(doc), content_type=ContentType.FHIR, charset="utf-8")
