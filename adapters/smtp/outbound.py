"""The `mssante` destination: send mail to the other operators of the MSSanté trust space (flows F2, F3, F6).

Two kinds of message go out through it:

* a **CDA document** (``application/cda+xml``, e.g. a CR-BIO made from a lab ORU,
  or a document from an HL7 v2 MDM): the adapter writes the mail the Ségur
  volets describe (:mod:`mappings.mssante.mail`): IHE_XDM.ZIP with
  METADATA.XML, the document under ``IHE_XDM/SUBSET01/``, INDEX.HTM and
  README.TXT; subject ``XDM/1.0/DDM+...``; X-MSS-* headers;
  ``Disposition-Notification-To`` when an acknowledgement is wanted.
  Recipients: professionals from the message metadata (``mssante_recipients``
  or ``mss_recipients``, comma separated) and the route's ``recipients``; the
  patient ``<INS>@patient.mssante.fr`` when asked (``send_to_patient``,
  metadata ``dest_mss_patient=Y``, or a patient address in the recipients),
  *only* with a qualified INS in the metadata (``ins``, ``ins_oid``,
  ``identity_status=qualifiee``, as the ``ins_stamp`` step writes them) whose
  root this environment accepts, never for a document invisible to the
  patient. Professionals and the patient get separate mails (their bodies
  differ, and ``X-MSS-MES: FIN`` only concerns the patient's).
* a **mail** (``message/rfc822``) received on the submission port, or an MDN the
  hub wrote: relayed as it is, to ``rcpt_remote``, from ``mail_from``.

Each mail goes to the next hop of its recipients' domain: a static table
(``next_hops``), then ``default_next_hop``. (TODO: MX look-up, RFC 5321 §5.1,
once the hub runs where DNS is available.) Only trust-space domains are
reached. The connection uses STARTTLS with the peer's certificate verified
(``tls.ca_file``: the trust anchors) and our client certificate (mutual TLS);
a server without STARTTLS is never sent to.

Outcomes (the adapter classifies; the hub retries): every recipient accepted
→ ACCEPT; a 4xx or a connection problem for any recipient → RETRY (the whole
mail is sent again, with the same Message-ID, so a receiver can tell the
copy); 5xx for every recipient → REJECT. Recipients refused for good (5xx)
get a DSN (RFC 3464, :func:`mappings.mssante.reports.build_dsn`) delivered to
the local sender's hosted mailbox store (``mailbox_dir``), also when others
succeeded. Reasons name codes and counts, never an address.

The servers' final replies (the end-of-data reply, or the reply that refused the connection, the
sender or a recipient), one line per reply, are the attempt's reply (:class:`hub.PeerReply`, kind
``smtp``, summary their codes), returned on ACCEPT and attached to the error otherwise.

Message-IDs are ``<correlation-id.tag@domain>`` and the DSN envelope id
(ENVID, RFC 3461, when the peer offers DSN) is the correlation id: MDNs and
DSNs coming back are matched to the original message by the SMTP listener
(:mod:`adapters.smtp.intake`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Sequence
from typing import Any

import aiosmtplib
import structlog
from pydantic import Field

from adapters.smtp.common import TrustList
from adapters.smtp.mailstore import MailboxStore
from adapters.tls import RevocationError, TlsConfig, client_context, verify_peer
from hub.content_types import ContentType
from hub.environments import HubEnvironment, HubEnvironmentName
from hub.errors import MessageError, NotConnected, Rejected, Retryable, Unreachable
from hub.identity import INS_ROOTS, IdentityStatus, InsPolicy
from hub.message import Message, utcnow
from hub.registry import ComponentConfig, register
from hub.replies import PeerReply, ReplyKind
from mappings.cda import read_cda_header
from mappings.mssante.mail import (
    DEFAULT_BODY_PATIENT,
    DEFAULT_BODY_PS,
    PATIENT_DOMAIN,
    build_document_mail,
    delivery_tag,
    document_subject,
    domain_of,
    hub_message_id,
    is_address,
    patient_address,
    pdf_of_cda,
    split_addresses,
)
from mappings.mssante.reports import RecipientFailure, build_dsn
from mappings.xdm import XdmMetadataConfig, XdmSubmission, build_xdm
from mappings.xml import parse_xml

__all__ = ["MssanteOutbound", "MssanteOutboundConfig"]

log = structlog.get_logger("hub.smtp.out")

_VISIBILITY = {
    "mask_ps": "MASQUE_PS",
    "invisible_patient": "INVISIBLE_PATIENT",
    "invisible_legal_reps": "INVISIBLE_REPRESENTANTS_LEGAUX",
}


class MssanteOutboundConfig(ComponentConfig):
    from_address: str = Field(
        description="The sending application mailbox (BAL applicative), e.g. `lab@hub.mssante.fr`."
    )
    from_name: str = Field("", description="Display name of the sender.")
    hostname: str = Field("localhost", description="Our name in EHLO.")
    domains: list[str] = Field(
        default_factory=list, description="Our own mail domains (the from_address domain is always one)."
    )
    next_hops: dict[str, str] = Field(
        default_factory=dict, description="Next hop per recipient domain: `domain: host:port` (a static MX table)."
    )
    default_next_hop: str | None = Field(None, description="host:port for domains not in next_hops (a smart host).")
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="ca_file: trust anchors for the peers' certificates (IGC-Santé); cert_file/key_file: our client "
        "certificate; server_hostname is ignored (each hop is checked against its own name).",
    )
    trust_list_file: str | None = Field(None, description="Operator domains of the trust space (as the listeners).")
    trusted_domains: list[str] = Field(default_factory=list, description="Trust-space domains added to the file's.")
    recipients: list[str] = Field(
        default_factory=list, description="Professional recipients added to every document mail."
    )
    send_to_patient: bool = Field(
        False, description="Also send every document to the patient's mailbox (qualified INS required)."
    )
    patient_domain: str = Field(PATIENT_DOMAIN, description="Domain of the patients' mailboxes (Mon espace santé).")
    patient_no_reply: bool = Field(
        False, description="Mark mail to patients `X-MSS-MES: FIN` (no reply), as metadata mss_no_reply_patient=Y does."
    )
    request_mdn: bool = Field(
        False,
        description="Ask for an MDN (Disposition-Notification-To: from_address), as metadata ack_read_mss=Y does.",
    )
    subject_with_patient: bool = Field(
        True, description="Subject `XDM/1.0/DDM+<libellé> <NOM> <prénom> <date>` (volet); false: the label only."
    )
    body_ps: str = Field(DEFAULT_BODY_PS, description="Body of mail to professionals (metadata mss_body_ps wins).")
    body_patient: str = Field(DEFAULT_BODY_PATIENT, description="Body of mail to patients (mss_body_patient wins).")
    nil: str = Field("", description="X-MSS-NIL product reference (convergence.esante.gouv.fr), when you have one.")
    attach_pdf: bool = Field(True, description="Also attach the PDF of a level-1 CDA (nonXMLBody application/pdf).")
    xdm: XdmMetadataConfig = Field(default_factory=XdmMetadataConfig, description="METADATA.XML settings.")
    environment: HubEnvironmentName = Field(
        HubEnvironment.PRODUCTION,
        description="Which INS roots may address a patient: production refuses test/demo roots.",
    )
    mailbox_dir: str | None = Field(
        None, description="Hosted mailbox store (Maildir root) where DSNs for local senders are delivered."
    )
    max_message_bytes: int = Field(32 * 2**20, ge=1024, description="Largest mail sent.")
    connect_timeout_secs: float = Field(30.0, gt=0, description="Give up connecting (and STARTTLS) after this.")
    timeout_secs: float = Field(120.0, gt=0, description="Give up waiting for one SMTP reply after this.")


@dataclasses.dataclass(slots=True, repr=False)
class _OutMail:
    sender: str
    recipients: list[str]
    data: bytes
    envid: str
    tag: str


@dataclasses.dataclass(slots=True)
class _Result:
    accepted: list[str] = dataclasses.field(default_factory=list)
    temporary: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    permanent: list[RecipientFailure] = dataclasses.field(default_factory=list)
    unsent: int = 0  # of the temporary ones: nothing went out for them (connect, STARTTLS, certificate)
    replies: list[str] = dataclasses.field(default_factory=list)  # the servers' final reply lines, as received


def _enhanced(code: int, message: str) -> str:
    parts = message.split()
    if parts and parts[0][:1] in "245" and parts[0].count(".") == 2:
        return parts[0]
    return f"{str(code)[0]}.0.0"


@register("outbound", "mssante", config=MssanteOutboundConfig)
class MssanteOutbound:
    """MSSanté mail to the trust space: IHE_XDM.ZIP documents and relayed mail, over verified STARTTLS."""

    def __init__(self, name: str, config: MssanteOutboundConfig) -> None:
        self.name = name
        self.config = config
        self.domains = {d.lower() for d in config.domains} | {domain_of(config.from_address)}
        self.trust = TrustList(config.trust_list_file, extra=config.trusted_domains)
        self.store = MailboxStore(config.mailbox_dir) if config.mailbox_dir else None
        self._tls: ssl.SSLContext | None = None

    async def start(self) -> None:
        # Built at start: in `make run` the peer sandbox (started first) writes the CA this reads.
        self._tls = client_context(self.config.tls)

    async def stop(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.name, "protocol": "smtp+starttls", "from": self.config.from_address}

    # -- building -----------------------------------------------------------------------------------
    def _visibility(self, metadata: dict[str, str] | Any) -> tuple[str, ...]:
        return tuple(code for key, code in _VISIBILITY.items() if metadata.get(key, "").upper() == "Y")

    def _patient(self, message: Message, listed: list[str]) -> str | None:
        """The patient's address when the document goes to the patient; Rejected when it may not."""
        meta = message.metadata
        flag = meta.get("dest_mss_patient", "").upper()
        # DESTMSSANTEPAT (MetaDMPMSS, volet "Transmission de documents CDA en HL7v2"): an explicit N wins.
        if flag == "N" or not (self.config.send_to_patient or flag == "Y" or listed):
            return None
        if meta.get("invisible_patient", "").upper() == "Y":
            raise Rejected("document invisible to the patient (INVISIBLE_PATIENT=Y) cannot go to the patient")
        ins, oid = meta.get("ins", ""), meta.get("ins_oid", "")
        # RNIV [EXI SI 08] and DESIGN.md §5: only a qualified INS addresses Mon espace santé.
        if not ins or oid not in INS_ROOTS or meta.get("identity_status") != IdentityStatus.QUALIFIEE:
            raise Rejected("a patient mailbox needs a qualified INS (metadata ins, ins_oid, identity_status)")
        verdict = InsPolicy.for_environment(HubEnvironment(self.config.environment).ins_environment).check(ins, oid)
        if not verdict.accepted:
            raise Rejected(f"the patient's INS root is not accepted in {self.config.environment}")
        address = patient_address(ins, self.config.patient_domain)
        if any(a.lower() != address.lower() for a in listed):
            raise Rejected("a patient mailbox address does not match the document's INS")
        return address

    def _document_mails(self, message: Message) -> list[_OutMail]:
        meta = message.metadata
        try:
            doc = parse_xml(message.body)
            header = read_cda_header(doc)
        except MessageError as exc:
            raise Rejected(f"not a usable CDA document: {exc.reason}") from None
        if header.get("ins") and meta.get("ins") and header["ins"] != meta["ins"]:
            raise Rejected("the document's INS differs from the message's")
        listed = split_addresses(meta.get("mssante_recipients"), meta.get("mss_recipients"), *self.config.recipients)
        patient_domain = self.config.patient_domain.lower()
        pros = [a for a in listed if domain_of(a) != patient_domain]
        if meta.get("dest_mss_ps", "").upper() == "N":
            pros = []  # DESTMSSANTEPS=N: the producer does not want it sent to professionals
        patient = self._patient(message, [a for a in listed if domain_of(a) == patient_domain])
        if not pros and not patient:
            raise Rejected("no recipient: set metadata mssante_recipients / mss_recipients or the route's recipients")
        if not all(is_address(a) for a in pros):
            raise Rejected("a recipient address is not a plain local@domain address")
        everyone = [*pros, *([patient] if patient else [])]
        try:
            xdm = build_xdm(
                [XdmSubmission(message.body, "DOC00001.XML", self._visibility(meta))],
                self.config.xdm,
                submission_id=message.correlation_id,
                submission_time=message.received_at,
                recipients=everyone,
                sender=self.config.from_address,
                titles=[header.get("title", "Document")],
            )
        except MessageError as exc:
            raise Rejected(f"IHE_XDM.ZIP could not be built: {exc.reason}") from None
        x_mss = {
            "X-MSS-CODECDA": header.get("type_code", ""),
            # X-MSS-INS (Réf. socle #2 §3.8, secondary source): O when the XDM carries a qualified INS.
            "X-MSS-INS": "O" if header.get("ins") and meta.get("identity_status") == IdentityStatus.QUALIFIEE else "N",
        }
        if self.config.nil:
            x_mss["X-MSS-NIL"] = self.config.nil
        dnt = self.config.request_mdn or meta.get("ack_read_mss", "").upper() == "Y"
        pdf = pdf_of_cda(doc) if self.config.attach_pdf else None
        pdfs = [(f"{(header.get('title') or 'document')[:60]}.pdf", pdf)] if pdf else []
        subject = document_subject(doc, with_patient=self.config.subject_with_patient)
        domain = domain_of(self.config.from_address)
        out: list[_OutMail] = []
        groups: list[tuple[str, list[str], str, dict[str, str]]] = []
        if pros:
            groups.append(("ps", pros, meta.get("mss_body_ps") or self.config.body_ps, {}))
        if patient:
            extra = {}
            if self.config.patient_no_reply or meta.get("mss_no_reply_patient", "").upper() == "Y":
                extra["X-MSS-MES"] = "FIN"  # mapping-mss: the patient may not answer
            groups.append(("pat", [patient], meta.get("mss_body_patient") or self.config.body_patient, extra))
        for kind, rcpts, body, extra in groups:
            tag = delivery_tag(self.name, kind, *sorted(r.lower() for r in rcpts))
            data = build_document_mail(
                sender=self.config.from_address,
                sender_name=self.config.from_name,
                recipients=rcpts,
                reply_to=split_addresses(meta.get("mss_reply_to")),
                subject=subject,
                body=body,
                message_id=hub_message_id(message.correlation_id, tag, domain),
                date=message.received_at,
                xdm=xdm,
                disposition_notification_to=self.config.from_address if dnt else None,
                x_mss={**x_mss, **extra},
                pdfs=pdfs,
            )
            out.append(_OutMail(self.config.from_address, rcpts, data, message.correlation_id, tag))
        return out

    def _relay_mail(self, message: Message) -> list[_OutMail]:
        rcpts = split_addresses(message.metadata.get("rcpt_remote"))
        if not rcpts:
            raise Rejected("no remote recipient (metadata rcpt_remote) to relay to")
        sender = message.metadata.get("mail_from", "")
        tag = delivery_tag(self.name, "relay", *sorted(r.lower() for r in rcpts))
        return [_OutMail(sender, rcpts, message.body, message.correlation_id, tag)]

    # -- sending ------------------------------------------------------------------------------------
    def _hop(self, domain: str) -> tuple[str, int] | None:
        hop = self.config.next_hops.get(domain) or self.config.default_next_hop
        if not hop:
            return None
        host, _, port = hop.rpartition(":")
        return host.strip("[]"), int(port)

    def _allowed(self, domain: str) -> bool:
        if len(self.trust):
            return domain in self.trust
        return domain in self.config.next_hops  # no trust list configured: only explicitly routed domains

    async def _transmit(self, hop: tuple[str, int], mail: _OutMail, rcpts: list[str], result: _Result) -> None:
        host, port = hop
        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=self.config.hostname,
            start_tls=True,  # RFC 3207; never fall back to plain text
            tls_context=self._tls,
            timeout=self.config.timeout_secs,
        )
        try:
            await smtp.connect(timeout=self.config.connect_timeout_secs)
        except aiosmtplib.SMTPConnectResponseError as exc:
            self._all(result, rcpts, exc.code, exc.message, host)
            result.replies.append(f"{exc.code} {exc.message}")
            return
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            result.temporary += [(r, 0) for r in rcpts]
            result.unsent += len(rcpts)
            log.info("mssante_connect_failed", endpoint=self.name, hop=f"{host}:{port}", error=type(exc).__name__)
            return
        try:
            await verify_peer(smtp.transport.get_extra_info("ssl_object") if smtp.transport else None)
        except RevocationError as exc:
            # Before MAIL FROM: nothing is sent to a server whose certificate is revoked; kept for a later try.
            result.temporary += [(r, 0) for r in rcpts]
            result.unsent += len(rcpts)
            log.warning("mssante_peer_refused", endpoint=self.name, hop=f"{host}:{port}", reason=str(exc))
            smtp.close()
            return
        cancelled = False
        try:
            dsn = smtp.supports_extension("dsn")
            mail_options = ["RET=HDRS", f"ENVID={mail.envid}"] if dsn and mail.envid else []
            try:
                errors, final = await smtp.sendmail(mail.sender, rcpts, mail.data, mail_options=mail_options)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                for refused in exc.recipients:
                    self._one(result, refused.recipient, refused.code, refused.message, host)
                    result.replies.append(f"{refused.code} {refused.message}")
                return
            except aiosmtplib.SMTPResponseException as exc:  # MAIL or DATA refused: every recipient
                self._all(result, rcpts, exc.code, exc.message, host)
                result.replies.append(f"{exc.code} {exc.message}")
                return
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                result.temporary += [(r, 0) for r in rcpts]
                return
            for r in rcpts:
                if r in errors:
                    self._one(result, r, errors[r].code, errors[r].message, host)
                    result.replies.append(f"{errors[r].code} {errors[r].message}")
                else:
                    result.accepted.append(r)
            # RFC 5321 §4.2.5: the reply to the end of data takes responsibility for the mail (250 by then)
            result.replies.append(f"250 {final}")
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if cancelled:
                smtp.close()  # cancelled mid-transaction: drop the connection now, no QUIT waiting on the peer
            else:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()

    def _one(self, result: _Result, rcpt: str, code: int, message: str, host: str) -> None:
        if 500 <= code < 600:
            result.permanent.append(
                RecipientFailure(rcpt, _enhanced(code, message), f"{code} {message}", remote_mta=host)
            )
        else:
            result.temporary.append((rcpt, code))

    def _all(self, result: _Result, rcpts: Sequence[str], code: int, message: str, host: str) -> None:
        for r in rcpts:
            self._one(result, r, code, message, host)

    async def _deliver(self, mail: _OutMail) -> _Result:
        result = _Result()
        hops: dict[tuple[str, int], list[str]] = {}
        for rcpt in mail.recipients:
            domain = domain_of(rcpt)
            if not self._allowed(domain):
                result.permanent.append(
                    RecipientFailure(rcpt, "5.7.1", "recipient domain outside the MSSanté trust space")
                )
                continue
            hop = self._hop(domain)
            if hop is None:
                result.permanent.append(RecipientFailure(rcpt, "5.4.4", "no next hop configured for this domain"))
                continue
            hops.setdefault(hop, []).append(rcpt)
        for hop, rcpts in hops.items():
            await self._transmit(hop, mail, rcpts, result)
        return result

    async def send(self, message: Message) -> PeerReply | None:
        if message.content_type == ContentType.CDA:
            mails = self._document_mails(message)
        elif message.content_type == ContentType.MAIL:
            mails = self._relay_mail(message)
        else:
            raise Rejected(f"the mssante destination takes {ContentType.CDA} or {ContentType.MAIL}")
        if any(len(m.data) > self.config.max_message_bytes for m in mails):
            raise Rejected(f"mail larger than max_message_bytes ({self.config.max_message_bytes})")
        accepted = temporary = permanent = unsent = 0
        codes: set[str] = set()
        lines: list[str] = []
        for mail in mails:
            result = await self._deliver(mail)
            lines += result.replies
            accepted += len(result.accepted)
            temporary += len(result.temporary)
            permanent += len(result.permanent)
            unsent += result.unsent
            codes |= {str(c) for _, c in result.temporary if c} | {f.status for f in result.permanent}
            if result.permanent:
                await self._dsn(message, mail, result.permanent)
        reply = self._reply(lines)
        try:
            self._classify(accepted, temporary, permanent, unsent, codes)
        except (Retryable, Rejected) as exc:
            raise exc.with_reply(reply) from None
        if permanent:
            log.info("mssante_partly_refused", endpoint=self.name, message_id=message.id, refused=permanent)
        return reply

    @staticmethod
    def _reply(lines: list[str]) -> PeerReply | None:
        """The servers' reply lines as the attempt's reply (None when no server answered)."""
        if not lines:
            return None
        codes = dict.fromkeys(line.split(" ", 1)[0] for line in lines)
        return PeerReply.of(ReplyKind.SMTP, " ".join(codes), "\r\n".join(lines).encode(), content_type="text/plain")

    @staticmethod
    def _classify(accepted: int, temporary: int, permanent: int, unsent: int, codes: set[str]) -> None:
        """Return when the mail is accepted (every recipient, or some and the others refused for good)."""
        summary = ", ".join(sorted(codes)) or "no reply"
        if temporary:
            if unsent == temporary and accepted == 0 and permanent == 0:
                raise Unreachable(f"no next hop reachable for {temporary} recipient(s)")  # nothing was sent
            if accepted == 0 and permanent == 0 and not any(c for c in codes if c[:1] == "4"):
                raise NotConnected(f"connection lost with {temporary} recipient(s) pending")
            raise Retryable(f"{temporary} recipient(s) refused for now ({summary}); {accepted} accepted")
        if accepted == 0:
            raise Rejected(f"every recipient refused ({summary})", ack_code=summary[:16])

    async def _dsn(self, message: Message, mail: _OutMail, failures: list[RecipientFailure]) -> None:
        """RFC 3464 DSN to the local sender's hosted mailbox (none for a null or foreign sender)."""
        sender = mail.sender
        if self.store is None or not sender or domain_of(sender) not in self.domains:
            return
        now = utcnow()
        dsn = build_dsn(
            mail.data,
            to=sender,
            postmaster=f"mailer-daemon@{domain_of(sender)}",
            reporting_mta=self.config.hostname,
            failures=failures,
            message_id=hub_message_id(message.correlation_id, f"dsn{mail.tag[:8]}", domain_of(sender)),
            date=now,
            arrival_date=message.received_at,
            envelope_id=mail.envid,
        )
        key = f"dsn|{mail.envid}|{mail.tag}|" + ",".join(sorted(f.recipient.lower() for f in failures))
        try:
            await asyncio.to_thread(self.store.deliver, sender, dsn, key=key)
        except (OSError, ValueError) as exc:
            log.warning(
                "mssante_dsn_not_delivered", endpoint=self.name, message_id=message.id, error=type(exc).__name__
            )
