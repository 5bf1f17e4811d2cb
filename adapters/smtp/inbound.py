"""The two SMTP listeners of the hub as an MSSanté operator: `smtp_mta` (2525) and `smtp_submission` (5587).

Both are aiosmtpd servers running on the hub's own event loop. What they
enforce, and the reply each refusal gets:

==================================================  ========================================================
no STARTTLS before MAIL (or AUTH)                   530 (RFC 3207 §4: "Must issue a STARTTLS command first")
MTA: no client certificate                          530 5.7.0 (one that does not chain to ``tls.ca_file``,
                                                    the IGC-Santé-style trust anchors, fails the handshake)
MTA: sender domain not in the trust list            550 5.7.1 (null sender ``<>`` allowed: DSNs, MDNs)
MTA: sender in a domain hosted here                 550 5.7.1 at MAIL; ``From:``/``Sender:`` at DATA (stored)
MTA: recipient not hosted here                      550 5.1.1 (hosted domain) / 550 5.7.1 (any other: no relay)
recipient mailbox suspended                         550 5.2.1 (RFC 3463: mailbox disabled)
submission: AUTH before TLS                         530 (STARTTLS first), 538 5.7.11 if TLS is not required
submission: MAIL without AUTH                       530 5.7.0 Authentication required (RFC 4954 §6)
submission: sender not one of the login's addresses 553 5.7.1; ``From:``/``Sender:`` at DATA 550 5.7.1 (stored)
submission: failed logins over the limit            454 4.7.0 (counted across connections; password unchecked)
submission: recipient outside the trust space       554 5.7.1 relay denied (hosted domain: 550 5.1.1)
too many recipients                                 452 4.5.3 (RFC 5321 §4.5.3.1.10)
message over ``max_message_bytes``                  552 at MAIL for its SIZE parameter (RFC 1870; nothing
                                                    received, nothing stored); 552 5.3.4 after DATA, stored as
                                                    rejected with its first bytes (RFC 1870)
a line over 1000 octets (RFC 5321 §4.5.3.1.6)       500 5.5.0 after DATA, stored as rejected with its first bytes
unusable mail, hostile IHE_XDM.ZIP                  554 5.6.0 + the hub's reason; stored as rejected
hub cannot store it now                             451 4.3.0 (the sender keeps it and retries)
accepted                                            250, only after the commit
==================================================  ========================================================

Reply texts never quote an address or anything else from the mail: the
recipient of a patient mailbox is an INS.

The DATA reply comes after :func:`adapters.smtp.intake.analyse` (in a worker
thread) and the commits: the mail itself, then each CDA of an application
mailbox's IHE_XDM.ZIP as a message derived from it, then the MDN when one
was asked. Each commit has a dedup key made of the Message-ID, so a sender
that retries after a 451 does not create the mail twice. A refused mail is
stored with its reason (``ctx.reject``: status ``rejected``, replayable after
a fix) before the 554 goes out.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import email.utils
import hashlib
import os
import ssl
import time
from base64 import b64decode
from collections.abc import Mapping
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax
from pydantic import Field

from adapters.auth_throttle import AuthThrottle
from adapters.smtp.access import AccessConfig, AccessDenied, Grant, IssuerUnavailable, MailAccess, sasl_bearer
from adapters.smtp.common import (
    HostedMailbox,
    Mailboxes,
    SubmissionUser,
    TrustList,
    certificate_name,
    close_smtp_server,
    host_port,
    peer_certificate,
    quiet_library_logs,
    received_header,
    server_tls_context,
    verify_password,
)
from adapters.smtp.dataphase import MailData, read_mail_data
from adapters.smtp.directory import open_directory
from adapters.smtp.intake import Intake, analyse, is_null_sender
from adapters.smtp.trustlist import TrustListRefresher
from adapters.tls import RevocationError, TlsConfig, verify_peer
from hub.content_types import ContentType
from hub.errors import ConfigError, MessageError, Retryable
from hub.message import Message, new_id, utcnow
from hub.ports import InboundContext
from hub.registry import ComponentConfig, register
from hub.slots import Slot, Slots
from mappings.mssante.mail import domain_of
from mappings.xdm import ZipLimits

__all__ = ["SmtpMtaConfig", "SmtpMtaInbound", "SmtpSubmissionConfig", "SmtpSubmissionInbound"]

log = structlog.get_logger("hub.smtp.in")
_HEADERS = BytesParser(policy=policy.compat32)
#: How much of a mail refused while it was read (too large, a line too long) is stored with the refusal: its
#: headers and the start of its body, enough to tell whose it was (as the MLLP listener keeps a frame's head).
KEPT_BYTES = 64 * 1024


class _ListenerConfig(ComponentConfig):
    hostname: str = Field("localhost", description="Name in the greeting, EHLO reply and Received lines.")
    tls: TlsConfig = Field(description="Certificate (cert_file, key_file) for STARTTLS, which is required.")
    domains: list[str] = Field(default_factory=list, description="The operator's own mail domains.")
    mailboxes: list[HostedMailbox] = Field(default_factory=list, description="Mailboxes hosted by this operator.")
    mailbox_directory: str | None = Field(
        None, description="JSON file of the mailboxes created through the admin API (`hub mailbox`), re-read on change."
    )
    trust_list_file: str | None = Field(
        None,
        description="File listing the operator domains of the MSSanté trust space, one a line (`*.x.fr` for "
        "subdomains, `#` comments); re-read when it changes.",
    )
    trusted_domains: list[str] = Field(
        default_factory=list, description="Trust-space domains added to those of trust_list_file."
    )
    trust_list_url: str | None = Field(
        None,
        description="Where the trust list is published (https): downloaded into trust_list_file at start and "
        "every trust_list_refresh_secs; a failed download keeps the last good list.",
    )
    trust_list_refresh_secs: float = Field(3600.0, gt=0, description="How often trust_list_url is downloaded.")
    max_message_bytes: int = Field(32 * 2**20, ge=1024, description="Largest mail accepted (SIZE, 552).")
    max_recipients: int = Field(100, ge=1, le=10_000, description="Most recipients of one mail (452 4.5.3).")
    max_connections: int = Field(
        64,
        ge=1,
        description="Connections served at once. A newcomer over the limit takes the slot of the oldest "
        "connection not yet proven (MTA: no MAIL FROM accepted yet; submission: not logged in); when every slot "
        "is proven it gets 421.",
    )
    max_connections_per_peer: int = Field(
        10, ge=1, description="Connections one peer address may hold at once (same rule over its own share)."
    )
    handshake_timeout_secs: float = Field(
        30.0,
        gt=0,
        description="Close a connection not proven this long after connecting (STARTTLS, then MAIL FROM on the MTA "
        "port, AUTH on submission); timeout_secs applies after.",
    )
    timeout_secs: float = Field(300.0, gt=0, description="Close a connection idle this long (RFC 5321 §4.5.3.2).")
    max_mime_parts: int = Field(200, ge=1, description="Most MIME parts read in one mail (more: 554).")
    xdm: ZipLimits = Field(default_factory=ZipLimits, description="Limits applied to IHE_XDM.ZIP archives.")
    send_mdn: bool = Field(
        True,
        description="Send an MDN (processed, or processed/error) for mail to an application mailbox that asks "
        "for one with Disposition-Notification-To (RFC 8098; volet trans-lps struct-msg-mdn).",
    )


class SmtpMtaConfig(_ListenerConfig):
    listen: str = Field("127.0.0.1:2525", description="host:port of the MTA port for the other operators.")
    require_client_cert: bool = Field(
        True,
        description="Refuse a peer without a client certificate chaining to tls.ca_file (IGC-Santé in production).",
    )


class SmtpSubmissionConfig(_ListenerConfig):
    listen: str = Field("127.0.0.1:5587", description="host:port of the submission port for local clients.")
    users: list[SubmissionUser] = Field(
        default_factory=list, description="Software logins (AUTH PLAIN/LOGIN) and the sender addresses each may use."
    )
    access: AccessConfig = Field(
        default_factory=AccessConfig,
        description="Mailbox logins, as on IMAP: client certificate (AUTH EXTERNAL, asked for when tls.ca_file is "
        "set), Pro Santé Connect token (AUTH OAUTHBEARER / XOAUTH2), the mailbox's password where allowed; the "
        "mailbox opened is the only sender address.",
    )
    max_auth_failures: int = Field(3, ge=1, description="Failed AUTH attempts before the connection is closed.")
    auth_failures_per_user: int = Field(
        5,
        ge=1,
        description="Failed logins of one name, over all connections, within auth_failure_window_secs; past it "
        "AUTH answers 454 4.7.0 for that name without checking the password.",
    )
    auth_failures_per_peer: int = Field(
        20, ge=1, description="The same limit for one client address, whatever the names it tries."
    )
    auth_failure_window_secs: float = Field(
        900.0, gt=0, description="How long a failed login counts against its name and address."
    )


class _Protocol(SMTP):
    """aiosmtpd's SMTP with fair connection slots (checked before the greeting) and tracking for stop().

    A connection is unproven until it proves itself (MTA: MAIL FROM accepted after STARTTLS with a
    certificate; submission: AUTH succeeded): until then it may be evicted by a newcomer
    (:mod:`hub.slots`) and is closed ``handshake_timeout_secs`` after connecting.
    """

    # RFC 4954 §4 lets an AUTH line reach 12288 octets (a bearer token does not fit in the 512 of RFC 5321
    # §4.5.3.1.4): aiosmtpd sizes its line reader with this at __init__, then checks DATA lines with it.
    line_length_limit = 12288 + 2

    def __init__(self, listener: _SmtpListener[Any], handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.line_length_limit = SMTP.line_length_limit  # text lines of DATA: 1000 octets (RFC 5321 §4.5.3.1.6)
        # aiosmtpd keeps the command limits in a class-level dict: ours is per connection.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, {"AUTH": 12288})
        self._listener = listener
        self._refused = False
        self._slot: Slot | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None and self.transport is None
        if first:
            peername = transport.get_extra_info("peername")
            stream = cast(asyncio.Transport, transport)  # a stream server's transport (uvloop's too) can abort
            self._slot = self._listener.slots.admit(str(peername[0]) if peername else "", stream.abort)
            if self._slot is None:
                self._refused = True
                transport.write(b"421 4.3.2 Too many connections, try again later\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._listener.connections.add(self)
            self._deadline = self.loop.call_later(self._listener.config.handshake_timeout_secs, self._too_slow)
        super().connection_made(transport)

    def prove(self) -> None:
        """This connection did what a real client does: long timeout, and no eviction."""
        if self._slot is not None:
            self._slot.prove()
        if self._deadline is not None:
            self._deadline.cancel()

    def _too_slow(self) -> None:
        if self.transport is not None:
            log.info("smtp_handshake_timeout", listener=self._listener.name)
            self.transport.close()

    def eof_received(self) -> bool | None:
        # aiosmtpd cancels its handler on EOF but keeps a half-closed plain socket open until
        # timeout_secs: a client that connects and closes at once would keep its slot. Close.
        super().eof_received()
        return False

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading with :func:`adapters.smtp.dataphase.read_mail_data`: a mail refused for its
        size or for a line too long is stored with its reason by the listener, not only answered."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self._listener.config.max_message_bytes
        try:
            data = await read_mail_data(
                self._reader, limit=limit, line_limit=self.line_length_limit, keep=min(limit, KEPT_BYTES)
            )
        except asyncio.CancelledError:
            self._writer.close()  # the connection went away during DATA (as aiosmtpd does)
            raise
        if data is None:
            return
        if data.problem is None:
            self.envelope.content = self.envelope.original_content = data.content
            status = await self._listener.handle_DATA(self, self.session, self.envelope)
        else:
            status = await self._listener.refuse_data(self.session, self.envelope, data)
        self.envelope = self._create_envelope()  # what aiosmtpd's (untyped) _set_post_data_state does
        await self.push(status)

    def connection_lost(self, error: Exception | None) -> None:
        if self._slot is not None:
            self._slot.release()
        if self._deadline is not None:
            self._deadline.cancel()
        self._listener.connections.discard(self)
        if self._refused:
            return
        super().connection_lost(error)


#: The config of one of the two listeners (a constrained type: the shared code is checked against both).
_Config = TypeVar("_Config", "SmtpMtaConfig", "SmtpSubmissionConfig")


class _SmtpListener(Generic[_Config]):
    """What both listeners share: the server, the hooks common to both, the commit of a received mail."""

    kind = "smtp"
    protocol = "ESMTPS"

    def __init__(self, name: str, config: _Config, ctx: InboundContext) -> None:
        self.name = name
        self.config: _Config = config
        self.ctx = ctx
        self.mailboxes = Mailboxes(config.mailboxes, config.domains, directory=open_directory(config.mailbox_directory))
        self.trust_refresher = None
        if config.trust_list_url:
            if not config.trust_list_file:
                raise ConfigError("trust_list_url needs trust_list_file (where the downloaded list is kept)")
            self.trust_refresher = TrustListRefresher(
                config.trust_list_url, config.trust_list_file, config.trust_list_refresh_secs, name=name
            )
            if not Path(config.trust_list_file).exists():
                Path(config.trust_list_file).parent.mkdir(parents=True, exist_ok=True)
                Path(config.trust_list_file).write_text("# not downloaded yet\n")
        self.trust = TrustList(config.trust_list_file, extra=config.trusted_domains)
        self.connections: set[_Protocol] = set()
        self.slots = Slots(max_connections=config.max_connections, max_per_peer=config.max_connections_per_peer)
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    # -- lifecycle
    def _smtp_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    async def start(self) -> None:
        quiet_library_logs()
        if self.trust_refresher is not None:
            self.trust_refresher.start()
        host, port = host_port(self.config.listen)
        loop = asyncio.get_running_loop()
        kwargs = self._smtp_kwargs()
        self._server = await loop.create_server(
            lambda: _Protocol(
                self,
                self,
                hostname=self.config.hostname,
                data_size_limit=self.config.max_message_bytes,
                timeout=self.config.timeout_secs,
                require_starttls=True,
                loop=loop,
                **kwargs,
            ),
            host,
            port,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await close_smtp_server(self._server, self.connections)
        if self.trust_refresher is not None:
            await self.trust_refresher.stop()

    def _trust_state(self) -> dict[str, Any]:
        """How old the trust list is (seconds since its file changed) and the last refresh error, if any."""
        if not self.config.trust_list_file:
            return {}
        try:
            age: float | None = max(0.0, time.time() - os.stat(self.config.trust_list_file).st_mtime)
        except OSError:
            age = None
        state: dict[str, Any] = {"trust_list_age_secs": None if age is None else int(age)}
        if self.trust_refresher is not None:
            state["trust_list_error"] = self.trust_refresher.error
        return state

    def admin_operations(self) -> tuple[Any, ...]:
        """Mailbox administration on the admin API, when a mailbox directory is configured."""
        if self.mailboxes.directory is None:
            return ()
        from adapters.smtp.admin import mailbox_operations  # the admin API is loaded with the HTTP server only

        return mailbox_operations(self.mailboxes)

    def is_serving(self) -> bool:
        """True while the listening socket accepts connections (for /healthz)."""
        return self._server is not None and self._server.is_serving()

    def describe(self) -> dict[str, Any]:
        return {
            "listener": self.name,
            "protocol": f"smtp+starttls ({self.kind})",
            "listen": self.config.listen,
            "port": self.port,
            "mailboxes": len(self.mailboxes.by_address),
            "trusted_domains": len(self.trust),
            **self._trust_state(),
        }

    # -- hooks common to both ports
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return responses

    def _too_many(self, envelope: Envelope) -> str | None:
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return "452 4.5.3 Too many recipients"
        return None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mail_id = new_id()
        now = utcnow()
        raw = self._received(session, mail_id, now) + (envelope.original_content or b"")
        try:
            intake = await asyncio.to_thread(
                _analyse, self.config, self.mailboxes, raw, mail_id=mail_id, now=now,
                mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
                submission=self.kind == "submission",
            )  # fmt: skip
        except Exception as exc:  # a bug must not lose the mail: the sender keeps it and retries
            log.error("smtp_intake_failed", listener=self.name, message_id=mail_id, error=type(exc).__name__)
            return "451 4.3.0 Temporary failure, please try again later"
        refused_as = "554 5.6.0 Message refused"
        if intake.refusal is None and (spoof := self._header_identity_refusal(session, envelope, raw)):
            # Refused for who it claims to be from: no MDN (it would go to the claimed sender).
            intake.refusal, intake.mdn, refused_as = spoof, None, "550 5.7.1 Message refused"
            await self.ctx.audit(
                "mail_sender_refused", actor=self._actor(session), outcome="refused", detail={"reason": spoof}
            )
        metadata = {**intake.metadata, **self._session_metadata(session), "endpoint": self.name}
        mail = Message(
            id=mail_id,
            content_type=ContentType.MAIL,
            body=intake.raw,
            metadata=metadata,
            received_at=now,
            correlation_id=mail_id,
        )
        msgid = metadata.get("mail_message_id", "")
        # The sender's Message-ID names the mail across its retries (after a 451): the dedup key.
        base_key = f"{self.name}|{hashlib.sha1(msgid.encode()).hexdigest()}" if msgid else None
        try:
            if intake.refusal is not None:
                await self.ctx.reject(mail, reason=intake.refusal)
                if intake.mdn is not None:
                    await self.ctx.submit(
                        mail.derive(body=intake.mdn[0], content_type=ContentType.MAIL, **intake.mdn[1]),
                        dedup_key=f"{base_key}|mdn-error" if base_key else None,
                    )
                log.info("smtp_refused", listener=self.name, message_id=mail_id, reason=intake.refusal)
                # SMTP replies are US-ASCII (RFC 5321 §4.2); the reason is the hub's text, folded to be safe.
                reason = intake.refusal.encode("ascii", "replace").decode()[:400]
                return f"{refused_as}: {reason}"
            result = await self.ctx.submit(mail, dedup_key=f"{base_key}|mail" if base_key else None)
            stored = mail
            if result.duplicate:
                stored = dataclasses.replace(mail, id=result.message_id, correlation_id=result.message_id)
            for i, (body, meta) in enumerate(intake.documents):
                await self.ctx.submit(
                    stored.derive(body=body, content_type=ContentType.CDA, **meta),
                    dedup_key=f"{base_key}|doc|{i}" if base_key else None,
                )
            if intake.mdn is not None:
                await self.ctx.submit(
                    stored.derive(body=intake.mdn[0], content_type=ContentType.MAIL, **intake.mdn[1]),
                    dedup_key=f"{base_key}|mdn" if base_key else None,
                )
        except Retryable:
            # Nothing acknowledged: the sending MTA keeps the mail and tries again (RFC 5321 §4.5.4.1).
            return "451 4.3.0 Temporary failure, please try again later"
        return f"250 2.0.0 OK queued as {stored.id}"

    async def refuse_data(self, session: Session, envelope: Envelope, data: MailData) -> str:
        """Store a mail refused while it was read, with its reason and its first bytes; the reply to the DATA.

        The reply comes once the refusal is committed (451 when it cannot be: the sender keeps the mail and
        will be refused again, stored that time), like any other refusal of this listener.
        """
        limit = self.config.max_message_bytes
        if data.problem == "too_large":
            # RFC 1870 and RFC 3463 X.3.4 "message too big for system": permanent, the mail stays too big.
            reason = f"message of {data.size} bytes exceeds max_message_bytes ({limit})"
            reply = "552 5.3.4 Message exceeds fixed maximum message size"
        else:
            # RFC 5321 §4.5.3.1.6 (1000 octets a line) and the "500 Line too long" of its examples (§4.5.3.1).
            reason = "a line of the message is longer than the 1000 octets of RFC 5321 4.5.3.1.6"
            reply = "500 5.5.0 Line too long (RFC 5321 4.5.3.1.6)"
        mail_id, now = new_id(), utcnow()
        metadata = {
            "mail_kind": "mail",
            "message_type": "mail",
            "mail_from": "" if is_null_sender(envelope.mail_from or "") else str(envelope.mail_from),
            "rcpt_to": ",".join(envelope.rcpt_tos),
            **_message_id_metadata(data.content),
            **self._session_metadata(session),
            "endpoint": self.name,
        }
        if data.cut:
            metadata["truncated_from_bytes"] = str(data.size)
        mail = Message(
            id=mail_id, content_type=ContentType.MAIL, body=self._received(session, mail_id, now) + data.content,
            metadata=metadata, received_at=now, correlation_id=mail_id,
        )  # fmt: skip
        try:
            await self.ctx.reject(mail, reason=reason)
        except Retryable:
            return "451 4.3.0 Temporary failure, please try again later"
        log.info("smtp_refused", listener=self.name, message_id=mail_id, reason=reason)
        return reply

    def _received(self, session: Session, mail_id: str, now: dt.datetime) -> bytes:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        return received_header(
            helo=session.host_name or "", peer_ip=str(peer), by=self.config.hostname, protocol=self.protocol,
            message_id=mail_id, when=now,
        )  # fmt: skip

    def _session_metadata(self, session: Session) -> dict[str, str]:
        return {}

    def _header_identity_refusal(self, session: Session, envelope: Envelope, raw: bytes) -> str | None:
        """Why the From:/Sender: headers may not be accepted from this client, or None."""
        return None

    def _actor(self, session: Session) -> str:
        return _peer_ip(session)


def _analyse(
    config: _ListenerConfig, mailboxes: Mailboxes, raw: bytes, *, mail_id: str, now: dt.datetime, mail_from: str,
    rcpt_tos: list[str], submission: bool,
) -> Intake:  # fmt: skip
    """:func:`analyse` with this listener's settings (what DATA and ``hub test`` both run)."""
    return analyse(
        raw, mail_id=mail_id, now=now, mail_from="" if is_null_sender(mail_from) else mail_from, rcpt_tos=rcpt_tos,
        mailboxes=mailboxes, hub_domains=sorted(mailboxes.domains), limits=config.xdm, hostname=config.hostname,
        max_parts=config.max_mime_parts, send_mdn=config.send_mdn, submission=submission,
    )  # fmt: skip


def _route_test_intake(submission: bool) -> Any:
    def intake(config: _ListenerConfig, body: bytes, envelope: Mapping[str, Any]) -> list[Message]:
        """The messages this listener makes of one mail (``hub test``): the mail, each document of its XDM
        archive, its MDN; as DATA does, without I/O. A refused mail raises MessageError with the 554 reason."""
        mailboxes = Mailboxes(config.mailboxes, config.domains, directory=open_directory(config.mailbox_directory))
        rcpt = envelope.get("rcpt_to") or []
        rcpt_tos = [rcpt] if isinstance(rcpt, str) else [str(r) for r in rcpt]
        mail_id, now = new_id(), utcnow()
        found = _analyse(
            config, mailboxes, body, mail_id=mail_id, now=now, mail_from=str(envelope.get("mail_from") or ""),
            rcpt_tos=rcpt_tos, submission=submission,
        )  # fmt: skip
        if found.refusal is not None:
            raise MessageError(found.refusal)
        mail = Message(
            id=mail_id, content_type=ContentType.MAIL, body=found.raw, metadata=found.metadata, received_at=now,
            correlation_id=mail_id,
        )  # fmt: skip
        out = [mail, *(mail.derive(body=b, content_type=ContentType.CDA, **meta) for b, meta in found.documents)]
        if found.mdn is not None:
            out.append(mail.derive(body=found.mdn[0], content_type=ContentType.MAIL, **found.mdn[1]))
        return out

    return intake


register("intake", "smtp_mta", config=SmtpMtaConfig)(_route_test_intake(submission=False))
register("intake", "smtp_submission", config=SmtpSubmissionConfig)(_route_test_intake(submission=True))


@register("inbound", "smtp_mta", config=SmtpMtaConfig)
class SmtpMtaInbound(_SmtpListener[SmtpMtaConfig]):
    """MSSanté MTA port: mail from the other operators of the trust space (STARTTLS and client certificate)."""

    kind = "mta"
    protocol = "ESMTPS"

    def __init__(self, name: str, config: SmtpMtaConfig, ctx: InboundContext) -> None:
        super().__init__(name, config, ctx)

    def _smtp_kwargs(self) -> dict[str, Any]:
        return {
            "tls_context": server_tls_context(self.config.tls, ask_client_cert=self.config.require_client_cert),
            # No AUTH on the MTA port: peers are authenticated by their certificate.
            "auth_exclude_mechanism": ["LOGIN", "PLAIN"],
        }

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if not r.startswith("250-AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.config.require_client_cert and peer_certificate(session.ssl) is None:
            return "530 5.7.0 A client certificate from the trust space is required"
        if refusal := await self._revoked(session):
            return refusal
        # RFC 5321 §4.5.5: the null sender (DSNs, MDNs) is always accepted; any other must be in the trust space.
        if not is_null_sender(address) and domain_of(address) not in self.trust:
            return "550 5.7.1 Sender domain is not in the MSSante trust space"
        if self.mailboxes.hosts_domain(address):
            # Our own users send through submission, never from another operator's MTA (anti-spoofing).
            await self.ctx.audit(
                "mail_sender_refused", actor=self._actor(session), outcome="refused",
                detail={"reason": "envelope sender in a domain hosted here"},
            )  # fmt: skip
            return "550 5.7.1 Sender domain is hosted here: not accepted from another operator"
        envelope.mail_from = address  # "<>" stays as aiosmtpd spells it (it needs a non-empty value)
        envelope.mail_options.extend(mail_options)
        _prove(server)
        return "250 2.1.0 OK"

    async def _revoked(self, session: Session) -> str | None:
        """The reply refusing a peer whose certificate is revoked (or of unknown status, hard mode); else None."""
        obj = (session.ssl or {}).get("ssl_object")
        try:
            await verify_peer(obj if isinstance(obj, ssl.SSLObject | ssl.SSLSocket) else None)
        except RevocationError as exc:
            await self.ctx.audit(
                "mail_peer_refused", actor=self._actor(session), outcome="refused", detail={"reason": str(exc)}
            )
            # RFC 3463: a revoked certificate is final (5.7.0); an unknown status may clear up (4.7.0).
            if str(exc).startswith("certificate revoked"):
                return "550 5.7.0 Client certificate revoked"
            return "451 4.7.0 Client certificate status unknown, try again later"
        return None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if reply := self._too_many(envelope):
            return reply
        box = self.mailboxes.get(address)
        if box is None:
            if self.mailboxes.hosts_domain(address):
                return "550 5.1.1 Recipient mailbox unknown"
            return "550 5.7.1 Relaying denied: recipient not hosted here"
        if box.status != "active":
            return "550 5.2.1 Recipient mailbox disabled"  # RFC 3463 X.2.1: mailbox disabled, not accepting
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _session_metadata(self, session: Session) -> dict[str, str]:
        return {"tls_peer": certificate_name(peer_certificate(session.ssl))}

    def _header_identity_refusal(self, session: Session, envelope: Envelope, raw: bytes) -> str | None:
        hosted = [a for a in header_senders(raw) if self.mailboxes.hosts_domain(a)]
        return "From/Sender header in a domain hosted here, from another operator" if hosted else None

    def _actor(self, session: Session) -> str:
        return certificate_name(peer_certificate(session.ssl)) or _peer_ip(session)


@register("inbound", "smtp_submission", config=SmtpSubmissionConfig)
class SmtpSubmissionInbound(_SmtpListener[SmtpSubmissionConfig]):
    """MSSanté submission port: local clients log in over TLS and send to hosted or trust-space mailboxes."""

    kind = "submission"
    protocol = "ESMTPSA"

    def __init__(self, name: str, config: SmtpSubmissionConfig, ctx: InboundContext) -> None:
        super().__init__(name, config, ctx)
        self.users = {u.username: u for u in config.users}
        self.access = MailAccess(self.mailboxes, config.access)
        self.throttle = AuthThrottle(
            per_user=config.auth_failures_per_user,
            per_peer=config.auth_failures_per_peer,
            window_secs=config.auth_failure_window_secs,
        )

    def _smtp_kwargs(self) -> dict[str, Any]:
        return {
            "tls_context": server_tls_context(self.config.tls, ask_client_cert=bool(self.config.tls.ca_file)),
            "auth_required": True,
            "auth_require_tls": True,
        }

    # aiosmtpd advertises a mechanism for each ``auth_<NAME>`` of the handler; handle_AUTH below serves them all.
    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> None:  # pragma: no cover - never called
        raise NotImplementedError

    auth_OAUTHBEARER = auth_XOAUTH2 = auth_EXTERNAL

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope, args: list[str]) -> str | None:
        """AUTH PLAIN (RFC 4616) and LOGIN (software logins, else a mailbox's password where allowed), EXTERNAL
        (RFC 4422 app. A: the verified client certificate), OAUTHBEARER (RFC 7628) and XOAUTH2 (bearer token)."""
        mechanism = args[0].upper()
        if mechanism in ("EXTERNAL", "OAUTHBEARER", "XOAUTH2"):
            return await self._auth_mailbox(server, session, mechanism, args)
        login: object  # bytes once decoded; MISSING (the client cancelled) or None (not base64) before
        password: object
        if mechanism == "PLAIN":
            blob: Any = _b64(args[1]) if len(args) > 1 else await server.challenge_auth("", encode_to_b64=False)
            if blob is MISSING:
                return None
            pieces = blob.split(b"\x00") if isinstance(blob, bytes) else []
            if len(pieces) != 3:
                return "501 5.5.2 Cannot decode the AUTH PLAIN response"
            login, password = pieces[1], pieces[2]
        elif mechanism == "LOGIN":
            login = _b64(args[1]) if len(args) > 1 else await server.challenge_auth("Username:")
            if login is MISSING or login is None:
                return None if login is MISSING else "501 5.5.2 Cannot decode the AUTH LOGIN response"
            password = await server.challenge_auth("Password:")
            if password is MISSING:
                return None
        else:
            return "504 5.5.4 Unrecognized authentication type"
        if not isinstance(login, bytes) or not isinstance(password, bytes):
            return "501 5.5.2 Cannot decode the AUTH response"
        username = login.decode("utf-8", "replace")[:256]
        peer = _peer_ip(session)
        if self.throttle.blocked(username, peer):
            # RFC 4954 §6: 454 4.7.0 temporary failure; the password is not even checked.
            await self.ctx.audit("login_throttled", actor=username, outcome="refused", detail={"peer": peer})
            log.info("smtp_auth_throttled", listener=self.name)
            return "454 4.7.0 Temporary authentication failure, try again later"
        user = self.users.get(username)
        if user is None and self.mailboxes.get(username) is not None:
            try:
                grant = await self.access.by_password(username, password.decode("utf-8", "replace"))
            except AccessDenied as exc:
                return await self._auth_failed(server, session, mechanism, str(exc), username=username)
            self.throttle.succeeded(username)
            _prove(server)
            return self._auth_ok(session, grant)
        ok = await asyncio.to_thread(
            verify_password, password.decode("utf-8", "replace"), user.password_hash if user else None
        )
        if ok and user is not None:
            session.authenticated = True
            session.auth_data = user.username  # type: ignore[assignment]  # aiosmtpd declares it `= None`
            self.throttle.succeeded(username)
            _prove(server)
            return "235 2.7.0 Authentication successful"
        return await self._auth_failed(server, session, mechanism, "password refused", username=username)

    async def _auth_mailbox(self, server: SMTP, session: Session, mechanism: str, args: list[str]) -> str | None:
        blob: Any
        if len(args) > 1:
            blob = b"" if args[1] == "=" else _b64(args[1])  # "=": an empty initial response (RFC 4954 §4)
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
        if blob is MISSING:
            return None
        if blob is None:
            return "501 5.5.2 Cannot decode the AUTH response"
        try:
            if mechanism == "EXTERNAL":
                name = certificate_name(peer_certificate(session.ssl))
                grant = self.access.by_certificate(name, blob.decode("utf-8"))
            else:
                user, token = sasl_bearer(mechanism, blob)
                grant = await self.access.by_token(token, user)
        except (ValueError, UnicodeDecodeError):
            return "501 5.5.2 Cannot decode the AUTH response"
        except IssuerUnavailable as exc:
            log.warning("smtp_auth_unavailable", listener=self.name, mechanism=mechanism, reason=str(exc))
            return "454 4.7.0 Temporary authentication failure"
        except AccessDenied as exc:
            if mechanism != "EXTERNAL":
                # RFC 7628 §3.2.2: the failure is a challenge carrying the error; the client answers %x01.
                error = b'{"status":"invalid_token","schemes":"bearer"}'
                if await server.challenge_auth(error) is MISSING:
                    return None
            return await self._auth_failed(server, session, mechanism, str(exc))
        _prove(server)
        return self._auth_ok(session, grant)

    def _auth_ok(self, session: Session, grant: Grant) -> str:
        session.authenticated = True
        session.auth_data = f"mailbox:{grant.mailbox.address}"  # type: ignore[assignment]  # aiosmtpd: `= None`
        log.debug("smtp_auth_ok", listener=self.name, method=grant.method, kind=grant.mailbox.kind)
        return "235 2.7.0 Authentication successful"

    async def _auth_failed(
        self, server: SMTP, session: Session, mechanism: str, reason: str, *, username: str = ""
    ) -> str | None:
        peer = _peer_ip(session)
        self.throttle.failed(username, peer)  # password guessing is limited across connections too
        await self.ctx.audit("login_failed", actor=username or peer, outcome="refused", detail={"peer": peer})
        failures = getattr(session, "auth_failures", 0) + 1
        session.auth_failures = failures  # type: ignore[attr-defined]
        log.info("smtp_auth_failed", listener=self.name, failures=failures, mechanism=mechanism, reason=reason)
        if failures >= self.config.max_auth_failures:
            await server.push("421 4.7.0 Too many failed authentications, closing")
            if server.transport is not None:
                server.transport.close()
            return None
        return "535 5.7.8 Authentication credentials invalid"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        allowed = self._allowed_senders(session)
        if allowed is None:
            return "530 5.7.0 Authentication required"
        if address.lower() not in allowed:
            return "553 5.7.1 Sender address not allowed for this login"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if reply := self._too_many(envelope):
            return reply
        box = self.mailboxes.get(address)
        if box is not None and box.status != "active":
            return "550 5.2.1 Recipient mailbox disabled"
        if box is None:
            if self.mailboxes.hosts_domain(address):
                return "550 5.1.1 Recipient mailbox unknown"
            if domain_of(address) not in self.trust:
                # No open relay: only the MSSanté trust space is reachable from here (DESIGN.md §8).
                return "554 5.7.1 Relay access denied: recipient domain outside the MSSante trust space"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _session_metadata(self, session: Session) -> dict[str, str]:
        return {"auth_user": str(session.auth_data or "")}

    def _allowed_senders(self, session: Session) -> list[str] | None:
        """The addresses this session may send as (a configured user's, or the one mailbox a card or token
        opened); None before a login."""
        login = str(session.auth_data or "")
        if login.startswith("mailbox:"):
            return [login.removeprefix("mailbox:").lower()]
        user = self.users.get(login)
        return list(user.addresses) if user is not None else None

    def _header_identity_refusal(self, session: Session, envelope: Envelope, raw: bytes) -> str | None:
        # RFC 6409 §6.1 lets the MSA check the author: From:/Sender: must be the login's own addresses.
        allowed = self._allowed_senders(session) or []
        senders = header_senders(raw)
        if not senders or any(a not in allowed for a in senders):
            return "From/Sender header is not one of the addresses of this login"
        return None

    def _actor(self, session: Session) -> str:
        return str(session.auth_data or "") or _peer_ip(session)


def header_senders(raw: bytes) -> list[str]:
    """The addresses of the From: and Sender: headers (lower case), read from the header block only."""
    try:
        headers = _HEADERS.parsebytes(raw, headersonly=True)
        values = [str(v) for name in ("From", "Sender") for v in (headers.get_all(name) or [])]
    except Exception:  # unreadable headers: no sender can be trusted
        return ["<unreadable>"]
    return [a.lower() for _, a in email.utils.getaddresses(values) if a]


def _message_id_metadata(head: bytes) -> dict[str, str]:
    """control_id and mail_message_id from the Message-ID of a mail's first bytes, when they hold it."""
    try:
        value = str(_HEADERS.parsebytes(head, headersonly=True).get("Message-ID") or "")
    except Exception:  # unreadable headers: the mail is stored without its Message-ID
        return {}
    value = " ".join(value.split())
    return {"control_id": value[:200], "mail_message_id": value[:998]} if value else {}


def _peer_ip(session: Session) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer or "")


def _prove(server: SMTP) -> None:
    if isinstance(server, _Protocol):
        server.prove()


def _b64(value: str) -> bytes | None:
    try:
        return b64decode(value, validate=True)
    except ValueError:
        return None
