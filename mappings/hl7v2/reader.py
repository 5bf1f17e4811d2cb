"""The routing-metadata reader and the text codec of HL7 v2 ER7 bodies (replay, admin API)."""

from __future__ import annotations

from hub.content_types import ContentType
from hub.registry import register
from mappings.hl7v2.er7 import check_header, decode_er7, encode_er7, read_header

__all__ = ["Hl7v2Text", "read_hl7v2_metadata"]


@register("reader", ContentType.HL7V2)
def read_hl7v2_metadata(body: bytes) -> dict[str, str]:
    """MSH (and patient key) metadata of an ER7 message; MessageError when MSH is unusable."""
    er7, header = read_header(body)
    check_header(er7, header)
    return header.metadata()


@register("text", ContentType.HL7V2)
class Hl7v2Text:
    """HL7 v2 bodies as text, in the character set their MSH-18 declares (the one text layer, er7.py)."""

    @staticmethod
    def decode(body: bytes) -> tuple[str, str]:
        """``(charset, text)``; MessageError when the bytes break the declared character set."""
        text, codec = decode_er7(body)
        return ("utf-8" if codec == "ascii" else codec), text

    @staticmethod
    def encode(text: str) -> bytes:
        """Bytes in the character set the text's own MSH-18 declares; MessageError when one cannot hold it.

        Text edited in a browser or a file ends its lines with LF or CRLF: HL7 v2 ends each segment
        with CR (HL7 v2.5 §2.6), so line ends become CR first.
        """
        text = text.replace("\r\n", "\r").replace("\n", "\r")
        _, codec = decode_er7(text)
        return encode_er7(text, codec)
