"""The hub's exception tree and its one outcome vocabulary.

Every failure the engine handles is one of these, so that each protocol can
map it once to its own reply (AA/AE/AR, 2xx/503/4xx, 250/451/554)::

    HubError
      ConfigError              startup only: the process refuses to start
      StoreError               the durable store is unavailable -> RETRY upstream
      MessageError             about one message, permanent -> Outcome.REJECT
        ParseError               bytes that are not the format they claim to be
        ValidationError          well-formed but breaks a rule (structure, table value)
        MappingError             a step could not transform the message
        TooLarge                 over a configured size limit
      DeliveryError            about one delivery attempt
        Retryable              -> Outcome.RETRY (optional retry_after_secs)
          NotConnected           the adapter lost or could not open its connection
            Unreachable            nothing was sent: refused, TLS failure, connect time-out
                                   (opens the destination's circuit; no attempt is counted)
        Rejected               -> Outcome.REJECT (dead letter, no retry)
      IdentityHold             a delivery must wait for the patient's identity (not an outcome)
        AwaitingIdentity         no qualified INS yet: held until an ADT qualifies it
        IdentityMismatch         the message's traits disagree with the registry: identity review

Exception texts never carry payloads or patient data: they name a message id,
a segment or field position, a code, never a value taken from the message.
Library errors are translated into these once, at the adapter boundary.
"""

from __future__ import annotations

import enum
from typing import Self

from hub.replies import PeerReply
from hub.statuses import DeliveryStatus

__all__ = [
    "AwaitingIdentity",
    "ConfigError",
    "DeliveryError",
    "HubError",
    "IdentityHold",
    "IdentityMismatch",
    "MappingError",
    "MessageError",
    "NotConnected",
    "Outcome",
    "ParseError",
    "Rejected",
    "Retryable",
    "StoreError",
    "TooLarge",
    "Unreachable",
    "ValidationError",
]


class Outcome(enum.Enum):
    """What became of one message at one boundary."""

    ACCEPT = "accept"
    RETRY = "retry"
    REJECT = "reject"


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(HubError):
    """Invalid configuration or route; each entry of `problems` reads `file:line: text`."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StoreError(HubError):
    """The durable store could not take or give a record (down, full, timed out)."""


class MessageError(HubError):
    """A permanent problem with one message; resending it unchanged will fail again.

    `code` is an HL7 table 0357 error code (used verbatim in an MLLP ERR
    segment), `location` an HL7 error location such as ``MSH^1^9``.
    """

    code = "207"

    def __init__(self, reason: str, *, code: str | None = None, location: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code
        self.location = location


class ParseError(MessageError):
    """The bytes are not a well-formed message of the declared format."""

    code = "100"


class ValidationError(MessageError):
    """Well-formed, but breaks a structural or business rule."""

    code = "101"


class MappingError(MessageError):
    """A pipeline step could not transform the message."""

    code = "207"


class TooLarge(MessageError):
    """Over a configured size limit."""

    code = "207"


class DeliveryError(HubError):
    """One delivery attempt failed; the subclass says whether to try again.

    `reply` is what the peer answered, when it did (an AE, a 422 and its OperationOutcome, a 550):
    the worker stores it with the attempt. It never enters the exception's text.
    """

    outcome: Outcome = Outcome.RETRY

    def __init__(self, reason: str, *, reply: PeerReply | None = None) -> None:
        super().__init__(reason)
        self.reply = reply

    def with_reply(self, reply: PeerReply | None) -> Self:
        """This error with the peer's `reply` attached (one attached before is kept): ``raise exc.with_reply(r)``."""
        if self.reply is None:
            self.reply = reply
        return self


class Retryable(DeliveryError):
    """Transient: the peer is busy, down, slow or said AE / 5xx / 4xx-temporary."""

    outcome = Outcome.RETRY

    def __init__(
        self, reason: str, *, retry_after_secs: float | None = None, reply: PeerReply | None = None
    ) -> None:
        super().__init__(reason, reply=reply)
        self.retry_after_secs = retry_after_secs


class NotConnected(Retryable):
    """The adapter has no usable connection; the hub retries with backoff."""


class Unreachable(NotConnected):
    """The destination could not be reached and nothing was sent (refused, TLS failure, connect time-out).

    The peer did not answer, so this is an outage, not an attempt: the delivery keeps its
    attempts, the destination's circuit opens, and the worker probes until it comes back.
    """


class Rejected(DeliveryError):
    """Permanent: the peer refused this message (AR, 4xx, 5xx SMTP). `ack_code` keeps the peer's code."""

    outcome = Outcome.REJECT

    def __init__(self, reason: str, *, ack_code: str = "", reply: PeerReply | None = None) -> None:
        super().__init__(reason, reply=reply)
        self.ack_code = ack_code


class IdentityHold(HubError):
    """A delivery cannot go on until the patient's identity is settled; `reason` names no patient data."""

    status = DeliveryStatus.AWAITING_IDENTITY

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AwaitingIdentity(IdentityHold):
    """The destination needs a qualified INS and the registry has none for this patient yet."""

    status = DeliveryStatus.AWAITING_IDENTITY


class IdentityMismatch(IdentityHold):
    """Strict traits in the message disagree with the registry; `traits` names them (no values)."""

    status = DeliveryStatus.IDENTITY_REVIEW

    def __init__(self, reason: str, *, traits: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.traits = traits
