"""TLS settings shared by every listener and client (MLLP, HTTP, SMTP, XDS, FHIR).

* TLS 1.2 and 1.3 only; in TLS 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 only (no CBC suite: ANSSI's TLS
  guide, R5/R6, keeps AEAD suites with forward secrecy).
* Revocation: ``crl_files`` are certificate revocation lists (RFC 5280 §5) of the CAs in ``ca_file`` (the
  IGC-Santé CAs publish theirs), checked for the peer's certificate on both sides. ``revocation: hard``
  refuses a peer whose issuer has no valid CRL here (missing, unreadable or past its nextUpdate); ``soft``
  then lets it through with a warning. A certificate a valid CRL lists is refused in both modes. The files
  are re-read every ``crl_refresh_secs`` when they changed, so that the process that fetches them (a cron
  job, the operator) needs no restart of the hub.
* Online revocation (:mod:`hub.revocation`): when ``ca_file`` names the trust space, a peer certificate that
  names an OCSP responder or a CRL distribution point is checked there right after the handshake
  (:func:`verify_peer`, called by every TLS endpoint before it reads or writes a byte of the exchange), with
  the same ``revocation`` mode: a revoked certificate is refused in both, an unknown status in ``hard`` only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import weakref
from pathlib import Path
from typing import Literal

import structlog
from cryptography import x509
from pydantic import Field

from hub.registry import ComponentConfig
from hub.revocation import OnlinePolicy, RevocationChecker, RevocationError, load_anchors

__all__ = ["RevocationError", "TlsConfig", "apply_policy", "client_context", "server_context", "verify_peer"]

log = structlog.get_logger("hub.tls")
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"


class TlsConfig(ComponentConfig):
    cert_file: str | None = Field(None, description="PEM certificate chain presented by this side.")
    key_file: str | None = Field(None, description="PEM private key of `cert_file`.")
    ca_file: str | None = Field(
        None, description="PEM trust anchors used to verify the peer (system store when unset, client side)."
    )
    require_client_cert: bool = Field(
        False,
        description="Server side: refuse clients without a certificate signed by `ca_file` (mutual TLS).",
    )
    verify: bool = Field(True, description="Client side: verify the server certificate and host name.")
    server_hostname: str | None = Field(None, description="Client side: name expected in the server certificate.")
    crl_files: list[str] = Field(
        default_factory=list,
        description="PEM certificate revocation lists of the CAs of ca_file: a peer certificate they list is refused.",
    )
    revocation: Literal["hard", "soft"] = Field(
        "hard",
        description="With crl_files: `hard` refuses a peer whose issuer has no valid CRL here (missing, unreadable, "
        "expired); `soft` lets it through with a warning. A listed (revoked) certificate is refused in both modes.",
    )
    crl_refresh_secs: float = Field(300.0, gt=0, description="How often crl_files are re-read when they changed.")
    ocsp: bool = Field(
        True,
        description="With ca_file: ask the OCSP responder a peer certificate names (RFC 6960) after the handshake; "
        "answers cached until their nextUpdate.",
    )
    crl_distribution_points: bool = Field(
        True,
        description="With ca_file: for a peer certificate with no OCSP responder, fetch the CRL its distribution "
        "point names (RFC 5280 §4.2.1.13), cached until its nextUpdate.",
    )
    online_timeout_secs: float = Field(
        5.0, gt=0, description="Time limit of one OCSP request or CRL download (then `revocation` decides)."
    )


def server_context(cfg: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not cfg.cert_file:
        raise ValueError("a TLS listener needs cert_file")
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if cfg.ca_file:
        ctx.load_verify_locations(cfg.ca_file)
    if cfg.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    apply_policy(ctx, cfg)
    return ctx


def client_context(cfg: TlsConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    apply_policy(ctx, cfg)
    return ctx


def apply_policy(ctx: ssl.SSLContext, cfg: TlsConfig) -> None:
    """The cipher suites and the revocation checks every context of the hub has (module docstring)."""
    ctx.set_ciphers(_CIPHERS)
    if cfg.crl_files:
        _Crls(ctx, cfg).load()
    if cfg.ca_file and (cfg.ocsp or cfg.crl_distribution_points) and ctx.verify_mode != ssl.CERT_NONE:
        _online[ctx] = OnlinePolicy(
            mode=cfg.revocation, anchors=_anchors(cfg.ca_file), ocsp=cfg.ocsp,
            crl_distribution_points=cfg.crl_distribution_points, timeout_secs=cfg.online_timeout_secs,
        )  # fmt: skip


#: The online checks of each context (weak: a context made per connection goes with it).
_online: weakref.WeakKeyDictionary[ssl.SSLContext, OnlinePolicy] = weakref.WeakKeyDictionary()
#: One cache of answers for the process: every endpoint that meets a certificate shares its status.
checker = RevocationChecker()


def _anchors(ca_file: str) -> tuple[x509.Certificate, ...]:
    path = Path(ca_file)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    anchors = _anchor_cache.get(key)
    if anchors is None:
        anchors = load_anchors(path.read_bytes())
        _anchor_cache.clear()  # a changed file replaces the old entry; one file per process is typical
        _anchor_cache[key] = anchors
    return anchors


_anchor_cache: dict[tuple[str, int, int], tuple[x509.Certificate, ...]] = {}


async def verify_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> None:
    """Right after a handshake: the online revocation checks of the connection's context, if it has any.

    Raises :class:`RevocationError` when the peer must be refused (module docstring). A connection without
    TLS, a context without online checks and a peer without a certificate (a server not asking for one)
    pass at once.
    """
    if ssl_object is None:
        return
    policy = _online.get(ssl_object.context)
    if policy is None:
        return
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        await checker.check(der, policy)


class _Crls:
    """Loads the CRL files into one context, and again when they change (while the context lives)."""

    def __init__(self, ctx: ssl.SSLContext, cfg: TlsConfig) -> None:
        self._ctx = weakref.ref(ctx)
        self.cfg = cfg
        self._seen: dict[str, float] = {}

    def load(self) -> None:
        ctx = self._ctx()
        if ctx is None:
            return
        usable = True
        now = dt.datetime.now(dt.UTC)
        for name in self.cfg.crl_files:
            path = Path(name)
            try:
                mtime = path.stat().st_mtime
                crls = _read_crls(path)
            except (OSError, ValueError) as exc:
                log.warning("crl_unusable", file=path.name, error=type(exc).__name__)
                usable = False
                continue
            if any((c.next_update_utc or now) < now for c in crls):
                log.warning("crl_expired", file=path.name)
                usable = False
            if self._seen.get(name) != mtime:
                # A newer CRL of the same issuer is added beside the old one; OpenSSL uses the most recent.
                ctx.load_verify_locations(cafile=str(path))
                self._seen[name] = mtime
        check = ssl.VERIFY_CRL_CHECK_LEAF
        if usable or self.cfg.revocation == "hard":
            ctx.verify_flags |= check
        else:
            ctx.verify_flags &= ~check  # soft: no valid CRL, no check (warned above)
        self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # built outside an event loop (a command-line client): read once
        loop.call_later(self.cfg.crl_refresh_secs, self.load)


def _read_crls(path: Path) -> list[x509.CertificateRevocationList]:
    data = path.read_bytes()
    blocks = [b for b in data.split(b"-----END X509 CRL-----") if b"-----BEGIN X509 CRL-----" in b]
    if not blocks:
        raise ValueError("no PEM CRL in the file")
    return [x509.load_pem_x509_crl(b + b"-----END X509 CRL-----\n") for b in blocks]
