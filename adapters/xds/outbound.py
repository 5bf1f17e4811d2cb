"""ITI-41 Provide and Register Document Set-b: a CDA document to the DMP (or any XDS.b repository).

One ``send`` = one HTTPS POST of a SOAP 1.2 MTOM message: the ebRIM
metadata built by :mod:`mappings.xds` from the CDA header and this
endpoint's configuration, the document as an XOP attachment, the lot's
XAdES signature document (:mod:`mappings.xds.signature`, signed with the VIHF
key), WS-Addressing
headers, and a signed VIHF assertion in ``wsse:Security``; mutual TLS with
the structure's certificate (DOMAIN.md §5).

How the answer is classified (the hub retries, this adapter never does):

=============================================  ===============================================
RegistryResponse Success (warnings allowed)    ACCEPT
RegistryResponse Failure                       REJECT with the errorCodes (``Rejected``), except
                                               the transient codes (XDSRegistryBusy,
                                               XDSRepositoryBusy, XDSRegistryNotAvailable,
                                               *OutOfResources): RETRY
RegistryResponse PartialSuccess                REJECT with the codes: the DMP registers a lot
                                               whole or not at all, so a partial answer means
                                               something unexpected was stored; resending would
                                               collide with it, a person must look
SOAP Fault (any HTTP status)                   RETRY, naming the fault code and subcodes only
HTTP 5xx, 408, 429                             RETRY (``Retry-After`` honoured)
other HTTP 4xx without a SOAP Fault            REJECT
connection refused / reset, TLS failure        RETRY as ``NotConnected``
no answer within ``response_timeout_secs``     RETRY
=============================================  ===============================================

A SOAP 1.2 Sender fault comes back as HTTP 400 (SOAP 1.2 part 2 §7.5.2),
typically a VIHF the DMP refused; it is retried like any fault because the
usual cause is on the sending side's configuration (certificate,
attributes), fixed while the message waits, and the retry policy bounds it.

Exception texts carry error codes and a redacted ``codeContext`` (see
:func:`mappings.xds.redact_context`), never the document or the patient id.

The endpoint's answer (the SOAP envelope with its RegistryResponse or Fault, as received, MTOM
included) is the attempt's reply (:class:`hub.PeerReply`, kind ``http``, summary the HTTP status
and the RegistryResponse status), returned on ACCEPT and attached to the error otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from lxml import etree
from pydantic import Field, field_validator

from adapters.retry_after import parse_retry_after
from adapters.tls import TlsConfig, VerifyingConnector, client_context
from adapters.xds.mtom import MtomError, Part, cid_href, content_type_params, decode_related, encode_related
from adapters.xds.soap import ACTION_PNR, SoapError, SoapFault, envelope, read_envelope
from adapters.xds.vihf import VihfConfig, VihfSigner, build_assertion, subject_for
from hub.errors import ConfigError, MappingError, NotConnected, Rejected, Retryable, Unreachable
from hub.message import Message, utcnow
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind
from mappings.xds import (
    RegistryResult,
    XdsMetadataConfig,
    build_submission,
    provide_and_register_request,
    read_registry_response,
    redact_context,
)
from mappings.xds.signature import sign_submission

__all__ = ["TRANSIENT_ERROR_CODES", "XdsOutbound", "XdsOutboundConfig", "classify_registry_response"]

TRANSIENT_ERROR_CODES = frozenset(
    {
        "XDSRegistryBusy",
        "XDSRepositoryBusy",
        "XDSRegistryNotAvailable",
        "XDSRegistryOutOfResources",
        "XDSRepositoryOutOfResources",
    }
)
"""ITI TF-3 Table 4.2.4.1-2 codes that describe the registry's state, not the submission: retried."""


class XdsOutboundConfig(ComponentConfig):
    """Where and how to send ITI-41 requests, and the XDS metadata and VIHF the hub adds."""

    endpoint: str = Field(description="URL of the ITI-41 service (the DMP 'repository' endpoint), https:// with TLS.")
    tls: TlsConfig | None = Field(
        None, description="TLS client settings: the structure's certificate and key for mutual TLS, trusted CAs."
    )
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up opening the connection after this.")
    response_timeout_secs: float = Field(
        60.0, gt=0, description="Give up waiting for the whole answer after this (the attempt is retried)."
    )
    max_response_bytes: int = Field(4 * 2**20, ge=4096, description="Largest answer read from the peer.")
    metadata: XdsMetadataConfig = Field(description="What the hub adds to the CDA header (codes, structure, lot).")
    vihf: VihfConfig | None = Field(
        None, description="The VIHF assertion put in wsse:Security. Unset: no security header (non-DMP registries)."
    )
    mtom: bool = Field(True, description="Send the document as an MTOM/XOP attachment; false: inline base64.")
    sign_lot: bool | None = Field(
        None,
        description="Add the lot's XAdES signature document (IHE DSG; the DMP refuses unsigned lots), signed with "
        "the VIHF signing key. Unset: signed whenever a VIHF is configured.",
    )
    duplicate_unique_id_is_success: bool = Field(
        False,
        description="Count a Failure whose only error is XDSDuplicateUniqueIdInRegistry as delivered: the document "
        "is already registered, e.g. by an earlier attempt whose answer was lost.",
    )
    error_context: Literal["redacted", "none"] = Field(
        "redacted", description="What of each RegistryError codeContext goes into the rejection reason."
    )

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("endpoint must be an http(s) URL")
        return value


def classify_registry_response(
    result: RegistryResult, *, duplicate_is_success: bool = False, error_context: str = "redacted"
) -> None:
    """Return on ACCEPT; raise ``Rejected`` or ``Retryable`` for the other RegistryResponse outcomes."""
    errors = [e for e in result.errors if e.is_error]
    if result.status == "Success":
        return
    codes = list(dict.fromkeys(e.code or "unknown" for e in errors)) or ["no error code"]
    if result.status == "Failure" and duplicate_is_success and codes == ["XDSDuplicateUniqueIdInRegistry"]:
        return
    details = []
    for e in errors:
        ctx = redact_context(e.context) if error_context == "redacted" and e.context else ""
        details.append(f"{e.code}: {ctx}" if ctx else e.code)
    detail = "; ".join(dict.fromkeys(details)) or "no error code"
    if result.status == "Failure" and set(codes) <= TRANSIENT_ERROR_CODES:
        raise Retryable(f"registry busy or unavailable ({', '.join(codes)})")
    if result.status == "PartialSuccess":
        raise Rejected(f"XDS PartialSuccess (the DMP does not do partial): {detail}", ack_code=codes[0])
    raise Rejected(f"XDS {result.status or 'unknown status'}: {detail}", ack_code=codes[0])


def _secret_connection(metadata: Mapping[str, str]) -> bool:
    """MetaDMPMSS CONNEXION_SECRETE (metadata ``secret_connection``): Y, N or absent; anything else refused."""
    value = metadata.get("secret_connection", "")
    if value not in ("", "Y", "N"):
        raise MappingError("MetaDMPMSS flag secret_connection must be Y or N", location="OBX")
    return value == "Y"


def _fault_error(fault: SoapFault, status: int) -> Retryable:
    return Retryable(f"SOAP fault {fault.summary()} (HTTP {status})")


@register("outbound", "xds", config=XdsOutboundConfig)
class XdsOutbound:
    """Send a CDA document with IHE XDS.b ITI-41 (SOAP 1.2, MTOM, VIHF) and classify the RegistryResponse."""

    def __init__(self, name: str, config: XdsOutboundConfig) -> None:
        self.name = name
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        tls = config.tls
        self._signer = (
            VihfSigner(config.vihf, cert_file=tls.cert_file if tls else None, key_file=tls.key_file if tls else None)
            if config.vihf is not None
            else None
        )
        if config.sign_lot and self._signer is None:
            raise ConfigError("xds: sign_lot needs signing material (configure vihf)")
        sign = self._signer is not None and config.sign_lot is not False
        self._lot_signer = self._signer.lot_signer() if sign and self._signer is not None else None

    async def start(self) -> None:
        """The HTTP session is opened here; connections are made on first use."""
        if self._session is None:
            ssl_ctx = client_context(self.config.tls) if self.config.tls else None
            connector = VerifyingConnector(ssl=ssl_ctx if ssl_ctx is not None else True, limit=8)
            timeout = aiohttp.ClientTimeout(
                total=self.config.response_timeout_secs, sock_connect=self.config.connect_timeout_secs
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "protocol": "xds", "to": self.config.endpoint}

    def build_request(self, message: Message, *, now: dt.datetime | None = None) -> tuple[bytes, str, str]:
        """(HTTP body, Content-Type, WS-Addressing MessageID) of the ITI-41 request for ``message``.

        Raises :class:`hub.errors.MappingError` when the document cannot feed the DMP.
        """
        now = now or utcnow()
        sub = build_submission(
            message.body,
            self.config.metadata,
            submission_id=message.id,
            submission_time=now,
            metadata=message.metadata,
        )
        if self._lot_signer is not None:
            sub = sign_submission(sub, self._lot_signer, now=now)
        cid = f"{sub.document_entry.entry_uuid.removeprefix('urn:uuid:')}@interop-hub"
        sig_cid = f"{sub.signature.entry_uuid.removeprefix('urn:uuid:')}@interop-hub" if sub.signature else ""
        body = provide_and_register_request(
            sub,
            xop_href=cid_href(cid) if self.config.mtom else None,
            signature_href=cid_href(sig_cid) if self.config.mtom and sig_cid else None,
        )
        security = []
        if self._signer is not None and self.config.vihf is not None:
            lot = sub.submission_set.author
            subject = subject_for(
                self.config.vihf,
                lot.person,
                lot.specialties,
                lot.institutions[0] if lot.institutions else "",
                sub.document_entry.healthcare_facility_type_code.code,
            )
            try:
                assertion = build_assertion(
                    self.config.vihf,
                    issuer=self._signer.issuer,
                    # Identifiant_Structure: the lot's structure (PRT-8.10), so several structures share one hub.
                    structure_id=subject.structure_id
                    or self.config.vihf.structure_id
                    or self.config.metadata.structure.id_nat,
                    resource_id=sub.document_entry.patient_id,
                    now=now,
                    subject=subject,
                    tls_client=bool(self.config.tls and self.config.tls.cert_file),
                    secret_connection=_secret_connection(message.metadata),
                )
            except ValueError as exc:
                raise MappingError(str(exc)) from None
            security.append(self._signer.sign(assertion))
        # A fresh wsa:MessageID per attempt (it names one transmission); the lot uniqueId stays stable.
        env = envelope(body, action=ACTION_PNR, to=self.config.endpoint, security=security)
        sent_id = env.findtext("{*}Header/{http://www.w3.org/2005/08/addressing}MessageID") or ""
        xml = etree.tostring(env, xml_declaration=True, encoding="UTF-8")
        if not self.config.mtom:
            return xml, f'application/soap+xml; charset=UTF-8; action="{ACTION_PNR}"', sent_id
        parts = [Part(cid, sub.document_entry.mime_type, sub.document)]
        if sub.signature is not None:
            parts.append(Part(sig_cid, sub.signature.mime_type, sub.signature_document))
        data, ctype = encode_related(xml, parts, action=ACTION_PNR)
        return data, ctype, sent_id

    async def send(self, message: Message) -> PeerReply:
        data, ctype, sent_id = self.build_request(message)
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.post(
                self.config.endpoint, data=data, headers={"Content-Type": ctype}, allow_redirects=False
            ) as resp:
                status = resp.status
                resp_ctype = resp.headers.get("Content-Type", "")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                body = await self._read(resp)
        except aiohttp.ConnectionTimeoutError:
            raise Unreachable(f"no connection within {self.config.connect_timeout_secs:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, TLS handshake: nothing was sent
            raise Unreachable(f"cannot reach the XDS endpoint: {type(exc).__name__}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise Retryable(f"no answer within {self.config.response_timeout_secs:g}s") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise NotConnected(f"cannot reach the XDS endpoint: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise Retryable(f"HTTP exchange failed: {type(exc).__name__}") from None
        reply = PeerReply.of(ReplyKind.HTTP, str(status), body, content_type=resp_ctype)
        try:
            verdict = self._classify(status, resp_ctype, body, retry_after, sent_id)
        except (Retryable, Rejected) as exc:
            raise exc.with_reply(reply) from None
        return dataclasses.replace(reply, summary=f"{status} {verdict}")

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise Retryable(f"answer over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _envelope_of(self, body: bytes, content_type: str) -> bytes:
        media, _ = content_type_params(content_type) if content_type else ("", {})
        if media.startswith("multipart/"):
            return decode_related(body, content_type).root.body
        return body

    def _classify(self, status: int, content_type: str, body: bytes, retry_after: float | None, sent_id: str) -> str:
        """The RegistryResponse status on ACCEPT; raise Retryable / Rejected otherwise."""
        try:
            soap = read_envelope(self._envelope_of(body, content_type), max_bytes=self.config.max_response_bytes)
        except (SoapError, MtomError):
            soap = None
        if soap is not None and soap.fault is not None:
            raise _fault_error(soap.fault, status)
        if status >= 500 or status in (408, 429):
            raise Retryable(f"HTTP {status} from the XDS endpoint", retry_after_secs=retry_after)
        if status >= 400:
            raise Rejected(f"HTTP {status} from the XDS endpoint", ack_code=str(status))
        if status >= 300:
            raise Rejected(f"HTTP {status} (redirect) from the XDS endpoint", ack_code=str(status))
        if soap is None or soap.body is None:
            # 2xx without a readable RegistryResponse: whether the document was stored is unknown.
            raise Retryable(f"HTTP {status} without a SOAP RegistryResponse")
        if soap.relates_to and sent_id and soap.relates_to != sent_id:
            raise Retryable("answer relates to another request (wsa:RelatesTo differs)")
        try:
            result = read_registry_response(soap.body)
        except ValueError:
            raise Retryable("SOAP answer is not a RegistryResponse") from None
        classify_registry_response(
            result,
            duplicate_is_success=self.config.duplicate_unique_id_is_success,
            error_context=self.config.error_context,
        )
        return result.status[:32]
