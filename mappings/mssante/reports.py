"""Acknowledgement mail: build MDNs (RFC 8098) and DSNs (RFC 3464), read those received.

**MDN** (volet "Transmission au LPS d'un document CDA provenant d'un courriel
MSSanté", page struct-msg-mdn; DOMAIN.md §6): sent only when the mail has
``Disposition-Notification-To``; ``multipart/report;
report-type=disposition-notification`` with a human part (the error code and
label when it failed), a ``message/disposition-notification`` part
(Reporting-UA, Original-Recipient, Final-Recipient, Original-Message-ID,
Disposition) and the original mail. The volet writes a failure as
``Disposition: automatic-action/MDN-sent-automatically; processed/Error:
<code>^<label>``, which is not RFC 8098 grammar (§3.2.6: the modifier is
``error`` and the text goes in an ``Error:`` field); the hub writes the
volet's form *and* the RFC ``Error:`` field, and reads both. The subject is
the original one (the volet's ``XDM/1.0/DDM+...``), prefixed with
``[KO Intégration système !][<code>] `` on error.

Decisions where the texts are silent or conflict: the MDN has three parts
(RFC 6522 allows no more), the third being the whole original mail as
``message/rfc822`` (so the IHE_XDM.ZIP the volet wants re-attached travels
inside it rather than beside it); MDNs and DSNs go with a null envelope sender
and ``Auto-Submitted: auto-replied`` (RFC 3834 §5) so that nothing answers
them.

**DSN** (RFC 3464; the ANS rules on DSNs are unverified, DOMAIN.md §6): built
by the hub for the local sender when another operator refuses a mail for
good: per-message fields (Reporting-MTA, Original-Envelope-Id,
Arrival-Date), one block per failed recipient (Final-Recipient, Action,
Status, Remote-MTA, Diagnostic-Code) and the original headers.

:func:`read_report` reads either kind into a :class:`Report`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import quopri
import re
import unicodedata
import uuid
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage, Message

__all__ = ["KO_PREFIX", "RecipientFailure", "Report", "build_dsn", "build_mdn", "read_report"]

KO_PREFIX = "[KO Intégration système !]"
_MAX_FIELD = 200


def _ascii(value: str, limit: int = _MAX_FIELD) -> str:
    """Report fields are US-ASCII (RFC 8098 §3.1.1, RFC 3464 §2.1.1): accents folded, controls dropped."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", folded).split())[:limit]


def _boundary() -> str:
    return f"=_report_{uuid.uuid4().hex}"


def _headers(pairs: Sequence[tuple[str, str]]) -> bytes:
    """Header block (CRLF, folded, RFC 2047-encoded when needed) followed by the blank line."""
    out = b""
    for name, value in pairs:
        out += policy.SMTP.fold_binary(name, policy.SMTP.header_factory(name, value))
    return out + b"\r\n"


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def _text_part(text: str) -> bytes:
    body = quopri.encodestring(text.encode("utf-8")).replace(b"\n", b"\r\n")
    return (
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + body
        + b"\r\n"
    )


def _multipart(boundary: str, parts: Sequence[bytes]) -> bytes:
    b = boundary.encode()
    out = bytearray()
    for part in parts:
        out += b"--" + b + b"\r\n" + part
        if not part.endswith(b"\r\n"):
            out += b"\r\n"
    out += b"--" + b + b"--\r\n"
    return bytes(out)


def build_mdn(
    original: bytes,
    *,
    to: str,
    final_recipient: str,
    original_recipient: str,
    original_message_id: str,
    original_subject: str,
    reporting_ua: str,
    message_id: str,
    date: dt.datetime,
    error: tuple[str, str] | None = None,
) -> bytes:
    """An MDN for ``original`` (RFC 8098 §3, volet struct-msg-mdn): processed, or processed with an error.

    ``error`` is ``(code, label)``, e.g. ``("906", "Erreur autre")``; the
    label is the hub's own text (it is sent to the other operator).
    """
    subject = original_subject if original_subject else "XDM/1.0/DDM+"
    disposition = "automatic-action/MDN-sent-automatically; processed"
    fields = [
        f"Reporting-UA: {_ascii(reporting_ua)}; interop-hub",
        f"Original-Recipient: rfc822;{_ascii(original_recipient)}",
        f"Final-Recipient: rfc822;{_ascii(final_recipient)}",
        f"Original-Message-ID: {_ascii(original_message_id, 998)}",
    ]
    if error is None:
        human = "Le message a été traité automatiquement.\nThe message has been processed automatically.\n"
        fields.append(f"Disposition: {disposition}")
    else:
        code, label = _ascii(error[0], 16), _ascii(error[1])
        subject = f"{KO_PREFIX}[{code}] {subject}"
        human = (
            f"Le message ci-dessous n'a pas pu être intégré automatiquement pour la raison suivante :\n{code}^{label}\n"
        )
        fields.append(f"Disposition: {disposition}/Error: {code}^{label}")
        fields.append(f"Error: {code}^{label}")  # RFC 8098 §3.2.7
    boundary = _boundary()
    head = _headers(
        [
            ("From", final_recipient),
            ("To", to),
            ("Subject", subject),
            ("Date", email.utils.format_datetime(date.astimezone(dt.UTC))),
            ("Message-ID", message_id),
            ("MIME-Version", "1.0"),
            ("Auto-Submitted", "auto-replied"),
            (
                "Content-Type",
                f'multipart/report; report-type=disposition-notification; boundary="{boundary}"',
            ),
        ]
    )
    notification = b"Content-Type: message/disposition-notification\r\n\r\n" + "\r\n".join(fields).encode() + b"\r\n"
    returned = b"Content-Type: message/rfc822\r\n\r\n" + _crlf(original)
    return head + _multipart(boundary, [_text_part(human), notification, returned])


@dataclasses.dataclass(frozen=True, slots=True)
class RecipientFailure:
    """One recipient another operator refused for good (RFC 3464 §2.3)."""

    recipient: str
    status: str
    """Enhanced status code (RFC 3463), e.g. ``5.1.1``."""
    diagnostic: str
    """The remote server's reply, e.g. ``550 5.1.1 mailbox unknown``."""
    remote_mta: str = ""
    action: str = "failed"

    def __repr__(self) -> str:
        return f"RecipientFailure(status={self.status!r}, action={self.action!r})"


def build_dsn(
    original_headers: bytes,
    *,
    to: str,
    postmaster: str,
    reporting_mta: str,
    failures: Sequence[RecipientFailure],
    message_id: str,
    date: dt.datetime,
    arrival_date: dt.datetime,
    envelope_id: str = "",
) -> bytes:
    """A DSN (RFC 3464) telling ``to`` which recipients of its mail failed, with the original headers."""
    per_message = [f"Reporting-MTA: dns; {_ascii(reporting_mta)}"]
    if envelope_id:
        per_message.append(f"Original-Envelope-Id: {_ascii(envelope_id, 100)}")
    per_message.append(f"Arrival-Date: {email.utils.format_datetime(arrival_date.astimezone(dt.UTC))}")
    blocks = ["\r\n".join(per_message)]
    for f in failures:
        block = [f"Final-Recipient: rfc822; {_ascii(f.recipient)}", f"Action: {f.action}", f"Status: {f.status}"]
        if f.remote_mta:
            block.append(f"Remote-MTA: dns; {_ascii(f.remote_mta)}")
        if f.diagnostic:
            block.append(f"Diagnostic-Code: smtp; {_ascii(f.diagnostic)}")
        blocks.append("\r\n".join(block))
    human = (
        "Votre message n'a pas pu être remis à tous ses destinataires (échec définitif).\n"
        "Your message could not be delivered to all of its recipients (permanent failure).\n\n"
        + "".join(f"- {_ascii(f.recipient)}: {f.status} {_ascii(f.diagnostic)}\n" for f in failures)
    )
    boundary = _boundary()
    head = _headers(
        [
            ("From", f"Mail Delivery System <{postmaster}>"),
            ("To", to),
            ("Subject", "Échec de remise / Undelivered mail"),
            ("Date", email.utils.format_datetime(date.astimezone(dt.UTC))),
            ("Message-ID", message_id),
            ("MIME-Version", "1.0"),
            ("Auto-Submitted", "auto-replied"),
            ("Content-Type", f'multipart/report; report-type=delivery-status; boundary="{boundary}"'),
        ]
    )
    status = b"Content-Type: message/delivery-status\r\n\r\n" + "\r\n\r\n".join(blocks).encode() + b"\r\n"
    headers_only = _crlf(original_headers.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]).rstrip(b"\r\n")
    returned = b"Content-Type: text/rfc822-headers\r\n\r\n" + headers_only + b"\r\n"
    return head + _multipart(boundary, [_text_part(human), status, returned])


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """An MDN or a DSN, as read. Fields are ``""`` when the report does not say."""

    kind: str
    """``mdn`` or ``dsn``."""
    original_message_id: str
    original_envelope_id: str
    disposition: str
    """MDN: the disposition type and modifier (``processed``, ``processed/error``, ``displayed``...);
    DSN: the action for the recipients (``failed``, ``delivered``, ``delayed``..., the most severe)."""
    status: str
    """DSN: the status code of that recipient (``5.1.1``)."""
    error: str
    """MDN: the error text (``902^Identifiant patient inconnu``)."""
    final_recipient: str

    def __repr__(self) -> str:
        return f"Report(kind={self.kind!r}, disposition={self.disposition!r}, status={self.status!r})"


def _field_blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [
            {k.lower(): str(v).strip() for k, v in block.items()} for block in payload if isinstance(block, Message)
        ]
    text = payload if isinstance(payload, str) else ""
    blocks = []
    for chunk in re.split(r"\r?\n\r?\n", text):
        fields: dict[str, str] = {}
        for line in chunk.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _address(field: str) -> str:
    """``rfc822;addr`` → ``addr`` (RFC 3464 §2.3.2 address-type; value)."""
    return field.partition(";")[2].strip() if ";" in field else field.strip()


_ACTION_ORDER = {"failed": 0, "delayed": 1, "relayed": 2, "expanded": 3, "delivered": 4}


def read_report(message: EmailMessage) -> Report | None:
    """The MDN or DSN carried by a ``multipart/report`` mail, else None."""
    if message.get_content_type() != "multipart/report":
        return None
    report_type = str(message.get_param("report-type") or "").lower()
    parts = list(message.iter_parts())
    returned_id = ""
    for part in parts:
        ctype = part.get_content_type()
        if ctype == "text/rfc822-headers":
            content = part.get_payload(decode=True)
            text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(part.get_payload())
            found = re.search(r"^Message-ID:\s*(\S+)", text, re.I | re.M)
            returned_id = found.group(1) if found else returned_id
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                returned_id = str(inner[0].get("Message-ID", "") or "").strip() or returned_id
    for part in parts:
        ctype = part.get_content_type()
        if ctype in ("message/disposition-notification", "message/global-disposition-notification") or (
            report_type == "disposition-notification" and ctype.endswith("disposition-notification")
        ):
            fields = _field_blocks(part)[0] if _field_blocks(part) else {}
            disposition = fields.get("disposition", "")
            kind_part = disposition.partition(";")[2].strip()
            # Volet form "processed/Error: 902^label"; RFC 8098 form "processed/error" plus "Error: ...".
            type_, _, modifier = kind_part.partition("/")
            error = fields.get("error", "")
            if modifier.lower().startswith("error"):
                error = error or modifier.partition(":")[2].strip()
                modifier = "error"
            return Report(
                kind="mdn",
                original_message_id=fields.get("original-message-id", "") or returned_id,
                original_envelope_id="",
                disposition=f"{type_.strip().lower()}/{modifier}" if modifier else type_.strip().lower(),
                status="",
                error=_ascii(error),
                final_recipient=_address(fields.get("final-recipient", "")),
            )
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _field_blocks(part)
            per_message = blocks[0] if blocks else {}
            recipients = blocks[1:]
            worst = min(recipients, key=lambda b: _ACTION_ORDER.get(b.get("action", "").lower(), 5), default={})
            return Report(
                kind="dsn",
                original_message_id=returned_id,
                original_envelope_id=per_message.get("original-envelope-id", ""),
                disposition=worst.get("action", "").lower(),
                status=worst.get("status", ""),
                error=_ascii(worst.get("diagnostic-code", "")),
                final_recipient=_address(worst.get("final-recipient", "")),
            )
    return None
