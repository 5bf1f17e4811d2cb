"""Messages for the differential test of the HL7 v2 structure validator against hl7apy.

The corpus: every ER7 file of the repository, and mutations of each (segments removed,
duplicated, swapped; fields given a bad value, too many repetitions, extra components or
subcomponents), chosen by a seeded generator so that a run is repeatable.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from hub.errors import MessageError
from mappings.hl7v2.er7 import Er7Message, decode_er7
from mappings.hl7v2.structure import validate_structure

ROOT = Path(__file__).resolve().parents[2]
_SKIP = {".venv", ".git", "node_modules", "var"}


def repository_messages() -> list[tuple[str, bytes]]:
    """Every ``*.hl7`` file of the repository (samples, test cases, examples, route tests)."""
    found = []
    for path in sorted(ROOT.rglob("*.hl7")):
        if _SKIP.isdisjoint(path.relative_to(ROOT).parts):
            found.append((str(path.relative_to(ROOT)), path.read_bytes()))
    return found


def hl7apy_verdict(body: bytes) -> str | None:
    """None when hl7apy (strict) accepts the message, else the kind of its error."""
    try:
        text, _ = decode_er7(body)
    except MessageError as exc:
        return type(exc).__name__
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    except HL7apyException as exc:
        return type(exc).__name__
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        return type(exc).__name__
    return None


def our_verdict(body: bytes) -> MessageError | None:
    """None when the compiled validator accepts the message, else its error."""
    try:
        validate_structure(Er7Message(body))
    except MessageError as exc:
        return exc
    return None


def _segments(body: bytes) -> list[bytes]:
    return [s for s in re.split(rb"\r\n|\r|\n", body) if s.strip()]


_BAD_VALUES = [b"x" * 1000, b"ABC", b"2025023", b"20251301", b"12345", b"1.2.3", b"a&b", b"a^b", b"F~M~X"]
# Values at the edges of the types (dates, times, time zones, numbers) and blank ones: valid for some fields.
_EDGE_VALUES = [
    b"",
    b"   ",
    b"20240229",
    b"20250229",
    b"20250431",
    b"20250301090000+0100",
    b"20250301090000.1234-0500",
    b"20250301+1500",
    b"2025030109.5",
    b"0930",
    b"-0.50",
    b".5",
    b"1E3",
    b"0007",
    b"12-34",
    b"x" * 200,
]


def mutations(
    body: bytes, rng: random.Random, field_changes: int, segment_changes: int = 12
) -> Iterator[tuple[str, bytes]]:
    """`segment_changes` segment mutations (removed, duplicated, swapped) and `field_changes` field mutations."""
    segs = _segments(body)
    join = b"\r".join
    structural: list[tuple[str, bytes]] = []
    for i in range(1, len(segs)):
        name = segs[i][:3].decode("latin-1")
        structural.append((f"remove {name}#{i}", join(segs[:i] + segs[i + 1 :])))
        structural.append((f"duplicate {name}#{i}", join(segs[: i + 1] + segs[i:])))
        if i + 1 < len(segs):
            structural.append((f"swap {name}#{i}", join([*segs[:i], segs[i + 1], segs[i], *segs[i + 2 :]])))
    yield from rng.sample(structural, min(segment_changes, len(structural)))
    fs = segs[0][3:4]
    for _ in range(field_changes):
        i = rng.randrange(1, len(segs)) if len(segs) > 1 else 0
        fields = segs[i].split(fs)
        n = rng.randrange(1, len(fields) + 3)
        fields += [b""] * (n + 1 - len(fields))
        kind = rng.randrange(6)
        if kind == 4:
            fields[n] = rng.choice(_EDGE_VALUES)
        elif kind == 5:  # one component of the field
            comps = fields[n].split(b"^")
            k = rng.randrange(len(comps) + 1)
            comps += [b""] * (k + 1 - len(comps))
            comps[k] = rng.choice(_EDGE_VALUES)
            fields[n] = b"^".join(comps)
        elif kind == 0:
            fields[n] = rng.choice(_BAD_VALUES)
        elif kind == 1:
            fields[n] = b"~".join([fields[n] or b"X"] * rng.randrange(2, 4))
        elif kind == 2:
            fields[n] = (fields[n] or b"X") + b"^" * rng.randrange(1, 30) + b"Y"
        else:
            fields[n] = (fields[n] or b"X") + b"&" * rng.randrange(1, 6) + b"Z"
        changed = [*segs[:i], fs.join(fields), *segs[i + 1 :]]
        # Edge values (kinds 4 and 5) are often valid: they test agreement, not that mutations break messages.
        label = "edge" if kind >= 4 else "kind"
        yield f"field {segs[i][:3].decode('latin-1')}#{i}-{n} {label} {kind}", join(changed)


def hl7apy_error(body: bytes) -> Exception | None:
    """hl7apy's own exception for a message it refuses (strict parse and validation), None when it accepts."""
    text, _ = decode_er7(body)
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    except (HL7apyException, ValueError, KeyError, IndexError, AttributeError) as exc:
        return exc
    return None


def value_at(body: bytes, location: str) -> str | None:
    """The text at an ERR-2 style location (``SEG^seq^field^rep^comp^sub``), None when it is not a value's."""
    parts = location.split("^")
    if len(parts) < 6:
        return None
    message = Er7Message(body)
    d = message.delimiters
    seq, field, rep, comp, sub = (int(p) for p in parts[1:])
    fields = message.fields(seq - 1)
    value = fields[field].split(d.repetition)[rep - 1].split(d.component)
    subs = value[comp - 1].split(d.subcomponent) if comp <= len(value) else [""]
    return subs[sub - 1] if sub <= len(subs) else ""


_FIELD_NAME = re.compile(r"\b([A-Z][A-Z0-9]{2})_(\d+)\b")


def locations_agree(theirs: Exception, ours: MessageError, body: bytes) -> bool:
    """Whether both validators point at the same place, as far as hl7apy's error text says where.

    hl7apy names a field (``PID_8``), a segment (``<Segment MSH>``), a missing child
    (``ORU_R01_ORDER_OBSERVATION.OBR``) or quotes the refused value; each is compared with our
    error's location. An error that names none of these (a subcomponent of some component)
    cannot be compared and counts as agreeing.
    """
    text = str(theirs)
    location = ours.location or ""
    segment, _, rest = location.partition("^")
    ours_field = rest.split("^")[1] if rest.count("^") >= 1 else ""
    missing = re.match(r"Missing required child ([A-Z0-9_]+)\.([A-Z0-9_]+)$", text)
    if missing:
        child = missing.group(2)
        field = _FIELD_NAME.fullmatch(child)
        if field:
            return (segment, ours_field) == (field.group(1), field.group(2))
        return child in str(ours)
    added = re.match(r"Cannot add <(Segment|Group|Field|Component) ([A-Z0-9_]+)", text)
    if added:
        kind, name = added.groups()
        limit_of = re.search(r"reached for <Field ([A-Z0-9]{3})_(\d+)", text)
        if kind == "Field" or limit_of:
            field = _FIELD_NAME.match(name) if kind == "Field" else limit_of
            assert field is not None
            return (segment, ours_field) == (field.group(1), field.group(2))
        if kind == "Segment":
            return segment == name
        if kind == "Group":
            return name in str(ours)
    if isinstance(theirs, ValueError) or type(theirs).__name__ == "MaxLengthReached":
        value = value_at(body, location)
        return value is not None and value[:20] in text
    invalid = re.match(r"Invalid name for Component: ([A-Z0-9_]+)_(\d+)$", text)
    if invalid:
        return f"component {invalid.group(2)} is not defined for {invalid.group(1)}" in str(ours)
    return True
