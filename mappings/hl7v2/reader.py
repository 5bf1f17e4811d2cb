"""The routing-metadata reader for HL7 v2 ER7 bodies (used by replay and by the MLLP listener)."""

from __future__ import annotations

from hub.message import CONTENT_HL7V2
from hub.registry import register
from mappings.hl7v2.er7 import check_header, read_header

__all__ = ["read_hl7v2_metadata"]


@register("reader", CONTENT_HL7V2)
def read_hl7v2_metadata(body: bytes) -> dict[str, str]:
    """MSH (and patient key) metadata of an ER7 message; MessageError when MSH is unusable."""
    er7, header = read_header(body)
    check_header(er7, header)
    return header.metadata()
