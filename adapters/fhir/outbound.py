"""FHIR R4 client for e-Parcours platforms: conditional creates, transactions, OAuth2, mutual TLS.

What it sends, for a body of ``application/fhir+json``:

* a ``transaction`` or ``batch`` Bundle: ``POST [base]`` (FHIR R4 §3.1.0.11);
* any other resource (a document/collection Bundle included): ``POST [base]/[type]``.

**Idempotency.** The hub delivers at least once: a retry after a lost
answer must not create a second resource. Every create is therefore
*conditional* (FHIR R4 §3.1.0.8.1, ``If-None-Exist``; in a transaction
``entry.request.ifNoneExist``, set on every POST entry that has none) on the
resource's business identifier (`mappings.fhir.identifiers.business_identifier`:
INS or IPP for a Patient, masterIdentifier for a DocumentReference...). A
resource without one (a Binary, an unnamed List) gets a ``meta.tag`` in
``idempotency_tag_system`` whose code is derived from the message's
correlation id and the entry, and is created on ``_tag`` instead. PUT
entries (conditional updates) are idempotent by nature and left alone.

**Authentication.** OAuth2 client credentials (RFC 6749 §4.4; client id and
secret in HTTP Basic, §2.3.1): the token is cached until ``expires_in`` minus
``refresh_margin_secs`` and fetched again then, or once when the server
answers 401 (revoked or expired early). Mutual TLS with `adapters.tls.TlsConfig`.

**Classification** (the adapter never retries or sleeps; the hub does):

=========================================  ================================================================
2xx (200 from a conditional create too)    ACCEPT, after a transaction/batch response was read entry by
                                           entry: an entry 408/429/5xx → RETRY, another failed entry →
                                           REJECT naming the entry and its OperationOutcome issue codes
408, 429, 5xx, connection errors, timeouts RETRY (``Retry-After`` honoured: seconds or HTTP date)
401 (after one fresh token), the token     RETRY: credentials are configuration, not the message's fault
endpoint refusing or unreachable
other 4xx                                  REJECT with the OperationOutcome's severity/code and locations
                                           (never its diagnostics text, which may quote patient data)
=========================================  ================================================================

Every answer of the platform is the attempt's reply (:class:`hub.PeerReply`, kind ``http``, summary
the status code, the body: the created resource, the transaction-response Bundle or the
OperationOutcome), returned on ACCEPT and attached to the error otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
import urllib.parse
from typing import Any, Literal

import aiohttp
from pydantic import Field, field_validator

from adapters.retry_after import parse_retry_after
from adapters.tls import TlsConfig, VerifyingConnector, client_context
from hub.content_types import ContentType
from hub.errors import MessageError, NotConnected, Rejected, Retryable, Unreachable
from hub.message import Message
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind
from mappings.fhir.common import dump_json, load_json, search_token, stable_uuid
from mappings.fhir.identifiers import business_identifier

__all__ = ["FhirOutbound", "FhirOutboundConfig", "OAuth2Config", "outcome_summary", "parse_retry_after"]

_TRANSIENT = frozenset({408, 429})
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class OAuth2Config(ComponentConfig):
    token_url: str = Field(description="Token endpoint of the platform's authorisation server (https://...).")
    client_id: str = Field(description="OAuth2 client id of the hub.")
    client_secret: str = Field(description="OAuth2 client secret; use a `${ENV}` reference in the config file.")
    scope: str | None = Field(None, description="Scope requested with the token, space-separated (none: omitted).")
    auth_method: Literal["client_secret_basic", "client_secret_post"] = Field(
        "client_secret_basic",
        description="How the client authenticates to the token endpoint (RFC 6749 §2.3.1): HTTP Basic or form.",
    )
    refresh_margin_secs: float = Field(
        30.0, ge=0, description="Fetch a new token this long before the cached one expires."
    )


class FhirOutboundConfig(ComponentConfig):
    endpoint: str = Field(description="FHIR base URL of the platform, e.g. https://eparcours.example/fhir.")
    tls: TlsConfig | None = Field(None, description="TLS settings; a client certificate for mutual TLS.")
    oauth2: OAuth2Config | None = Field(None, description="OAuth2 client credentials (none: no Authorization).")
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up opening the connection after this.")
    timeout_secs: float = Field(60.0, gt=0, description="Give up on a request (token or FHIR) after this.")
    conditional_create: bool = Field(
        True, description="Make creates conditional (If-None-Exist / entry.request.ifNoneExist) so retries are safe."
    )
    idempotency_tag_system: str | None = Field(
        "urn:interop-hub:idempotency",
        description="meta.tag system marking resources without a business identifier (Binary...) so a retry "
        "finds them by _tag; none: such resources are created unconditionally.",
    )
    max_response_bytes: int = Field(16 * 2**20, ge=1024, description="Largest response body read.")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http(s) URL")
        return v.rstrip("/")


def outcome_summary(doc: Any) -> str:
    """``severity/code@location`` of each OperationOutcome issue; never diagnostics or details text."""
    if not isinstance(doc, dict) or doc.get("resourceType") != "OperationOutcome":
        return "no OperationOutcome"
    parts = []
    for issue in doc.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        where = [
            _QUOTED.sub("'…'", str(e))[:120]
            for e in (issue.get("expression") or issue.get("location") or [])
            if isinstance(e, str)
        ]
        text = f"{issue.get('severity', '?')}/{issue.get('code', '?')}"
        parts.append(text + (f"@{','.join(where)}" if where else ""))
    return (
        "; ".join(parts[:10]) + (f" (+{len(parts) - 10} more)" if len(parts) > 10 else "") or "empty OperationOutcome"
    )


def _status_code(text: Any) -> int | None:
    match = re.match(r"\s*(\d{3})", str(text or ""))
    return int(match.group(1)) if match else None


@register("outbound", "fhir", config=FhirOutboundConfig)
class FhirOutbound:
    """POST FHIR R4 (transactions, conditional creates) to an e-Parcours platform and classify the answer."""

    def __init__(self, name: str, config: FhirOutboundConfig) -> None:
        self.name = name
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "protocol": "fhir", "to": self.config.endpoint}

    async def start(self) -> None:
        """The session is opened here; connections are made on first use, so a platform down does not stop the hub."""
        ssl_ctx = client_context(self.config.tls) if self.config.tls else None
        connector = VerifyingConnector(ssl=ssl_ctx if ssl_ctx is not None else True, limit=32)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_secs, sock_connect=self.config.connect_timeout_secs)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- sending ------------------------------------------------------------------------------------
    async def send(self, message: Message) -> PeerReply:
        """Deliver one FHIR body; return the platform's reply on ACCEPT, raise Retryable / NotConnected / Rejected."""
        if message.content_type != ContentType.FHIR:
            raise Rejected(f"fhir endpoint takes {ContentType.FHIR}, not {message.content_type}")
        try:
            doc = load_json(message.body)
        except MessageError as exc:
            raise Rejected(f"body is not FHIR JSON ({exc.reason})") from None
        kind = str(doc.get("resourceType") or "")
        if not kind.isalpha():
            raise Rejected("body has no resourceType")
        key = message.correlation_id
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if kind == "Bundle" and doc.get("type") in ("transaction", "batch"):
            body = self._prepare_bundle(doc, key)
            status, resp_headers, payload = await self._request("POST", self.config.endpoint, body, headers)
            return self._answered(status, resp_headers, payload, bundle_type=str(doc["type"]))
        condition = self._condition(doc, key, "0")
        if condition:
            headers["If-None-Exist"] = condition
        url = f"{self.config.endpoint}/{kind}"
        status, resp_headers, payload = await self._request("POST", url, dump_json(doc), headers)
        return self._answered(status, resp_headers, payload, bundle_type=None)

    def _condition(self, resource: dict[str, Any], key: str, entry: str) -> str | None:
        """The If-None-Exist query for ``resource``, tagging it first when it has no business identifier."""
        if not self.config.conditional_create:
            return None
        found = business_identifier(resource)
        if found is not None:
            return urllib.parse.urlencode({"identifier": search_token(*found)})
        system = self.config.idempotency_tag_system
        if not system:
            return None
        code = stable_uuid("fhir-idempotency", key, entry)
        meta = resource.setdefault("meta", {})
        tags = meta.setdefault("tag", [])
        if not any(isinstance(t, dict) and t.get("system") == system for t in tags):
            tags.append({"system": system, "code": code})
        else:
            code = next(str(t.get("code")) for t in tags if isinstance(t, dict) and t.get("system") == system)
        return urllib.parse.urlencode({"_tag": search_token(system, code)})

    def _prepare_bundle(self, bundle: dict[str, Any], key: str) -> bytes:
        """The Bundle with ``request.ifNoneExist`` on every POST entry that lacks one."""
        out = copy.deepcopy(bundle)
        for i, entry in enumerate(out.get("entry") or []):
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                continue
            request = entry.get("request")
            if not isinstance(request, dict) or request.get("method") != "POST" or request.get("ifNoneExist"):
                continue
            condition = self._condition(entry["resource"], key, str(entry.get("fullUrl") or i))
            if condition:
                request["ifNoneExist"] = condition
        return dump_json(out)

    async def _request(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """One request (again once with a fresh token after a 401). Translates library errors once, here."""
        if self._session is None:
            raise NotConnected("fhir adapter not started")
        for attempt in range(2):
            sent = dict(headers)
            token = await self._bearer() if self.config.oauth2 else None
            if token:
                sent["Authorization"] = f"Bearer {token}"
            async with (
                _CallGuard("platform") as call,
                self._session.request(method, url, data=body, headers=sent) as resp,
            ):
                payload = await self._read(resp)
                status, got = resp.status, dict(resp.headers)
            if call.error is not None:
                raise call.error
            if status == 401 and token and attempt == 0:
                # RFC 6750 §3.1 invalid_token: the server revoked or expired it early; one fresh token, once.
                self._forget(token)
                continue
            return status, got, payload
        raise AssertionError("unreachable: the second attempt returns")

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(64 * 1024):
            size += len(chunk)
            if size > self.config.max_response_bytes:
                raise Retryable("platform response larger than max_response_bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- OAuth2 -------------------------------------------------------------------------------------
    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token, self._token_expiry = None, 0.0

    async def _bearer(self) -> str:
        """The cached token, or a new one when it is missing or about to expire."""
        oauth = self.config.oauth2
        assert oauth is not None
        async with self._token_lock:
            if self._token and time.monotonic() < self._token_expiry - oauth.refresh_margin_secs:
                return self._token
            self._token, self._token_expiry = await self._fetch_token(oauth)
            return self._token

    async def _fetch_token(self, oauth: OAuth2Config) -> tuple[str, float]:
        assert self._session is not None
        self.token_fetches += 1
        form = {"grant_type": "client_credentials"}
        if oauth.scope:
            form["scope"] = oauth.scope
        headers = {"Accept": "application/json"}
        if oauth.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before the Basic encoding.
            user = urllib.parse.quote(oauth.client_id, safe="")
            password = urllib.parse.quote(oauth.client_secret, safe="")
            headers["Authorization"] = aiohttp.encode_basic_auth(user, password)
        else:
            form.update(client_id=oauth.client_id, client_secret=oauth.client_secret)
        async with (
            _CallGuard("token endpoint") as call,
            self._session.post(oauth.token_url, data=form, headers=headers) as resp,
        ):
            status, payload = resp.status, await self._read(resp)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if call.error is not None:
            raise call.error
        if status != 200:
            error = ""
            with contextlib.suppress(ValueError, AttributeError):
                error = str(json.loads(payload).get("error", ""))[:40]
            if status in _TRANSIENT or status >= 500:
                raise Retryable(f"token endpoint answered HTTP {status}", retry_after_secs=retry_after)
            raise Retryable(f"token endpoint refused the client (HTTP {status} {error})".strip())
        try:
            data = json.loads(payload)
            token = str(data["access_token"])
            lifetime = float(data.get("expires_in") or 300)
        except (ValueError, KeyError, TypeError):
            raise Retryable("token endpoint answer has no access_token") from None
        return token, time.monotonic() + lifetime

    # -- classification -----------------------------------------------------------------------------
    def _answered(self, status: int, headers: dict[str, str], payload: bytes, *, bundle_type: str | None) -> PeerReply:
        """The platform's answer as the attempt's reply, returned on ACCEPT or attached to the error raised."""
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        reply = PeerReply.of(ReplyKind.HTTP, str(status), payload, content_type=ctype)
        try:
            self._classify(status, headers, payload, bundle_type=bundle_type)
        except (Retryable, Rejected) as exc:
            raise exc.with_reply(reply) from None
        return reply

    def _classify(self, status: int, headers: dict[str, str], payload: bytes, *, bundle_type: str | None) -> None:
        try:
            doc: Any = json.loads(payload) if payload else None
        except (ValueError, UnicodeDecodeError):
            doc = None
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if 200 <= status < 300:
            if bundle_type is not None:
                self._inspect_entries(doc, bundle_type)
            return
        if status in _TRANSIENT or status >= 500:
            raise Retryable(f"HTTP {status}: {outcome_summary(doc)}", retry_after_secs=retry_after)
        if status == 401:
            # Credentials are configuration, not the message's fault: keep it and retry (a fresh token was tried).
            raise Retryable("platform refused the hub's credentials (HTTP 401): check the oauth2 settings")
        if 400 <= status < 500:
            raise Rejected(f"HTTP {status}: {outcome_summary(doc)}", ack_code=str(status))
        raise Retryable(f"unexpected HTTP {status}")

    def _inspect_entries(self, doc: Any, bundle_type: str) -> None:
        """A 200 for a transaction/batch must carry its response Bundle; every entry must have succeeded."""
        expected = f"{bundle_type}-response"
        if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle" or doc.get("type") != expected:
            raise Retryable(f"2xx without a readable {expected} Bundle")
        transient: list[str] = []
        failed: list[str] = []
        for i, entry in enumerate(doc.get("entry") or []):
            response = entry.get("response") if isinstance(entry, dict) else None
            code = _status_code(response.get("status") if isinstance(response, dict) else None)
            if code is None:
                failed.append(f"entry {i}: no response.status")
            elif code >= 500 or code in _TRANSIENT:
                transient.append(f"entry {i}: HTTP {code}")
            elif code >= 300:
                outcome = response.get("outcome") if isinstance(response, dict) else None
                failed.append(f"entry {i}: HTTP {code} ({outcome_summary(outcome)})")
        if failed:
            raise Rejected(f"{expected} with failed entries: " + "; ".join(failed[:5]), ack_code="entry")
        if transient:
            raise Retryable(f"{expected} with entries to retry: " + "; ".join(transient[:5]))


class _CallGuard:
    """Translate aiohttp and socket errors into the hub's errors, once (STYLE.md L3)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.error: Exception | None = None

    async def __aenter__(self) -> _CallGuard:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        if isinstance(exc, (Retryable, Rejected)):
            return False
        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
            self.error = Unreachable(f"cannot reach the {self.what}: {type(exc).__name__}")  # nothing was sent
            return True
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            self.error = Retryable(f"{self.what} did not answer in time")
            return True
        if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
            self.error = NotConnected(f"cannot reach the {self.what}: {type(exc).__name__}")
            return True
        if isinstance(exc, aiohttp.ClientError):
            self.error = Retryable(f"{self.what} exchange failed: {type(exc).__name__}")
            return True
        return False
