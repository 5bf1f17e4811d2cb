"""What the SMTP listeners, the MSSanté client and the peer sandbox share.

* :class:`HostedMailbox` — a mailbox the operator hosts (personal, organisational
  or application, the three MSSanté kinds, DOMAIN.md §6 and seed "BAL").
* :class:`TrustList` — the operator domains of the MSSanté trust space, read from
  a file (one domain a line, ``#`` comments, ``*.example.fr`` for every
  subdomain) and re-read when the file changes. The ANS format and download of
  the list are unverified (DOMAIN.md §6): this is the hub's own format.
* Passwords of submission users: ``scrypt$N$r$p$<salt>$<hash>`` (RFC 7914 scrypt,
  16-byte random salt, 32-byte key, base64), made by :func:`hash_password`
  (``python -m adapters.smtp.common`` prints one) and checked in constant time.
  scrypt is memory-hard, which is what a password KDF should be; N=2^14, r=8,
  p=1 is the interactive-login setting of RFC 7914 §2.
* TLS: the server context of an SMTP listener asks for a client certificate
  (``CERT_OPTIONAL``) when trust anchors are configured, so a peer without one
  gets a clear SMTP refusal after STARTTLS rather than a bare TLS alert; a
  certificate that does not chain to the anchors still fails the handshake.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from adapters.tls import TlsConfig
from hub.registry import ComponentConfig
from hub.tls import apply_policy

__all__ = [
    "HostedMailbox",
    "MailboxKind",
    "Mailboxes",
    "SubmissionUser",
    "TrustList",
    "certificate_name",
    "hash_password",
    "host_port",
    "peer_certificate",
    "quiet_library_logs",
    "received_header",
    "server_tls_context",
    "verify_password",
]

MailboxKind = Literal["personal", "organisational", "application"]
_ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$")
_DOMAIN = re.compile(r"^(\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")


class HostedMailbox(ComponentConfig):
    """A mailbox hosted by this operator."""

    address: str = Field(description="The mailbox address, e.g. `dpi-integration@hub.mssante.fr`.")
    kind: MailboxKind = Field(
        description="personal (BAL nominative), organisational (BAL de service) or application (BAL applicative): "
        "mail to an application mailbox enters the engine (IHE_XDM.ZIP unpacked, one message per CDA)."
    )
    organization: str = Field(
        "",
        description="HL7 v2 XON of the organisation this mailbox serves (service, UF), written in PRT-8 of the MDM "
        "sent to the DPI (volet trans-lps, note 3).",
    )
    status: Literal["active", "suspended"] = Field(
        "active", description="A suspended mailbox receives nothing (550 5.2.1) and nobody can log in to it."
    )
    owner: str = Field(
        "",
        pattern=r"^([0-9]{9,14})?$",
        description="National identifier of the owner: idNat_PS (`8`+RPPS) of a personal mailbox's professional, "
        "idNat_Struct (`1`+FINESS, `3`+SIRET) of the structure holding an organisational or application mailbox. "
        "A Pro Santé Connect token whose subject is this idNat_PS opens a personal mailbox.",
    )
    members: list[str] = Field(
        default_factory=list,
        description="idNat_PS of the professionals who may open an organisational mailbox with their token or card.",
    )
    certificates: list[str] = Field(
        default_factory=list,
        description="Client certificate names (the listener's `cert_username_field`, commonName by default) that "
        "open this mailbox: the professional's CPS/CPx, or the application's own server certificate.",
    )
    password_hash: str | None = Field(
        None,
        pattern=r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$",
        description="`scrypt$N$r$p$salt$hash` when a password may open it (only where the listener's "
        "`password_kinds` allows it); none: no password login.",
    )
    quota_bytes: int | None = Field(None, ge=0, description="Storage quota served by IMAP (none: unlimited).")
    retention_days: int | None = Field(
        None,
        ge=1,
        description="Messages received more than this many days ago are expunged (by the imap listener, every "
        "retention_interval_secs); none: kept.",
    )

    @field_validator("address")
    @classmethod
    def _plain_address(cls, v: str) -> str:
        if not _ADDRESS.match(v):
            raise ValueError("must be a plain local@domain address")
        return v.lower()


class Mailboxes:
    """Hosted mailboxes by address (case-insensitive), and the operator's domains.

    Those declared in the config, plus those of the mailbox directory (``adapters.smtp.directory``) when one
    is given, read again when its file changes; an address lives in one or the other.
    """

    def __init__(
        self, mailboxes: Iterable[HostedMailbox], domains: Iterable[str] = (), *, directory: Any = None
    ) -> None:
        self.declared = {m.address.lower(): m for m in mailboxes}
        self.directory = directory
        self._domains = {d.lower() for d in domains}

    @property
    def by_address(self) -> dict[str, HostedMailbox]:
        if self.directory is None:
            return self.declared
        return {**self.directory.mailboxes(), **self.declared}

    @property
    def domains(self) -> set[str]:
        return self._domains | {a.rpartition("@")[2] for a in self.by_address}

    def get(self, address: str) -> HostedMailbox | None:
        return self.by_address.get(address.lower())

    def hosts_domain(self, address: str) -> bool:
        return address.rpartition("@")[2].lower() in self.domains


class SubmissionUser(ComponentConfig):
    """A client of the submission port (an LPS, a DUI, an application)."""

    username: str = Field(min_length=1, description="Login name (AUTH PLAIN / LOGIN).")
    password_hash: str = Field(
        pattern=r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$",
        description="`scrypt$N$r$p$salt$hash` from `python -m adapters.smtp.common` (never the password itself; "
        "use ${ENV} to keep it out of git).",
    )
    addresses: list[str] = Field(
        min_length=1, description="Sender addresses (MAIL FROM) this user may use: hosted mailboxes."
    )

    @field_validator("addresses")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [a.lower() for a in v]


class TrustList:
    """Operator domains of the MSSanté trust space, from a file re-read when it changes."""

    def __init__(self, path: str | None, *, extra: Iterable[str] = ()) -> None:
        self.path = path
        self.extra = {d.lower() for d in extra}
        self._mtime: float | None = None
        self._exact: set[str] = set()
        self._suffixes: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Read the file again if it changed; an unreadable file keeps the last good list."""
        if not self.path:
            self._exact, self._suffixes = set(self.extra), ()
            return
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            if self._mtime is None:
                raise
            return
        if mtime == self._mtime:
            return
        with open(self.path, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0].strip().lower() for line in f]
        domains = [d for d in lines if d and _DOMAIN.match(d)]
        with self._lock:
            self._exact = {d for d in domains if not d.startswith("*.")} | self.extra
            self._suffixes = tuple(d[1:] for d in domains if d.startswith("*."))
            self._mtime = mtime

    def __contains__(self, domain: object) -> bool:
        if not isinstance(domain, str):
            return False
        self.reload()
        d = domain.lower().rstrip(".")
        return d in self._exact or d.endswith(self._suffixes)

    def __len__(self) -> int:
        return len(self._exact) + len(self._suffixes)


# --------------------------------------------------------------------------- passwords

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
# A hash to check when the user is unknown, so that a wrong login takes as long as a wrong password.
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def hash_password(password: str, *, n: int = _SCRYPT_N, r: int = _SCRYPT_R, p: int = _SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$key`` for a password (RFC 7914; random 16-byte salt, 32-byte key)."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=128 * n * r * p + 2**20)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, encoded: str | None) -> bool:
    """Whether ``password`` matches ``encoded``; constant-time comparison, unknown users cost the same."""
    scheme, n, r, p, salt, key = (encoded or _DUMMY).split("$")
    if scheme != "scrypt" or int(n) > 2**20 or int(r) > 32 or int(p) > 16:
        return False
    expected = base64.b64decode(key)
    got = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
        maxmem=128 * int(n) * int(r) * int(p) + 2**20,
    )
    return hmac.compare_digest(got, expected) and encoded is not None


# --------------------------------------------------------------------------- TLS and misc


def server_tls_context(cfg: TlsConfig, *, ask_client_cert: bool) -> ssl.SSLContext:
    """Server context for STARTTLS: TLS 1.2+, and a client certificate asked for (not required) if wanted."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not cfg.cert_file:
        raise ValueError("an SMTP listener needs tls.cert_file")
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if ask_client_cert:
        if not cfg.ca_file:
            raise ValueError("checking client certificates needs tls.ca_file (the trust anchors)")
        ctx.load_verify_locations(cfg.ca_file)
        # CERT_OPTIONAL: a certificate that does not chain to the anchors fails the handshake; no
        # certificate at all is refused in SMTP (530) so the peer operator sees why.
        ctx.verify_mode = ssl.CERT_OPTIONAL
    apply_policy(ctx, cfg)  # AEAD suites only; the trust space's CRLs
    return ctx


def peer_certificate(session_ssl: Mapping[str, object] | None) -> Mapping[str, object] | None:
    """The verified client certificate of a TLS session (``getpeercert()``), or None."""
    if not session_ssl:
        return None
    obj = session_ssl.get("ssl_object")
    if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        return None
    cert = obj.getpeercert()
    return cert or None


def certificate_name(cert: Mapping[str, object] | None) -> str:
    """The subject CN of a ``getpeercert()`` dict ("" when none)."""
    subject = cert.get("subject", ()) if cert else ()
    if not isinstance(subject, tuple):
        return ""
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def quiet_library_logs() -> None:
    """aiosmtpd logs every command line at INFO (``mail.log``), recipients included: keep it to warnings."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def received_header(*, helo: str, peer_ip: str, by: str, protocol: str, message_id: str, when: dt.datetime) -> bytes:
    """The trace field a relay adds on top of the message (RFC 5321 §4.4; ``with`` per RFC 3848)."""
    helo = re.sub(r"[^A-Za-z0-9.\-\[\]:]", "", helo)[:255] or "unknown"
    peer_ip = re.sub(r"[^0-9A-Fa-f.:]", "", peer_ip)[:64]
    stamp = email.utils.format_datetime(when.astimezone(dt.UTC))
    return (
        f"Received: from {helo} ([{peer_ip}])\r\n\tby {by} (interop-hub) with {protocol} id {message_id};\r\n"
        f"\t{stamp}\r\n"
    ).encode()


if __name__ == "__main__":  # pragma: no cover - operator tool
    import getpass

    print(hash_password(getpass.getpass("password: ")))


async def close_smtp_server(server: asyncio.base_events.Server | None, protocols: Iterable[Any]) -> None:
    """Stop an aiosmtpd server: no new connections, each session's handler cancelled, its socket closed."""
    if server is not None:
        server.close()
    for proto in list(protocols):
        if proto._handler_coroutine is not None:
            proto._handler_coroutine.cancel()
        if proto.transport is not None:
            proto.transport.close()
    if server is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
