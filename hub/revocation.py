"""Online revocation status of a TLS peer's certificate: OCSP (RFC 6960) and CRL distribution points.

The CRL files of ``tls.crl_files`` are checked by OpenSSL during the handshake (:mod:`hub.tls`). Many
certificates of a trust space also name where their status is published: an OCSP responder in their
Authority Information Access extension (RFC 5280 §4.2.2.1) and/or a CRL in their CRL Distribution Points
(RFC 5280 §4.2.1.13). Python's ssl module cannot ask those during the handshake, so every TLS endpoint
of the hub asks right after it (:func:`hub.tls.verify_peer`), before a byte of the exchange is read
or written:

1. OCSP first, when the certificate names an ``http`` responder: a request for the certificate's
   CertID (SHA-1 hashes, as the RFC 5019 lightweight profile that responders serve requires), the answer
   checked as RFC 6960 §3.2 says: signed by the issuer or by a responder the issuer delegated
   (``id-kp-OCSPSigning``, §4.2.2.2), about this certificate, current (thisUpdate not in the future,
   nextUpdate not past; five minutes of clock skew).
2. Else the CRL of its first ``http`` distribution point, checked like a CRL file: signed by the issuer,
   current, then the serial looked up.
3. A certificate naming neither is left to the CRL files (nothing to ask online).

Answers are cached per certificate (issuer key hash + serial) until the responder's nextUpdate (at most
``max_cache_secs``), CRLs per URL likewise; concurrent handshakes of one certificate share one request.
A revoked certificate is always refused. When the status cannot be established (responder down, bad or
stale answer, status ``unknown``, issuer not among the trust anchors), ``hard`` refuses and ``soft``
lets the peer through with a warning; that failure is cached for ``failure_cache_secs`` so that a dead
responder costs one time-out, not one per connection.

Only the trust space is checked: a context without explicit anchors (``ca_file``, e.g. a webhook to a
public web site) is never checked online. The issuer is looked for among the anchors of ``ca_file``: put
the intermediate CAs there too (IGC-Santé publishes its chains as files for this).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import aiohttp
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

__all__ = ["OnlinePolicy", "RevocationChecker", "RevocationError", "load_anchors"]

log = structlog.get_logger("hub.revocation")

_SKEW = dt.timedelta(minutes=5)
_MAX_RESPONSE_BYTES = 1 << 20  # an OCSP answer is a few kB; a CRL of a large CA a few hundred kB


class RevocationError(Exception):
    """The peer's certificate is revoked, or (hard mode) its status could not be established.

    The text says which and why, never who (a certificate's subject may name a person).
    """


class _Unknown(Exception):
    """The status could not be established (the mode decides)."""


@dataclasses.dataclass(frozen=True)
class OnlinePolicy:
    """What one TLS context asks online, and what it does when no answer can be had."""

    mode: Literal["hard", "soft"]
    anchors: tuple[x509.Certificate, ...]
    ocsp: bool = True
    crl_distribution_points: bool = True
    timeout_secs: float = 5.0


@dataclasses.dataclass
class _Status:
    revoked: bool
    until: float  # time.monotonic() after which the answer is asked again
    reason: str = ""


_Key = tuple[bytes, bool, bool]  # the certificate's DER, and which online sources the policy asks
_MAX_CACHED = 10_000

Fetch = Callable[[str, bytes | None, float], Awaitable[bytes]]


async def http_fetch(url: str, body: bytes | None, timeout: float) -> bytes:
    """GET `url` (a CRL) or POST `body` to it (an OCSP request, RFC 6960 Appendix A.1); the answer's bytes."""
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as http:
        if body is None:
            request = http.get(url)
        else:
            request = http.post(url, data=body, headers={"Content-Type": "application/ocsp-request"})
        async with request as resp:
            if resp.status != 200:
                raise _Unknown(f"responder answered HTTP {resp.status}")
            data = await resp.content.read(_MAX_RESPONSE_BYTES + 1)
            if len(data) > _MAX_RESPONSE_BYTES:
                raise _Unknown("responder's answer too large")
            return data


class RevocationChecker:
    """The process's cache of online revocation answers (module docstring)."""

    def __init__(
        self, *, fetch: Fetch = http_fetch, max_cache_secs: float = 3600.0, failure_cache_secs: float = 30.0
    ) -> None:
        self._fetch = fetch
        self.max_cache_secs = max_cache_secs
        self.failure_cache_secs = failure_cache_secs
        self._status: dict[_Key, _Status] = {}
        self._crls: dict[str, tuple[x509.CertificateRevocationList, float]] = {}
        self._inflight: dict[_Key, asyncio.Future[_Status]] = {}
        self.requests = 0  # OCSP requests and CRL downloads made (tests and metrics)

    async def check(self, cert_der: bytes, policy: OnlinePolicy) -> None:
        """Raise RevocationError unless the certificate may be used now (module docstring).

        A known certificate costs one dictionary lookup (its DER bytes are the key): the HTTP server asks on
        every request of a mutual-TLS connection.
        """
        key = (cert_der, policy.ocsp, policy.crl_distribution_points)
        status = self._status.get(key)
        if status is None or status.until <= time.monotonic():
            status = await self._status_of(key, policy)
        if status.revoked:
            raise RevocationError(status.reason)
        if status.reason:  # unknown
            if policy.mode == "hard":
                raise RevocationError(f"revocation status unknown ({status.reason})")
            log.warning("revocation_unknown_soft", reason=status.reason)

    async def _status_of(self, key: _Key, policy: OnlinePolicy) -> _Status:
        """Ask for the status, once for all the handshakes of the same certificate that wait meanwhile."""
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                return await self._status_of(key, policy)  # the asking caller was: ask again
        pending = asyncio.get_running_loop().create_future()
        self._inflight[key] = pending
        try:
            status = await self._ask(x509.load_der_x509_certificate(key[0]), policy)
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: the waiters (if any) re-raise it themselves
            raise
        except BaseException:  # cancelled: the waiters ask again
            pending.cancel()
            raise
        finally:
            del self._inflight[key]
        pending.set_result(status)
        if len(self._status) >= _MAX_CACHED:
            del self._status[next(iter(self._status))]  # the oldest entry
        self._status[key] = status
        return status

    async def _ask(self, cert: x509.Certificate, policy: OnlinePolicy) -> _Status:
        now = time.monotonic()
        ocsp_urls = _ocsp_urls(cert) if policy.ocsp else []
        crl_urls = _crl_urls(cert) if policy.crl_distribution_points else []
        if not ocsp_urls and not crl_urls:
            return _Status(revoked=False, until=math.inf)  # nothing to ask online: the CRL files decide
        try:
            issuer = _issuer_of(cert, policy.anchors)
            if ocsp_urls:
                revoked, next_update = await self._ocsp(cert, issuer, ocsp_urls[0], policy.timeout_secs)
                how = "OCSP"
            else:
                revoked, next_update = await self._crl(cert, issuer, crl_urls[0], policy.timeout_secs)
                how = "CRL distribution point"
        except (_Unknown, aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, _Unknown) else f"{type(exc).__name__} asking the responder"
            log.info("revocation_status_unknown", reason=reason)
            return _Status(revoked=False, until=now + self.failure_cache_secs, reason=reason)
        ttl = self.max_cache_secs
        if next_update is not None:
            ttl = min(ttl, max(0.0, (next_update - dt.datetime.now(dt.UTC)).total_seconds()))
        if revoked:
            return _Status(revoked=True, until=now + self.max_cache_secs, reason=f"certificate revoked ({how})")
        return _Status(revoked=False, until=now + ttl)

    async def _ocsp(
        self, cert: x509.Certificate, issuer: x509.Certificate, url: str, timeout: float
    ) -> tuple[bool, dt.datetime | None]:
        # SHA-1 CertID: the hash RFC 5019 §2.1.1 responders must understand (an identifier, not a signature).
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
        self.requests += 1
        answer = ocsp.load_der_ocsp_response(
            await self._fetch(url, request.public_bytes(serialization.Encoding.DER), timeout)
        )
        if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise _Unknown(f"OCSP responder answered {answer.response_status.name}")
        _check_ocsp_signature(answer, issuer)
        for single in answer.responses:
            if single.serial_number != cert.serial_number or single.issuer_key_hash != _key_hash(
                issuer, single.hash_algorithm
            ):
                continue
            _check_current(single.this_update_utc, single.next_update_utc, "OCSP answer")
            if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
                return True, single.next_update_utc
            if single.certificate_status == ocsp.OCSPCertStatus.UNKNOWN:
                raise _Unknown("OCSP responder does not know the certificate")
            return False, single.next_update_utc
        raise _Unknown("OCSP answer is about another certificate")

    async def _crl(
        self, cert: x509.Certificate, issuer: x509.Certificate, url: str, timeout: float
    ) -> tuple[bool, dt.datetime | None]:
        cached = self._crls.get(url)
        if cached is None or cached[1] <= time.monotonic():
            self.requests += 1
            data = await self._fetch(url, None, timeout)
            crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
            if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                raise _Unknown("CRL not signed by the certificate's issuer")
            _check_current(crl.last_update_utc, crl.next_update_utc, "CRL")
            ttl = self.max_cache_secs
            if crl.next_update_utc is not None:
                ttl = min(ttl, (crl.next_update_utc - dt.datetime.now(dt.UTC)).total_seconds())
            self._crls[url] = (crl, time.monotonic() + ttl)
        else:
            crl = cached[0]
        revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        return revoked, crl.next_update_utc


def load_anchors(pem: bytes) -> tuple[x509.Certificate, ...]:
    """Every certificate of a PEM bundle (the trust anchors and intermediates of ``ca_file``)."""
    return tuple(x509.load_pem_x509_certificates(pem))


def _ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith("http://")  # RFC 6960 A.1: OCSP over plain HTTP
    ]


def _crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(("http://", "https://"))
    ]


def _issuer_of(cert: x509.Certificate, anchors: Sequence[x509.Certificate]) -> x509.Certificate:
    for candidate in anchors:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    raise _Unknown("issuer not among the trust anchors (add the intermediate CA to ca_file)")


def _key_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """The hash of the issuer's subjectPublicKey bits, as a CertID carries it (RFC 6960 §4.1.1)."""
    digest = hashes.Hash(algorithm)
    digest.update(_public_key_bits(issuer))
    return digest.finalize()


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's bits (RFC 5280 §4.1: SEQUENCE { AlgorithmIdentifier, BIT STRING })."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    _, body = _der_item(spki, 0)  # the outer SEQUENCE
    end_of_algorithm, _ = _der_item(spki, body)
    _, bits = _der_item(spki, end_of_algorithm)
    return spki[bits + 1 :]  # after the "unused bits" octet (0 for keys)


def _der_item(der: bytes, at: int) -> tuple[int, int]:
    """(end of the DER item at `at`, start of its contents); definite lengths only, as DER requires."""
    length = der[at + 1]
    start = at + 2
    if length & 0x80:
        octets = length & 0x7F
        length = int.from_bytes(der[start : start + octets], "big")
        start += octets
    return start + length, start


def _check_current(this_update: dt.datetime, next_update: dt.datetime | None, what: str) -> None:
    now = dt.datetime.now(dt.UTC)
    if this_update > now + _SKEW:
        raise _Unknown(f"{what} issued in the future")
    if next_update is not None and next_update < now - _SKEW:
        raise _Unknown(f"{what} is stale (past its nextUpdate)")


def _check_ocsp_signature(answer: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """The answer is signed by the issuer, or by a responder the issuer delegated (RFC 6960 §4.2.2.2)."""
    signer = issuer
    if not _names_signer(answer, issuer):
        signer = _delegated_responder(answer, issuer)
    _verify(signer, answer.signature, answer.tbs_response_bytes, answer.signature_hash_algorithm)


def _names_signer(answer: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if answer.responder_name is not None:
        return answer.responder_name == cert.subject
    return answer.responder_key_hash == _key_hash(cert, hashes.SHA1())  # RFC 6960 §4.2.1: KeyHash is SHA-1


def _delegated_responder(answer: ocsp.OCSPResponse, issuer: x509.Certificate) -> x509.Certificate:
    for cert in answer.certificates:
        if not _names_signer(answer, cert):
            continue
        try:
            cert.verify_directly_issued_by(issuer)
            usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            now = dt.datetime.now(dt.UTC)
            if cert.not_valid_before_utc - _SKEW <= now <= cert.not_valid_after_utc + _SKEW:
                return cert
    raise _Unknown("OCSP answer not signed by the issuer nor by a responder it delegated")


def _verify(signer: x509.Certificate, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> None:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise _Unknown("OCSP answer signed with an unsupported key type")
    except InvalidSignature:
        raise _Unknown("OCSP answer's signature does not verify") from None
