"""HL7 v2 original-mode acknowledgements (HL7 v2.5 §2.9.2, §2.14.9).

The ACK's MSH mirrors the inbound one as the standard describes: the
sending and receiving application/facility are swapped, MSH-9 is
``ACK^<trigger>^ACK``, MSH-11 (processing id) and MSH-12 (version) are echoed,
MSA-2 carries the inbound MSH-10. An error adds an ERR segment in the v2.5
layout: ERR-2 error location, ERR-3 code from HL7 table 0357, ERR-4 severity,
ERR-8 a user message. Texts are the hub's own, never copied from the message.
The ACK declares and is encoded in the inbound message's character set (its MSH-18).
"""

from __future__ import annotations

from datetime import datetime

from hub.message import new_id, utcnow
from mappings.hl7v2.er7 import Delimiters, Header, codec_for, escape

__all__ = ["build_ack", "build_bare_ack"]

_TABLE_0357 = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}


def _escape(text: str, d: Delimiters) -> str:
    return escape(text.replace("\r", " ").replace("\n", " "), d)


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


def build_ack(
    header: Header,
    code: str,
    *,
    error_code: str = "",
    error_text: str = "",
    error_location: str = "",
    now: datetime | None = None,
) -> bytes:
    """ACK for an inbound message whose MSH could be read. `code` is AA, AE or AR."""
    d = header.delimiters
    fs = d.field
    trigger = header.trigger
    msh = fs.join(
        [
            "MSH",
            d.encoding_characters,
            header.receiving_app_raw,
            header.receiving_facility_raw,
            header.sending_app_raw,
            header.sending_facility_raw,
            _timestamp(now or utcnow()),
            "",
            f"ACK{d.component}{trigger}{d.component}ACK" if trigger else "ACK",
            new_id().replace("-", "")[:20],
            header.processing_id or "P",
            header.version_raw or "2.5",
            # MSH-18 echoed (HL7 v2.5 §2.15.9.18), so the receiver decodes the ACK as it encoded its message;
            # not a set the hub cannot write (the ACK refusing it is then in UTF-8, undeclared).
            *(["", "", "", "", "", _escape(header.charset, d)] if codec_for(header.charset) else []),
        ]
    )
    segments = [msh, fs.join(["MSA", code, _escape(header.control_id, d)])]
    if code != "AA":
        segments.append(_err_segment(d, error_code or "207", error_text, error_location))
    # The ACK echoes the sender's MSH fields and says nothing of MSH-18, so it is written in the
    # inbound message's own character set (HL7 v2.5 §2.15.9.18: the default of the exchange).
    return ("\r".join(segments) + "\r").encode(header.codec, errors="replace")


def _err_segment(d: Delimiters, code: str, text: str, location: str) -> str:
    fs = d.field
    label = _TABLE_0357.get(code, "Application internal error")
    err3 = d.component.join([code, label, "HL70357"])
    location = location.replace("^", d.component)
    return fs.join(["ERR", "", location, err3, "E", "", "", "", _escape(text, d)])


def build_bare_ack(code: str, *, error_code: str, error_text: str, now: datetime | None = None) -> bytes:
    """ACK for bytes whose MSH could not be read at all: default delimiters, empty MSA-2."""
    d = Delimiters()
    msh = "|".join(
        [
            "MSH",
            d.encoding_characters,
            "HUB",
            "",
            "",
            "",
            _timestamp(now or utcnow()),
            "",
            "ACK",
            new_id().replace("-", "")[:20],
            "P",
            "2.5",
        ]
    )
    segments = [msh, "|".join(["MSA", code, ""]), _err_segment(d, error_code, error_text, "")]
    return ("\r".join(segments) + "\r").encode("utf-8")
