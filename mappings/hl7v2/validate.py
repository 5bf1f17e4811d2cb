"""The `hl7v2_validate` step: structure validation against the HL7 v2 message definitions.

The definitions (message structures, groups, segments, data types, cardinalities) are
compiled into the package (:mod:`mappings.hl7v2.structure`), so a message costs a split of
its text, not a library parse (~16 ms a message with hl7apy, which gave the same verdicts and
is kept as the reference of a differential test). Rejection reasons name the location
(segment, field, component), never a value.
"""

from __future__ import annotations

from hub.content_types import ContentType
from hub.message import Message
from hub.registry import register
from mappings.hl7v2.er7 import Er7Message
from mappings.hl7v2.structure import validate_structure

__all__ = ["hl7v2_validate"]


@register("step", "hl7v2_validate", consumes=(ContentType.HL7V2,), produces=ContentType.HL7V2)
def hl7v2_validate(message: Message) -> Message:
    """Refuse a message whose structure breaks its HL7 v2 message definition."""
    parsed = Er7Message(message.body)  # the one text layer (MSH-18, BOM, encoding characters); ParseError
    validate_structure(parsed)
    return message
