"""A small, strict ER7 (pipe-and-hat) reader for the hot path.

hl7apy builds a full tree at ~60 messages/s per core (DESIGN.md §10); the MLLP
listener must read MSH for the ACK and routing metadata at thousands of
messages per second, so this reader splits bytes and nothing more:

* encoding characters come from MSH-1/MSH-2 of each message (HL7 v2.5 §2.5.4),
  never assumed;
* segments end with CR (HL7 v2.5 §2.7); LF and CRLF are tolerated because
  real senders emit them;
* escapes (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\) are resolved only on the values read.

Errors raise :class:`hub.errors.ParseError` / :class:`ValidationError` with
an HL7 error location and table 0357 code, never with a value from the message.
"""

from __future__ import annotations

import dataclasses
import re

from hub.errors import ParseError, ValidationError

__all__ = ["Delimiters", "Er7Message", "Header", "check_header", "read_header", "unescape"]

_SEGMENT_SPLIT = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it must be written back (HL7 v2.5 §2.5.4)."""
        return self.component + self.repetition + self.escape + self.subcomponent


def unescape(value: str, d: Delimiters) -> str:
    """Resolve HL7 escape sequences in one primitive value (HL7 v2.5 §2.7.4)."""
    esc = d.escape
    if not esc or esc not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:
            out.append(value[i:])
            break
        seq = value[i + 1 : end]
        if seq == "F":
            out.append(d.field)
        elif seq == "S":
            out.append(d.component)
        elif seq == "T":
            out.append(d.subcomponent)
        elif seq == "R":
            out.append(d.repetition)
        elif seq == "E":
            out.append(esc)
        elif seq.startswith("X") and len(seq) > 1:
            try:
                out.append(bytes.fromhex(seq[1:]).decode("latin-1"))
            except ValueError:
                out.append(value[i : end + 1])
        else:
            # Formatting escapes (.br, H, N...) are kept as written.
            out.append(value[i : end + 1])
        i = end + 1
    return "".join(out)


class Er7Message:
    """Segments of one ER7 message, split lazily into fields on demand."""

    __slots__ = ("_fields_cache", "delimiters", "segments", "source")

    def __init__(self, body: bytes | str) -> None:
        self.source: bytes | None = None  # the whole message, when only its head was split (read_header)
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        text = text.lstrip("\r\n")
        if not text.startswith("MSH") or len(text) < 8:
            raise ParseError("message does not start with an MSH segment", code="100", location="MSH")
        fs = text[3]
        enc = text[4:8]
        if fs.isalnum() or fs in "\r\n" or len(set(fs + enc)) != 5 or any(c.isalnum() or c in "\r\n" for c in enc):
            raise ParseError(
                "MSH-1/MSH-2 do not declare five distinct encoding characters",
                code="102",
                location="MSH^1^2",
            )
        self.delimiters = Delimiters(fs, enc[0], enc[1], enc[2], enc[3])
        self.segments = [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]
        self._fields_cache: dict[int, list[str]] = {}

    def fields(self, index: int) -> list[str]:
        """Raw fields of segment `index`, numbered as HL7 does (MSH-1 is the separator)."""
        cached = self._fields_cache.get(index)
        if cached is not None:
            return cached
        seg = self.segments[index]
        parts = seg.split(self.delimiters.field)
        if parts[0] == "MSH":
            parts = ["MSH", self.delimiters.field, *parts[1:]]
        self._fields_cache[index] = parts
        return parts

    def segment_ids(self) -> list[str]:
        return [s[:3] for s in self.segments]

    def find(self, segment_id: str) -> int | None:
        """Index of the first segment with this id, or None."""
        for i, s in enumerate(self.segments):
            if s.startswith(segment_id) and (len(s) == 3 or s[3] == self.delimiters.field):
                return i
        return None

    def raw(self, index: int, field: int) -> str:
        """Field `field` of segment `index` as written (escapes kept), '' when absent."""
        f = self.fields(index)
        return f[field] if field < len(f) else ""

    def repetitions(self, index: int, field: int) -> list[str]:
        return self.raw(index, field).split(self.delimiters.repetition)

    def component(self, value: str, comp: int, sub: int = 1) -> str:
        """Component `comp` (1-based), subcomponent `sub`, unescaped, from one repetition."""
        d = self.delimiters
        comps = value.split(d.component)
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(d.subcomponent)
        if sub > len(subs):
            return ""
        return unescape(subs[sub - 1], d)

    def value(self, segment_id: str, field: int, comp: int = 1, sub: int = 1) -> str:
        """First repetition's component of a field of the first such segment, '' when absent."""
        i = self.find(segment_id)
        if i is None:
            return ""
        return self.component(self.repetitions(i, field)[0], comp, sub)


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    """What the hub needs from MSH (and PID-3) to ACK and to route."""

    delimiters: Delimiters
    sending_app: str
    sending_facility: str
    receiving_app: str
    receiving_facility: str
    sending_app_raw: str
    sending_facility_raw: str
    receiving_app_raw: str
    receiving_facility_raw: str
    message_type: str
    trigger: str
    structure: str
    control_id: str
    processing_id: str
    version: str
    version_raw: str
    charset: str
    patient_key: str

    @property
    def type_trigger(self) -> str:
        return f"{self.message_type}^{self.trigger}" if self.trigger else self.message_type

    def metadata(self) -> dict[str, str]:
        meta = {
            "message_type": self.type_trigger,
            "control_id": self.control_id,
            "sending_app": self.sending_app,
            "sending_facility": self.sending_facility,
            "receiving_app": self.receiving_app,
            "receiving_facility": self.receiving_facility,
            "hl7_version": self.version,
        }
        if self.patient_key:
            meta["patient_key"] = self.patient_key
        return meta


def _patient_key(msg: Er7Message) -> str:
    """`id@authority` of the PI identifier in PID-3 (IHE PAM FR §6.6.1), else its first repetition."""
    i = msg.find("PID")
    if i is None:
        return ""
    reps = [r for r in msg.repetitions(i, 3) if r]
    if not reps:
        return ""
    chosen = next((r for r in reps if msg.component(r, 5) == "PI"), reps[0])
    ident = msg.component(chosen, 1)
    if not ident:
        return ""
    authority = msg.component(chosen, 4, 1) or msg.component(chosen, 4, 2)
    return f"{ident}@{authority}" if authority else ident


def read_header(body: bytes | str) -> tuple[Er7Message, Header]:
    """Read MSH (and the patient key) of one ER7 message.

    Raises ParseError only when MSH itself cannot be read; missing required
    MSH fields are reported by :func:`check_header`, so that the ACK for such a
    message can still echo the sender's MSH (HL7 v2.5 §2.9.2).
    """
    if isinstance(body, bytes) and len(body) > _HEAD_SCAN_BYTES:
        # Large messages (documents in OBX-5) are not decoded or split whole on the hot path: MSH to PID
        # is what the ACK and routing read; check_header scans the rest as bytes, without copies.
        msg = Er7Message(_head(body))
        msg.source = body
    else:
        msg = Er7Message(body)
    m = msg.fields(0)
    get = msg.component

    def f(n: int) -> str:
        return m[n] if n < len(m) else ""

    header = Header(
        delimiters=msg.delimiters,
        sending_app=get(f(3), 1),
        sending_facility=get(f(4), 1),
        receiving_app=get(f(5), 1),
        receiving_facility=get(f(6), 1),
        sending_app_raw=f(3),
        sending_facility_raw=f(4),
        receiving_app_raw=f(5),
        receiving_facility_raw=f(6),
        message_type=get(f(9), 1),
        trigger=get(f(9), 2),
        structure=get(f(9), 3),
        control_id=get(f(10), 1),
        processing_id=get(f(11), 1),
        version=get(f(12), 1),
        version_raw=f(12),
        charset=get(f(18), 1),
        patient_key=_patient_key(msg),
    )
    return msg, header


def check_header(msg: Er7Message, header: Header) -> None:
    """Raise a MessageError (with table 0357 code and location) when MSH lacks what HL7 requires."""
    if not header.message_type:
        raise ValidationError("MSH-9 message type is empty", code="101", location="MSH^1^9")
    if not header.control_id:
        raise ValidationError("MSH-10 message control id is empty", code="101", location="MSH^1^10")
    if not header.processing_id:
        raise ValidationError("MSH-11 processing id is empty", code="101", location="MSH^1^11")
    if not header.version:
        raise ValidationError("MSH-12 version id is empty", code="101", location="MSH^1^12")
    if not header.version.startswith("2."):
        raise ValidationError("MSH-12 is not an HL7 v2 version", code="203", location="MSH^1^12")
    if msg.source is not None:
        _check_segments(msg.source)
        return
    if any("\x00" in seg for seg in msg.segments):
        # NUL is no HL7 character (v2.5 §2.7); PostgreSQL text cannot hold it either.
        raise ParseError("message contains NUL characters", code="102")
    for i, sid in enumerate(msg.segment_ids()):
        if not _SEGMENT_ID.match(sid):
            raise ParseError(f"segment {i + 1} does not start with a valid segment id", code="100")


_HEAD_SCAN_BYTES = 64 * 1024
_SEPARATORS = re.compile(rb"\r\n|\r|\n")
_SEGMENT_ID_BYTES = re.compile(rb"[A-Z][A-Z0-9]{2}")
_BLANK_BYTES = re.compile(rb"\s*")


def _head(body: bytes) -> bytes:
    """The message up to the end of its PID segment (or of MSH when PID is not near the start)."""
    fs = body.lstrip(b"\r\n")[3:4] if body[:1] in (b"\r", b"\n") else body[3:4]
    for sep in (b"\r", b"\n"):
        pid = body.find(sep + b"PID" + fs, 0, _HEAD_SCAN_BYTES)
        if pid >= 0:
            end = _SEPARATORS.search(body, pid + 1)
            return body[: end.start() if end else len(body)]
    end = _SEPARATORS.search(body, 3, _HEAD_SCAN_BYTES)
    return body[: end.start()] if end else body[:_HEAD_SCAN_BYTES]


def _check_segments(body: bytes) -> None:
    """`check_header`'s NUL and segment-id rules over the whole message, as bytes (no copy of its parts)."""
    if b"\x00" in body:
        raise ParseError("message contains NUL characters", code="102")
    start, n, size = 0, 0, len(body)
    for sep in [*_SEPARATORS.finditer(body), None]:
        end = sep.start() if sep is not None else size
        blank = _BLANK_BYTES.match(body, start, end)
        if blank is not None and blank.end() < end:  # a segment with content (blank lines are tolerated)
            n += 1
            if not _SEGMENT_ID_BYTES.match(body, start, end):
                raise ParseError(f"segment {n} does not start with a valid segment id", code="100")
        start = sep.end() if sep is not None else size
