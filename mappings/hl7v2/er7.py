"""The one HL7 v2 text layer: bytes to ER7 text and back, delimiters, escapes, MSH.

Every HL7 v2 reader and mapping of the hub goes through this module, so that
they all agree on what a message says:

* **character set** (HL7 v2.5 §2.15.9, MSH-18, table 0211): the bytes are
  decoded with the character set MSH-18 declares (``ASCII``, ``8859/1`` ..
  ``8859/15``, ``UNICODE UTF-8``, ``GB 18030-2000``, ``KS X 1001``,
  ``BIG-5``, see :data:`CHARSETS`); a message whose bytes break its declared
  set, or that declares a set the hub cannot decode, is refused with
  :class:`hub.errors.ParseError` located at ``MSH^1^18``. Without MSH-18,
  UTF-8 is tried and ISO 8859-1 taken when the bytes are not UTF-8: a
  decision, since HL7's default (ASCII) is rarely what French senders mean;
* a **UTF-8 byte-order mark** before MSH (Windows senders) is skipped and
  reported (:attr:`Er7Message.bom`, ``Header.bom``, metadata ``bom``);
* **encoding characters** come from MSH-1/MSH-2 of each message (HL7 v2.5
  §2.5.4), never assumed;
* segments end with CR (HL7 v2.5 §2.7); LF and CRLF are tolerated because
  real senders emit them;
* **escape sequences** (HL7 v2.5 §2.7.4: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``,
  ``\\Xhh..\\`` in the message's character set, and with
  ``formatting=True`` the §2.7.6 text formatting commands ``\\.br\\``,
  ``\\.sp\\`` ...) are resolved only on the values read; :func:`escape` is
  their inverse;
* **outbound** text is encoded with :func:`encode_er7` in the character set the
  produced message declares (:func:`codec_for`).

Errors raise :class:`hub.errors.ParseError` / :class:`ValidationError` with
an HL7 error location and table 0357 code, never with a value from the message.
"""

from __future__ import annotations

import dataclasses
import re

from hub.errors import MappingError, ParseError, ValidationError

__all__ = [
    "BOM",
    "CHARSETS",
    "Delimiters",
    "Er7Message",
    "Header",
    "check_charset",
    "check_header",
    "codec_for",
    "declared_charset",
    "decode_er7",
    "encode_er7",
    "escape",
    "read_header",
    "unescape",
]

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


# HL7 table 0211 (alternate character sets, v2.5 §2.15.9.18) -> Python codec. The Japanese JIS sets
# (ISO IR14/87/159) and CNS 11643 are switched in and out by ISO 2022 escapes inside a value, which
# no single codec reads: they are refused as unsupported rather than decoded wrong.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    **{f"8859/{n}": ("latin-1" if n == 1 else f"iso8859-{n}") for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "UNICODE UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
# Spellings real senders use for the same sets (not in table 0211, but unambiguous).
_ALIASES: dict[str, str] = {
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "UNICODE UTF8": "utf-8",
    "ISO-8859-1": "latin-1",
    "ISO8859-1": "latin-1",
    "ISO-8859-15": "iso8859-15",
    "LATIN1": "latin-1",
    "LATIN-1": "latin-1",
}
BOM = b"\xef\xbb\xbf"
_FIRST_LINE = re.compile(rb"[^\r\n]*")


def codec_for(charset: str) -> str | None:
    """The Python codec of an MSH-18 value (table 0211 or a common alias); None when unknown."""
    key = " ".join(charset.upper().split())
    return CHARSETS.get(key) or _ALIASES.get(key)


def _skip_bom(body: bytes) -> tuple[bytes, bool]:
    """`body` without a UTF-8 byte-order mark before MSH (leading CR/LF tolerated around it)."""
    head = body.lstrip(b"\r\n")
    if head.startswith(BOM):
        return head[len(BOM) :], True
    return body, False


def declared_charset(body: bytes | str) -> str:
    """MSH-18 (first repetition, first component) as written, '' when absent or MSH unreadable."""
    if isinstance(body, bytes):
        body, _ = _skip_bom(body)
        line = _FIRST_LINE.match(body.lstrip(b"\r\n"))
        # Every codec of CHARSETS keeps ASCII bytes as ASCII, so MSH can be split before decoding.
        head = line.group(0).decode("latin-1") if line else ""
    else:
        head = body.lstrip("\ufeff\r\n").split("\r", 1)[0].split("\n", 1)[0]
    if not head.startswith("MSH") or len(head) < 8:
        return ""
    fields = head.split(head[3])
    if len(fields) <= 17:
        return ""
    return fields[17].split(head[5])[0].split(head[4])[0].strip()


def _codec_of(charset: str) -> str | None:
    """Codec for a declared MSH-18 ('' -> None: guess); ParseError when declared but unsupported."""
    if not charset:
        return None
    codec = codec_for(charset)
    if codec is None:
        raise ParseError("MSH-18 character set is not supported", code="103", location="MSH^1^18")
    return codec


def decode_er7(body: bytes | str) -> tuple[str, str]:
    """Decode an ER7 message with the character set of its MSH-18; return ``(text, codec)``.

    A UTF-8 byte-order mark before MSH is dropped. Without MSH-18, UTF-8 is
    tried and ISO 8859-1 taken when the bytes are not UTF-8. Raises
    `ParseError` (location ``MSH^1^18``) when the bytes break the declared
    character set or the set is not supported.
    """
    if isinstance(body, str):
        return body.lstrip("\ufeff"), _codec_of(declared_charset(body)) or "utf-8"
    body, _ = _skip_bom(body)
    codec = _codec_of(declared_charset(body))
    if codec is None:
        try:
            return body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return body.decode("latin-1"), "latin-1"
    try:
        return body.decode(codec), codec
    except UnicodeDecodeError:
        raise ParseError("bytes invalid in the MSH-18 character set", code="102", location="MSH^1^18") from None


def _decode_replacing(body: bytes | str) -> tuple[str, str]:
    """Best-effort text of a message whose declared character set failed (for the refusal's ACK)."""
    if isinstance(body, str):
        return body, "utf-8"
    codec = codec_for(declared_charset(body)) or "utf-8"
    return body.decode(codec, errors="replace"), codec


def _valid_in(body: bytes, codec: str) -> bool:
    try:
        check_charset(body, codec)
    except ParseError:
        return False
    return True


def check_charset(body: bytes, codec: str) -> None:
    """ParseError when `body` is not valid in `codec` (no copy when the bytes are plain ASCII)."""
    if body.isascii():
        return  # ASCII bytes are valid in every codec of CHARSETS
    if codec == "ascii":
        raise ParseError("bytes invalid in the MSH-18 character set", code="102", location="MSH^1^18")
    try:
        body.decode(codec)
    except UnicodeDecodeError:
        raise ParseError("bytes invalid in the MSH-18 character set", code="102", location="MSH^1^18") from None


def encode_er7(text: str, codec: str) -> bytes:
    """Encode produced ER7 text in the character set its MSH-18 declares.

    MappingError (location ``MSH^1^18``) when a character does not exist in that set.
    """
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        raise MappingError(
            "a value has a character the MSH-18 character set cannot hold", location="MSH^1^18"
        ) from None


def escape(value: str, d: Delimiters) -> str:
    """Escape one primitive value with the message's own delimiters (HL7 v2.5 §2.7.4).

    CR and LF, which would end the segment, become ``\\X0D\\`` / ``\\X0A\\``.
    """
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


_SPACE_COUNT = re.compile(r"[+-]?[0-9]+")


def _formatting(seq: str) -> str | None:
    """Plain-text rendering of a §2.7.6 formatting command (``.br``, ``.sp n``...), None if not one."""
    if seq in ("H", "N"):
        return ""  # highlighting on/off: no plain-text rendering
    if not seq.startswith("."):
        return None
    cmd, arg = seq[1:3], seq[3:].strip()
    if cmd == "br":
        return "\n"
    if cmd == "sp":
        n = int(arg) if _SPACE_COUNT.fullmatch(arg) else 1
        return "\n" * max(n, 1)
    if cmd == "sk":
        n = int(arg) if _SPACE_COUNT.fullmatch(arg) else 1
        return " " * max(n, 1)
    if cmd in ("fi", "nf", "in", "ti", "ce"):
        return ""
    return None


def unescape(value: str, d: Delimiters, *, codec: str = "latin-1", formatting: bool = False) -> str:
    """Resolve HL7 escape sequences in one primitive value (HL7 v2.5 §2.7.4).

    ``\\Xhh..\\`` is hexadecimal data in the message's character set `codec`.
    With `formatting`, the formatted-text commands of §2.7.6 become plain text
    (``\\.br\\`` a line break, ``\\.sp n\\`` n line breaks, highlighting
    dropped); otherwise they are kept as written, for a caller that renders them.
    Unknown sequences (``\\Zxx\\``, ``\\Cxxyy\\`` ISO 2022 switches) are kept as written.
    """
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
                out.append(bytes.fromhex(seq[1:]).decode(codec))
            except (ValueError, LookupError):
                out.append(value[i : end + 1])
        elif formatting and (text := _formatting(seq)) is not None:
            out.append(text)
        else:
            out.append(value[i : end + 1])
        i = end + 1
    return "".join(out)


class Er7Message:
    """Segments of one ER7 message, split lazily into fields on demand.

    Built from bytes, the message is decoded with its MSH-18 character set
    (:func:`decode_er7`); :attr:`codec` is the Python codec used (the one to
    encode a derived message with), :attr:`bom` says whether a UTF-8
    byte-order mark preceded MSH.
    """

    __slots__ = ("_fields_cache", "bom", "charset_error", "codec", "delimiters", "segments", "source")

    def __init__(self, body: bytes | str, *, lenient: bool = False, codec: str | None = None) -> None:
        """Split `body`; ParseError when it is not an ER7 message.

        `lenient` (the listener's ACK path): bytes that break the declared
        character set are decoded with replacement characters and the error
        kept in :attr:`charset_error` (raised by :func:`check_header`), so that
        the refusal can still echo MSH. `codec` overrides MSH-18.
        """
        self.source: bytes | None = None  # the whole message, when only its head was split (read_header)
        self.charset_error: ParseError | None = None
        self.bom = False
        if isinstance(body, bytes):
            body, self.bom = _skip_bom(body)
        else:
            self.bom = body.lstrip("\r\n").startswith("\ufeff")
        if codec is not None and isinstance(body, bytes):
            text, self.codec = body.decode(codec, errors="replace" if lenient else "strict"), codec
        elif lenient:
            try:
                text, self.codec = decode_er7(body)
            except ParseError as exc:
                self.charset_error = exc
                text, self.codec = _decode_replacing(body)
        else:
            text, self.codec = decode_er7(body)
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

    def component(self, value: str, comp: int, sub: int = 1, *, formatting: bool = False) -> str:
        """Component `comp` (1-based), subcomponent `sub`, unescaped, from one repetition.

        `formatting`: a formatted-text value (FT, TX), whose ``\\.br\\`` become line breaks (see unescape).
        """
        d = self.delimiters
        comps = value.split(d.component)
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(d.subcomponent)
        if sub > len(subs):
            return ""
        return unescape(subs[sub - 1], d, codec=self.codec, formatting=formatting)

    def text(self, value: str) -> str:
        """A formatted-text value (FT, TX, ST) as plain text: escapes resolved, ``\\.br\\`` a line break."""
        return unescape(value, self.delimiters, codec=self.codec, formatting=True)

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
    codec: str = "utf-8"
    """Python codec of the message (MSH-18, or the guess when absent): the ACK is encoded with it."""
    bom: bool = False
    """A UTF-8 byte-order mark preceded MSH (skipped; recorded as metadata ``bom``)."""

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
        if self.bom:
            meta["bom"] = "utf-8"  # skipped before MSH; kept in the stored body as sent
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
        body, bom = _skip_bom(body)
        # Large messages (documents in OBX-5) are not decoded or split whole on the hot path: MSH to PID
        # is what the ACK and routing read; check_header checks the rest as bytes, without copies.
        charset_error: ParseError | None = None
        try:
            codec = _codec_of(declared_charset(body))
        except ParseError as exc:
            charset_error, codec = exc, "utf-8"
        if codec is None:
            codec = "utf-8" if _valid_in(body, "utf-8") else "latin-1"
        msg = Er7Message(_head(body), lenient=True, codec=codec)
        msg.source, msg.bom = body, bom
        msg.charset_error = msg.charset_error or charset_error
    else:
        msg = Er7Message(body, lenient=True)
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
        codec=msg.codec,
        bom=msg.bom,
    )
    return msg, header


def check_header(msg: Er7Message, header: Header) -> None:
    """Raise a MessageError (with table 0357 code and location) when MSH lacks what HL7 requires."""
    if msg.charset_error is not None:
        raise msg.charset_error
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
        # Only the head was decoded: the rest must hold to the declared character set too.
        check_charset(msg.source, msg.codec)
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
