"""The frozen Message envelope that every part of the hub passes around.

A Message is bytes plus string metadata. The store and the queues hold
exactly that, never parsed objects: a step that needs structure parses the
body itself and returns a *derived* Message, which keeps the correlation id
and records its parent, so a trace can be followed from the inbound bytes to
every delivery.

Metadata keys used by the engine itself (adapters and steps add more):

====================  ========================================================
``endpoint``          name of the inbound listener that received the message
``message_type``      HL7 MSH-9 as ``ADT^A01`` (or a resource type for FHIR)
``control_id``        HL7 MSH-10, the sender's message control id
``sending_app``       HL7 MSH-3 namespace id
``sending_facility``  HL7 MSH-4 namespace id
``patient_key``       the local patient identifier used for ordering and search
====================  ========================================================
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from hub.content_types import ContentType

__all__ = ["CONTENT_HL7V2", "Message", "new_id", "utcnow"]

CONTENT_HL7V2 = ContentType.HL7V2
"""The HL7 v2 content type; kept for code written before `hub.content_types.ContentType`."""


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the hub reads for timestamps."""
    return datetime.now(UTC)


_id_lock = threading.Lock()
_id_state = [0, 0]  # last millisecond, counter within it


def new_id() -> str:
    """A UUIDv7 string (RFC 9562): time-ordered and monotonic within this process.

    The 12 ``rand_a`` bits hold a counter within the same millisecond
    (RFC 9562 §6.2, method 1), so ids sort by arrival even at high rates.
    """
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _id_state[0]:
            ms = _id_state[0]
            _id_state[1] += 1
            if _id_state[1] > 0xFFF:
                ms += 1
                _id_state[1] = 0
        else:
            _id_state[1] = 0
        _id_state[0] = ms
        counter = _id_state[1]
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Message:
    """One message as the hub holds it: immutable, bytes plus metadata."""

    id: str
    content_type: str
    body: bytes
    metadata: Mapping[str, str]
    received_at: datetime
    correlation_id: str
    parent_id: str | None = None

    @classmethod
    def new(
        cls,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
        received_at: datetime | None = None,
    ) -> Message:
        """A fresh inbound message; its id is also its correlation id."""
        mid = new_id()
        return cls(
            id=mid,
            content_type=content_type,
            body=body,
            metadata=MappingProxyType(dict(metadata or {})),
            received_at=received_at or utcnow(),
            correlation_id=mid,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    def derive(self, *, body: bytes | None = None, content_type: str | None = None, **metadata: str) -> Message:
        """A new message made from this one: new id, same correlation id, this one as parent."""
        merged = dict(self.metadata)
        merged.update(metadata)
        return Message(
            id=new_id(),
            content_type=content_type or self.content_type,
            body=self.body if body is None else body,
            metadata=MappingProxyType(merged),
            received_at=utcnow(),
            correlation_id=self.correlation_id,
            parent_id=self.id,
        )

    def __repr__(self) -> str:
        # Never the body, never patient metadata: only what identifies the envelope.
        return (
            f"Message(id={self.id!r}, content_type={self.content_type!r}, "
            f"type={self.metadata.get('message_type', '')!r}, bytes={len(self.body)})"
        )
