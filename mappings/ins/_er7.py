"""ER7 helpers shared by the PAM reader and the HL7 v2 stamper: charset, escaping, CX/HD pieces.

`mappings.hl7v2.er7.Er7Message` decodes bytes as UTF-8 (invalid bytes
replaced), which is right for routing on MSH but would corrupt an accented
name sent in ISO 8859-1, still common in French hospitals. Identity work reads
and writes names, so it decodes with the character set MSH-18 declares and
re-encodes with the same one, leaving every byte it does not change as it was.
"""

from __future__ import annotations

import re

from hub.errors import MappingError, ParseError
from mappings.hl7v2.er7 import Delimiters

__all__ = ["decode_er7", "encode_er7", "escape", "set_component"]

_FIRST_LINE = re.compile(rb"[^\r\n]*")
_ISO_8859 = re.compile(r"8859/([0-9]{1,2})")


def _declared_codec(body: bytes) -> str | None:
    """The Python codec MSH-18 names (HL7 table 0211), or None when absent or not recognised."""
    line = _FIRST_LINE.match(body.lstrip(b"\r\n"))
    head = line.group(0).decode("latin-1") if line else ""
    if not head.startswith("MSH") or len(head) < 8:
        return None
    fields = head.split(head[3])
    msh18 = fields[17].split(head[4])[0].strip().upper() if len(fields) > 17 else ""
    if "UTF-8" in msh18 or "UTF8" in msh18:
        return "utf-8"
    iso = _ISO_8859.search(msh18)
    if iso:
        return "latin-1" if iso.group(1) == "1" else f"iso8859-{iso.group(1)}"
    return None


def decode_er7(body: bytes | str) -> tuple[str, str]:
    """Decode an ER7 message with the character set of its MSH-18; return ``(text, codec)``.

    Without a recognised MSH-18 (empty, ``ASCII``...), UTF-8 is tried and
    ISO 8859-1 taken if the bytes are not UTF-8: a decision, since HL7's
    default (ASCII) is rarely what French senders mean. Raises `ParseError`
    when the bytes are invalid in the declared character set.
    """
    if isinstance(body, str):
        return body, "utf-8"
    codec = _declared_codec(body)
    if codec is None:
        try:
            return body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return body.decode("latin-1"), "latin-1"
    try:
        return body.decode(codec), codec
    except (UnicodeDecodeError, LookupError):
        raise ParseError("bytes invalid in the MSH-18 character set", code="102", location="MSH^1^18") from None


def encode_er7(text: str, codec: str) -> bytes:
    """Encode back with the message's own codec; `MappingError` if a stamped value does not fit in it."""
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        raise MappingError(
            "a stamped identity value has a character the MSH-18 character set cannot hold", location="MSH^1^18"
        ) from None


def escape(value: str, d: Delimiters) -> str:
    """Escape one primitive value with the message's own delimiters (HL7 v2.5 §2.7.4)."""
    out: list[str] = []
    for ch in value:
        if ch == d.escape:
            out.append(f"{d.escape}E{d.escape}")
        elif ch == d.field:
            out.append(f"{d.escape}F{d.escape}")
        elif ch == d.component:
            out.append(f"{d.escape}S{d.escape}")
        elif ch == d.subcomponent:
            out.append(f"{d.escape}T{d.escape}")
        elif ch == d.repetition:
            out.append(f"{d.escape}R{d.escape}")
        elif ch in "\r\n":
            out.append(f"{d.escape}X{ord(ch):02X}{d.escape}")
        else:
            out.append(ch)
    return "".join(out)


def set_component(repetition: str, index: int, raw_value: str, d: Delimiters) -> str:
    """Return ``repetition`` with component ``index`` (1-based) set to an already escaped value."""
    comps = repetition.split(d.component)
    if len(comps) < index:
        comps.extend([""] * (index - len(comps)))
    comps[index - 1] = raw_value
    return d.component.join(comps)
