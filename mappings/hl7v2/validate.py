"""The `hl7v2_validate` step: structure validation against the HL7 message definitions (hl7apy).

hl7apy costs ~16 ms per small message (DESIGN.md §10), so it never runs on the
MLLP hot path; a route opts in by listing this step, and it runs in the
delivery worker's step thread. hl7apy's exception texts quote field values,
so only the exception kind reaches the rejection reason (no patient data).
"""

from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from hub.content_types import ContentType
from hub.errors import ValidationError
from hub.message import Message
from hub.registry import register
from mappings.hl7v2.er7 import decode_er7

__all__ = ["hl7v2_validate"]


@register("step", "hl7v2_validate", consumes=(ContentType.HL7V2,), produces=ContentType.HL7V2)
def hl7v2_validate(message: Message) -> Message:
    """Refuse a message whose structure breaks its HL7 v2 message definition (strict hl7apy validation)."""
    text, _ = decode_er7(message.body)  # the one text layer: MSH-18, BOM
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except HL7apyException as exc:
        raise ValidationError(f"HL7 structure validation failed ({type(exc).__name__})", code="100") from None
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ValidationError(f"HL7 structure could not be read ({type(exc).__name__})", code="100") from None
    return message
