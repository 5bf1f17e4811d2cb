"""Generic HTTP POST destination: the message's body, as is, to one URL; the answer's status decides.

For a peer that takes a document or a message over plain HTTP(S) and has no protocol of its own in the
hub (a web service of a partner, a queue's HTTP intake, a test double). A destination using it::

    endpoints:
      partner:
        type: http_post
        url: https://partner.example/api/inbox
        headers:
          Authorization: Bearer ${PARTNER_TOKEN}   # a value never logged nor shown
        content_type: application/fhir+json         # default: the message's own content type
        idempotency_header: Idempotency-Key         # the message id, the same on every attempt
        connect_timeout_secs: 5
        timeout_secs: 30
        tls:
          ca_file: config/partner-ca.pem
          cert_file: var/hub-client.pem              # mutual TLS
          key_file: var/hub-client.key
        status_outcomes: {409: accept}              # the peer's "already have it" after a lost answer

**Classification** (the adapter never retries or sleeps; the delivery workers do):

==============================================  ===============================================================
2xx                                             ACCEPT
408, 425, 429, 5xx                              RETRY (``Retry-After`` honoured: seconds or HTTP date)
other 4xx, and 3xx (redirects are not followed) REJECT
refused, DNS, TLS failure, connect time-out     RETRY as :class:`~hub.errors.Unreachable`: nothing was sent
no answer within ``timeout_secs``, connection   RETRY: the message may have arrived
lost after sending
==============================================  ===============================================================

``status_outcomes`` overrides the table for single codes. The answer (status, body cut to
``max_reply_bytes``, its Content-Type) is the attempt's reply (:class:`hub.PeerReply`, kind ``http``,
summary the status code), returned on ACCEPT and attached to the error otherwise. Neither the body
nor a header value ever enters a log line or an exception text.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator

from adapters.retry_after import parse_retry_after
from adapters.tls import TlsConfig, VerifyingConnector, client_context
from hub.errors import NotConnected, Rejected, Retryable, Unreachable
from hub.message import Message
from hub.registry import ComponentConfig, register
from hub.replies import REPLY_MAX_BYTES, PeerReply, ReplyKind

__all__ = ["HttpPost", "HttpPostConfig"]

Verdict = Literal["accept", "retry", "reject"]

#: 4xx that say "not now" rather than "never" (RFC 9110 §15.5.9 408, RFC 8470 §5.2 425, RFC 6585 §4 429).
_TRANSIENT = frozenset({408, 425, 429})
#: Headers the adapter sets itself (or aiohttp does): configuring them would contradict the request.
_OWN_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding", "host", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class HttpPostConfig(ComponentConfig):
    url: str = Field(description="Where the body is POSTed: an http:// or https:// URL, without credentials.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers, e.g. Authorization (use a `${ENV}` reference for a secret); their "
        "values are never logged nor shown. Content-Type is `content_type`, not a header here.",
    )
    content_type: str | None = Field(
        None,
        description="Content-Type of the request; none: the message's own content type (x-application/hl7-v2+er7, "
        "application/fhir+json, application/cda+xml...).",
    )
    idempotency_header: str | None = Field(
        None,
        description="Header carrying the message id, the same on every attempt, so that the peer can drop a "
        "duplicate sent again after a lost answer (e.g. Idempotency-Key); none: not sent.",
    )
    tls: TlsConfig | None = Field(
        None, description="TLS settings for an https:// URL: trust anchors, a client certificate for mutual TLS."
    )
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up opening the connection after this.")
    timeout_secs: float = Field(
        60.0, gt=0, description="Give up on the whole request (connection, sending, the answer) after this."
    )
    status_outcomes: dict[int, Verdict] = Field(
        default_factory=dict,
        description="Outcome of single status codes, overriding the defaults (2xx accept; 408, 425, 429 and 5xx "
        "retry; other 3xx and 4xx reject), e.g. {409: accept} for a peer answering a duplicate with 409 Conflict.",
    )
    max_connections: int = Field(
        32,
        ge=1,
        le=1000,
        description="Most connections open at once to the peer, kept alive between sends (sends beyond wait for "
        "one); the routes' `max_in_flight` decides how many are used.",
    )
    max_reply_bytes: int = Field(
        REPLY_MAX_BYTES,
        ge=0,
        le=16 * 2**20,
        description="Most bytes of the peer's answer read and kept as the reply; a longer answer is cut and its "
        "connection closed (the status still decides).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urllib.parse.urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            # Deprecated in http(s) URLs (RFC 9110 §4.2.4), and a secret shown wherever the URL is.
            raise ValueError("url cannot hold credentials: put them in an Authorization header (headers)")
        return v

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            _check_name(name)
            if _BAD_VALUE.search(value.get_secret_value()):  # the text names the header, never its value
                raise ValueError(f"header {name}: a value cannot hold CR, LF or NUL")
        return v

    @field_validator("content_type")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or _BAD_VALUE.search(v)):
            raise ValueError("content_type must be one non-empty line")
        return v

    @field_validator("idempotency_header")
    @classmethod
    def _idempotency_name(cls, v: str | None) -> str | None:
        if v is not None:
            _check_name(v)
        return v

    @field_validator("status_outcomes")
    @classmethod
    def _status_codes(cls, v: dict[int, Verdict]) -> dict[int, Verdict]:
        bad = sorted(code for code in v if not 200 <= code <= 599)
        if bad:
            raise ValueError(f"status codes must be within 200-599: {bad}")
        return v


def _check_name(name: str) -> None:
    """A header name as RFC 9110 §5.1 has it (a token), and not one the adapter sets itself."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not an HTTP header name")
    if name.lower() in _OWN_HEADERS:
        raise ValueError(f"header {name} is set by the adapter and cannot be configured (see content_type)")


@register("outbound", "http_post", config=HttpPostConfig)
class HttpPost:
    """POST each message's body to one URL and classify the answer by its status."""

    def __init__(self, name: str, config: HttpPostConfig) -> None:
        self.name = name
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        tls = config.tls
        self._server_hostname = tls.server_hostname if tls and tls.server_hostname else None

    def describe(self) -> dict[str, Any]:
        """Where it sends: the URL without its query (a key or a token may travel there)."""
        parts = urllib.parse.urlsplit(self.config.url)
        return {"endpoint": self.name, "protocol": "http_post", "to": f"{parts.scheme}://{parts.netloc}{parts.path}"}

    async def start(self) -> None:
        """The session is opened here; connections are made on first use, so a peer down does not stop the hub."""
        if self._session is not None:
            return
        ssl_ctx = client_context(self.config.tls) if self.config.tls else None
        limit = self.config.max_connections
        connector = VerifyingConnector(ssl=ssl_ctx if ssl_ctx is not None else True, limit=limit, limit_per_host=limit)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_secs, sock_connect=self.config.connect_timeout_secs)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, message: Message) -> PeerReply:
        """POST the body; return the peer's reply on ACCEPT, raise Retryable / Unreachable / Rejected otherwise."""
        if self._session is None:
            raise NotConnected("http_post adapter not started")
        headers = {name: value.get_secret_value() for name, value in self.config.headers.items()}
        headers["Content-Type"] = self.config.content_type or message.content_type
        if self.config.idempotency_header:
            headers[self.config.idempotency_header] = message.id
        try:
            async with self._session.post(
                self.config.url,
                data=message.body,
                headers=headers,
                allow_redirects=False,
                server_hostname=self._server_hostname,
            ) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                reply = await self._reply(resp)
        # Translated once, here; the texts name the failure's kind, never a header value nor the URL's query.
        except aiohttp.ConnectionTimeoutError:  # before aiohttp.ServerTimeoutError, its base
            raise Unreachable(f"no connection within {self.config.connect_timeout_secs:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake or certificate: nothing was sent
            raise Unreachable(f"cannot reach the peer: {type(exc).__name__}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise Retryable(f"no answer within {self.config.timeout_secs:g}s") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:  # lost after sending began: it may have arrived
            raise NotConnected(f"connection to the peer lost: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:  # an answer that is not HTTP, a bad header...
            raise Retryable(f"HTTP exchange failed: {type(exc).__name__}") from None
        verdict = self._verdict(status)
        if verdict == "accept":
            return reply
        if verdict == "retry":
            raise Retryable(f"HTTP {status} from the peer", retry_after_secs=retry_after).with_reply(reply)
        what = " (a redirect: not followed)" if 300 <= status < 400 else ""
        raise Rejected(f"HTTP {status} from the peer{what}", ack_code=str(status)).with_reply(reply)

    async def _reply(self, resp: aiohttp.ClientResponse) -> PeerReply:
        """The answer as the attempt's reply, at most `max_reply_bytes` of its body read.

        A longer answer is not read to its end (a peer must not make the hub read without bound): its
        connection is closed rather than reused, and the reply records that it was cut.
        """
        limit = self.config.max_reply_bytes
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := await resp.content.read(limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        ctype = resp.headers.get("Content-Type", "")
        if size <= limit:
            return PeerReply.of(ReplyKind.HTTP, str(resp.status), body, content_type=ctype, max_bytes=limit)
        resp.close()
        announced = resp.content_length or 0
        # The size is at least what was read; the announced length when the peer gave one.
        return PeerReply(ReplyKind.HTTP, str(resp.status), body[:limit], ctype, max(announced, size))

    def _verdict(self, status: int) -> Verdict:
        configured = self.config.status_outcomes.get(status)
        if configured is not None:
            return configured
        if 200 <= status < 300:
            return "accept"
        if status in _TRANSIENT or status >= 500:
            return "retry"
        return "reject"
