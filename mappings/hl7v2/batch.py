"""HL7 v2 files that hold several messages, as people keep them: any line ending, one message per MSH."""

from __future__ import annotations

__all__ = ["split_messages"]


def split_messages(data: bytes) -> list[bytes]:
    """ER7 messages of a file: segments on any line ending (CR, LF, CRLF), a new message at each MSH.

    Each message comes back with CR between segments and after the last (HL7 v2.5 §2.6: CR ends a segment).
    """
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    out: list[list[bytes]] = []
    for seg in text.split(b"\r"):
        if not seg.strip():
            continue
        if seg.startswith(b"MSH") or not out:
            out.append([])
        out[-1].append(seg)
    return [b"\r".join(segs) + b"\r" for segs in out]
