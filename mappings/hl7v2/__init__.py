"""HL7 v2 helpers that sit on the hot path: a small ER7 reader and the ACK builder."""

from mappings.hl7v2.ack import build_ack, build_bare_ack
from mappings.hl7v2.er7 import (
    Er7Message,
    Header,
    check_header,
    decode_er7,
    encode_er7,
    escape,
    read_header,
    unescape,
)

__all__ = [
    "Er7Message",
    "Header",
    "build_ack",
    "build_bare_ack",
    "check_header",
    "decode_er7",
    "encode_er7",
    "escape",
    "read_header",
    "unescape",
]
