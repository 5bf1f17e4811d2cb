"""What a destination answered: the peer's reply to one delivery attempt, kept with the attempt.

An outbound adapter returns a :class:`PeerReply` from ``send`` (ACCEPT) and attaches one to the
:class:`~hub.errors.DeliveryError` it raises when the peer answered (AE/AR, HTTP 4xx/5xx, SMTP
4xx/5xx); the delivery worker stores it with the attempt, beside what was sent. The hub never reads
the bytes: `kind` and `content_type` tell a reader (the console, an operator) how to show them.

A reply may carry health data (an OperationOutcome quoting the resource, a SOAP fault, an SMTP line
echoing an address): it is shown only to roles that may read payloads, and never logged. Its
``repr`` names no bytes.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from hub.message import utcnow

__all__ = ["REPLY_MAX_BYTES", "PeerReply", "ReplyKind"]

#: The most bytes of a reply kept by default (the rest is cut; `size` keeps the real length).
REPLY_MAX_BYTES = 64 * 1024


class ReplyKind:
    """The usual values of :attr:`PeerReply.kind` (a plain string: a third-party adapter may add its own)."""

    HL7V2_ACK = "hl7v2-ack"
    HTTP = "http"
    SMTP = "smtp"
    LOCAL = "local"
    """No peer: the destination is the hub's own (a mailbox store, the identity registry)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PeerReply:
    """One reply of a destination's peer, its bytes cut to a bound."""

    kind: str
    """How it came: ``hl7v2-ack``, ``http``, ``smtp``, ``local`` (see :class:`ReplyKind`)."""
    summary: str
    """A short verdict read from it, no payload value: MSA-1 (``AA``), an HTTP status (``201``), SMTP codes."""
    body: bytes = dataclasses.field(default=b"", repr=False)
    """The reply's bytes, at most the bound it was cut to."""
    content_type: str = ""
    """The media type of `body` (``x-application/hl7-v2+er7``, the HTTP Content-Type, ``text/plain``)."""
    size: int = -1
    """Bytes the peer sent; -1 (the default) means ``len(body)``."""
    received_at: datetime = dataclasses.field(default_factory=utcnow)

    def __post_init__(self) -> None:
        if self.size < 0:
            object.__setattr__(self, "size", len(self.body))

    @property
    def truncated(self) -> bool:
        """Whether `body` is only the first part of what the peer sent."""
        return self.size > len(self.body)

    @classmethod
    def of(
        cls, kind: str, summary: str, body: bytes = b"", *, content_type: str = "", max_bytes: int = REPLY_MAX_BYTES
    ) -> PeerReply:
        """A reply received now, its bytes cut to `max_bytes`."""
        return cls(kind, summary[:200], bytes(body[:max_bytes]), content_type, len(body))

    def capped(self, max_bytes: int) -> PeerReply:
        """This reply with at most `max_bytes` of its body (itself when already within)."""
        if len(self.body) <= max_bytes:
            return self
        return dataclasses.replace(self, body=self.body[:max_bytes])
