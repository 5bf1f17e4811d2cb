"""HL7 v2 structure validation from compiled message definitions (no per-message library call).

The `hl7v2_validate` step used to parse each message with hl7apy in strict mode
(~16 ms a message). This module gives the same verdicts from the same HL7 v2
definitions, compiled once into ``mappings/hl7v2/definitions/*.json.gz`` (see
``generate.py`` there, which records the hl7apy version it read), on the hub's
one HL7 v2 text layer (:mod:`mappings.hl7v2.er7`).

What is checked, as hl7apy's strict parse and validation check it:

* the message structure (MSH-9.3, else MSH-9.1 ``_`` MSH-9.2) and the version
  (MSH-12.1) must be defined;
* each segment is placed in the structure's groups the way hl7apy places it
  (the first group, depth first, that defines the segment; a segment already
  present in a group whose cardinality is 1 opens a new repetition of the
  group); segments the structure does not define are ignored, as hl7apy
  ignores them;
* cardinality: segments and groups (maximum while placing, minimum
  afterwards), field repetitions, required fields;
* fields beyond the segment definition, components beyond the data type,
  subcomponents in a primitive component;
* primitive values: maximum length of the text types, NM and SI numbers,
  DT/TM/DTM dates and times (HL7 v2.5 §2.A).

Errors are :class:`hub.errors.ValidationError` with an HL7 error location
(``PID^1^8`` ...) and a table 0357 code; the reason never quotes a value.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from hub.errors import ValidationError
from mappings.hl7v2.er7 import Er7Message

__all__ = ["Definitions", "definitions", "supported_versions", "validate_structure"]

_DEFINITIONS_PACKAGE = "mappings.hl7v2.definitions"
_VARIES = "varies"

# Table 0357 (message error condition codes).
_SEGMENT_SEQUENCE = "100"
_REQUIRED_MISSING = "101"
_DATA_TYPE = "102"
_UNSUPPORTED_TYPE = "200"
_UNSUPPORTED_VERSION = "203"


@dataclasses.dataclass(frozen=True, slots=True)
class Element:
    """One child of a definition: its data type (or name), and cardinality (max -1: unbounded)."""

    name: str
    min: int
    max: int


@dataclasses.dataclass(slots=True)
class Definitions:
    """The compiled definitions of one HL7 v2 version."""

    version: str
    containers: dict[str, tuple[tuple[str, int, int, bool], ...]]
    """Message structures and groups: (child, min, max, is_group) in definition order."""
    segments: dict[str, tuple[Element | None, ...]]
    composites: dict[str, tuple[Element | None, ...]]
    primitives: dict[str, tuple[str, int | None]]
    malformed: frozenset[str]
    messages: frozenset[str]
    _paths: dict[tuple[str, str], tuple[str, ...] | None] = dataclasses.field(default_factory=dict)
    _limits: dict[str, dict[str, tuple[int, int]]] = dataclasses.field(default_factory=dict)

    def limits(self, container: str) -> dict[str, tuple[int, int]]:
        """Cardinality of each child of a container, by name (a name defined twice: the last wins, as in hl7apy)."""
        found = self._limits.get(container)
        if found is None:
            found = {name: (lo, hi) for name, lo, hi, _ in self.containers[container]}
            self._limits[container] = found
        return found

    def path_to(self, container: str, segment: str) -> tuple[str, ...] | None:
        """Groups to open below `container` to reach the first definition of `segment` (depth first), or None."""
        key = (container, segment)
        if key not in self._paths:
            self._paths[key] = self._search(container, segment)
        return self._paths[key]

    def _search(self, container: str, segment: str) -> tuple[str, ...] | None:
        children = self.containers[container]
        if any(not is_group and name == segment for name, _, _, is_group in children):
            return ()
        for name, _, _, is_group in children:
            if is_group:
                below = self._search(name, segment)
                if below is not None:
                    return (name, *below)
        return None


def _elements(raw: list[list[Any] | None]) -> tuple[Element | None, ...]:
    return tuple(Element(e[0], e[1], e[2]) if e is not None else None for e in raw)


def supported_versions() -> list[str]:
    """The HL7 v2 versions whose definitions are compiled in."""
    files = resources.files(_DEFINITIONS_PACKAGE).iterdir()
    names = sorted(f.name for f in files if f.name.startswith("v") and f.name.endswith(".json.gz"))
    return [n[1:-8].replace("_", ".") for n in names]


@functools.cache
def definitions(version: str) -> Definitions | None:
    """The definitions of one version (read once), None when the version is not defined."""
    name = "v" + version.replace(".", "_") + ".json.gz"
    if not re.fullmatch(r"v[0-9_]+\.json\.gz", name):
        return None
    source = resources.files(_DEFINITIONS_PACKAGE).joinpath(name)
    if not source.is_file():
        return None
    data = json.loads(gzip.decompress(source.read_bytes()))
    containers = {k: tuple((c[0], c[1], c[2], c[3]) for c in v) for k, v in data["messages"].items()}
    containers.update({k: tuple((c[0], c[1], c[2], c[3]) for c in v) for k, v in data["groups"].items()})
    return Definitions(
        version=version,
        containers=containers,
        segments={k: _elements(v) for k, v in data["segments"].items()},
        composites={k: _elements(v) for k, v in data["composites"].items()},
        primitives={k: (v[0], v[1]) for k, v in data["primitives"].items()},
        malformed=frozenset(data["malformed_segments"]),
        messages=frozenset(data["messages"]),
    )


class _Node:
    """One instance of a message or group while segments are placed: its children, in order."""

    __slots__ = ("children", "counts", "name", "parent")

    def __init__(self, name: str, parent: _Node | None) -> None:
        self.name = name
        self.parent = parent
        self.children: list[_Node | _Segment] = []
        self.counts: dict[str, int] = {}


@dataclasses.dataclass(slots=True)
class _Segment:
    name: str
    sequence: int  # position of the segment in the message (1-based), for the error location
    repetitions: list[int]  # repetitions present per field position (index 0 = field 1)


def _fail(reason: str, code: str, location: str) -> ValidationError:
    return ValidationError(f"HL7 structure validation failed: {reason}", code=code, location=location)


def _add(node: _Node, child: str, defs: Definitions, location: str, late: list[ValidationError]) -> None:
    """Count `child` in `node`; a child beyond its maximum breaks the structure.

    Beyond the maximum at the message's own level is reported after every segment has been
    read (in `late`), as hl7apy attaches the top-level children last.
    """
    count = node.counts.get(child, 0) + 1
    _, most = defs.limits(node.name).get(child, (0, -1))
    node.counts[child] = count
    if -1 < most < count:
        error = _fail(f"{child} occurs more than {most} time(s) in {node.name}", _SEGMENT_SEQUENCE, location)
        if node.parent is not None:
            raise error
        late.append(error)


# HL7 v2.5 §2.5.3: Z message types are site-defined; hl7apy (the reference) accepts them unchecked.
_LOCAL_STRUCTURE = re.compile(r"^z[a-z0-9]{2}_z[a-z0-9]{2}$", re.IGNORECASE)


def validate_structure(message: Er7Message) -> None:
    """Raise ValidationError when `message` breaks its HL7 v2 message definition (as hl7apy strict does)."""
    d = message.delimiters
    msh = message.fields(0)
    if len(msh) <= 12 or not msh[12].strip():
        raise _fail("MSH-12 names no HL7 version", _UNSUPPORTED_VERSION, "MSH^1^12")
    version = msh[12].strip().split(d.component)[0]
    defs = definitions(version)
    if defs is None:
        raise _fail("the HL7 version of MSH-12 has no definitions", _UNSUPPORTED_VERSION, "MSH^1^12")
    type_parts = msh[9].strip().split(d.component) if len(msh) > 9 else [""]
    if len(type_parts) > 2:
        structure = type_parts[2]
    elif len(type_parts) == 2:
        structure = f"{type_parts[0]}_{type_parts[1]}"
    else:
        structure = ""
    if _LOCAL_STRUCTURE.match(structure):
        return  # a site-defined (Z) structure, e.g. the CI-SIS ZAM_Z01 read receipt: no definition to hold it to
    if structure not in defs.messages:
        raise _fail("the message structure of MSH-9 is not defined in this version", _UNSUPPORTED_TYPE, "MSH^1^9")
    root = _Node(structure, None)
    _place_segments(message, defs, root)
    _check_required(root, defs)


def _place_segments(message: Er7Message, defs: Definitions, root: _Node) -> None:
    """Place each segment in the structure as hl7apy's parser does, checking maximum cardinalities."""
    path = [root.name]
    current = root
    late: list[ValidationError] = []
    for sequence, text in enumerate(message.segments, start=1):
        name = text[:3]
        for _ in range(len(path)):
            below = defs.path_to(path[-1], name)
            if below is None:
                if current is not root:
                    path.pop()
                    assert current.parent is not None
                    current = current.parent
                continue
            location = f"{name}^{sequence}"
            if below:
                path.extend(below)
                for group in below:
                    _add(current, group, defs, location, late)
                    opened = _Node(group, current)
                    current.children.append(opened)
                    current = opened
            elif current is not root and name in current.counts and defs.limits(current.name)[name][1] == 1:
                # A segment seen again in a group where it occurs once starts the group's next repetition.
                parent = current.parent
                assert parent is not None
                _add(parent, current.name, defs, location, late)
                current = _Node(current.name, parent)
                parent.children.append(current)
            segment = _parse_segment(text.strip(), name, sequence, message, defs)
            _add(current, name, defs, location, late)
            current.children.append(segment)
            break
    if late:
        raise late[0]


def _check_required(node: _Node, defs: Definitions) -> None:
    """Minimum cardinalities, walked in definition order (hl7apy reports the first in that order)."""
    by_name: dict[str, list[_Node | _Segment]] = {}
    for child in node.children:
        by_name.setdefault(child.name, []).append(child)
    for name, least, _, _ in defs.containers[node.name]:
        present = by_name.get(name, [])
        if len(present) < least:
            raise _fail(f"required {name} is missing in {node.name}", _REQUIRED_MISSING, _first_segment(name, defs))
        for child in present:
            if isinstance(child, _Node):
                _check_required(child, defs)
            else:
                _check_fields(child, defs)


def _first_segment(name: str, defs: Definitions) -> str:
    """ERR-2 of a missing segment or group: the segment id (for a group, its first required segment)."""
    while name in defs.containers:
        children = defs.containers[name]
        name = next((c[0] for c in children if c[1] > 0), children[0][0])
    return name


def _check_fields(segment: _Segment, defs: Definitions) -> None:
    for position, field in enumerate(defs.segments[segment.name], start=1):
        if field is None or field.min < 1:
            continue
        if position > len(segment.repetitions) or segment.repetitions[position - 1] < field.min:
            raise _fail(
                f"required field {segment.name}-{position} is missing",
                _REQUIRED_MISSING,
                f"{segment.name}^{segment.sequence}^{position}",
            )


class _Bad(Exception):
    """A refusal inside one field repetition: reason and location below the field (``comp^sub``)."""

    def __init__(self, reason: str, code: str, tail: str) -> None:
        super().__init__(reason)
        self.reason, self.code, self.tail = reason, code, tail


def _parse_segment(text: str, name: str, sequence: int, message: Er7Message, defs: Definitions) -> _Segment:
    """Check the fields of one placed segment: known positions, repetitions, components, values."""
    d = message.delimiters
    if name in defs.malformed or name not in defs.segments:
        raise _fail(f"segment {name} has no usable definition", _SEGMENT_SEQUENCE, f"{name}^{sequence}")
    fields_def = defs.segments[name]
    open_ended = bool(fields_def) and fields_def[-1] is not None and fields_def[-1].name == _VARIES
    is_msh = name == "MSH"
    raw_fields = (text[3:] if is_msh else text[4:]).split(d.field)
    repetitions = [0] * len(raw_fields)
    over: tuple[int, int] | None = None  # first field with more repetitions than allowed (checked after values)
    rep_sep = d.repetition
    for index, raw in enumerate(raw_fields):
        if not raw or not raw.strip():
            if is_msh and index == 0:
                repetitions[index] = 1  # MSH-1 is the field separator itself
            continue
        field = fields_def[index] if index < len(fields_def) else None
        if field is None:
            if not open_ended:
                raise _fail(
                    f"{name}-{index + 1} is not defined for this segment",
                    _SEGMENT_SEQUENCE,
                    f"{name}^{sequence}^{index + 1}",
                )
            field = Element(_VARIES, 0, -1)
        if is_msh and index == 1:
            repetitions[index] = 1
            continue
        reps = raw.split(rep_sep) if rep_sep in raw else (raw,)
        for number, rep in enumerate(reps, start=1):
            try:
                _check_field(rep, field.name, defs, d)
            except _Bad as bad:
                location = f"{name}^{sequence}^{index + 1}^{number}^{bad.tail}"
                raise _fail(bad.reason, bad.code, location) from None
        repetitions[index] = len(reps)
        if over is None and -1 < field.max < len(reps):
            over = (index + 1, field.max)
    if over is not None:
        position, most = over
        raise _fail(
            f"{name}-{position} repeats more than {most} time(s)",
            _SEGMENT_SEQUENCE,
            f"{name}^{sequence}^{position}",
        )
    return _Segment(name, sequence, repetitions)


def _check_field(text: str, datatype: str, defs: Definitions, d: Any) -> None:
    """One field repetition (raises _Bad, located below the repetition)."""
    primitives = defs.primitives
    if datatype in primitives:
        if d.component not in text and d.subcomponent not in text:
            _check_value(text, datatype, defs, (1, 1))
            return
        comps = text.split(d.component)
        for number, comp in enumerate(comps, start=1):
            _check_primitive_component(comp, datatype, defs, d, number)
        if len(comps) > 1:
            raise _Bad(f"a {datatype} field has no components", _DATA_TYPE, "2")
        return
    if datatype == _VARIES or datatype not in defs.composites:
        for number, comp in enumerate(text.split(d.component), start=1):
            for sub_number, sub in enumerate(comp.split(d.subcomponent), start=1):
                if sub:
                    _check_value(sub, "ST", defs, (number, sub_number))
        return
    struct = defs.composites[datatype]
    for index, comp in enumerate(text.split(d.component) if d.component in text else (text,)):
        if not comp or not comp.strip():
            continue
        component = struct[index] if index < len(struct) else None
        if component is None:
            raise _Bad(f"component {index + 1} is not defined for {datatype}", _DATA_TYPE, str(index + 1))
        if component.name in primitives:
            _check_primitive_component(comp, component.name, defs, d, index + 1)
        else:
            _check_composite_component(comp, component.name, defs, d, index + 1)


def _check_primitive_component(text: str, datatype: str, defs: Definitions, d: Any, number: int) -> None:
    if d.subcomponent not in text:
        if text:
            _check_value(text, datatype, defs, (number, 1))
        return
    subs = text.split(d.subcomponent)
    for sub_number, sub in enumerate(subs, start=1):
        if sub:
            _check_value(sub, datatype, defs, (number, sub_number))
    raise _Bad(f"a {datatype} component has no subcomponents", _DATA_TYPE, f"{number}^2")


def _check_composite_component(text: str, datatype: str, defs: Definitions, d: Any, number: int) -> None:
    struct = defs.composites.get(datatype, ())
    unknown: int | None = None
    for index, sub in enumerate(text.split(d.subcomponent)):
        element = struct[index] if index < len(struct) else None
        if element is None:
            # hl7apy keeps an unknown subcomponent (even empty) as ST, then refuses it in the component.
            if sub:
                _check_value(sub, "ST", defs, (number, index + 1))
            unknown = index + 1 if unknown is None else unknown
            continue
        if sub.strip():
            _check_value(sub, _primitive_of(element.name, defs), defs, (number, index + 1))
    if unknown is not None:
        raise _Bad(f"subcomponent {unknown} is not defined for {datatype}", _DATA_TYPE, f"{number}^{unknown}")


def _primitive_of(datatype: str, defs: Definitions) -> str:
    """The primitive a subcomponent holds: a composite's first component, down to a primitive."""
    seen = 0
    while datatype not in defs.primitives and seen < 8:
        struct = defs.composites.get(datatype)
        if not struct or struct[0] is None:
            return "ST"
        datatype, seen = struct[0].name, seen + 1
    return datatype if datatype in defs.primitives else "ST"


def _check_value(value: str, datatype: str, defs: Definitions, tail: tuple[int, int]) -> None:
    """One primitive value; `tail` (component, subcomponent) locates it when refused (formatted only then)."""
    kind, most = defs.primitives.get(datatype, _UNBOUNDED_TEXT)
    if kind == "text":
        if most is None or len(value) <= most:
            return
    elif _VALUE_CHECKS[kind](value, most):
        return
    raise _Bad(f"a value is not a valid {datatype}", _DATA_TYPE, f"{tail[0]}^{tail[1]}")


_UNBOUNDED_TEXT: tuple[str, int | None] = ("text", None)


def _text_ok(value: str, most: int | None) -> bool:
    return most is None or len(value) <= most


_TN = re.compile(r"(\d\d\s)?(\(\d+\))?(\d+-?\d+)(X\d+)?(B\d+)?(C.+)?")


def _tn_ok(value: str, most: int | None) -> bool:
    return _TN.match(value) is not None and _text_ok(value, most)


def _nm_ok(value: str, most: int | None) -> bool:
    try:
        number = Decimal(value)
    except InvalidOperation:
        return False
    return most is None or len(str(number)) <= most


def _si_ok(value: str, most: int | None) -> bool:
    try:
        number = int(value)
    except ValueError:
        return False
    return most is None or len(str(number)) <= most


# HL7 v2.5 §2.A.21/§2.A.75/§2.A.22: YYYY[MM[DD]], HH[MM[SS[.S[S[S[S]]]]]][+/-ZZZZ], their concatenation.
_OFFSET = re.compile(r"\d*((\+(1[0-4]|0[0-9])|(-(1[0-2]|0[0-9])))([0-5][0-9]))$")
_DATE_FORMATS = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d"}
_DIGITS = re.compile(r"[0-9]+")


def _strptime_ok(value: str, fmt: str) -> bool:
    if _DIGITS.fullmatch(value.replace(".", "", 1)):
        fast = _fixed_width(value, fmt)
        if fast:
            return True
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


_FIELD_WIDTH = {"%Y": 4, "%m": 2, "%d": 2, "%H": 2, "%M": 2, "%S": 2}


def _fixed_width(value: str, fmt: str) -> bool:
    """Digits read at fixed widths (the common case, without strptime); False means "ask strptime"."""
    parts = {"%Y": 1900, "%m": 1, "%d": 1, "%H": 0, "%M": 0, "%S": 0}
    i = 0
    for token in re.findall(r"%[YmdHMSf]|\.", fmt):
        if token == ".":
            i += 1
            continue
        if token == "%f":
            break  # 1 to 4 digits: the caller's length rule has checked them
        width = _FIELD_WIDTH[token]
        parts[token] = int(value[i : i + width])
        i += width
    try:
        datetime(parts["%Y"], parts["%m"], parts["%d"], parts["%H"], parts["%M"], parts["%S"])
    except ValueError:
        return False
    return True


def _split_offset(value: str) -> tuple[str, str]:
    found = _OFFSET.search(value)
    if found:
        offset = found.group(1)
        return value.replace(offset, ""), offset
    return value, ""


def _time_format(value: str) -> str | None:
    if len(value) in (2, 4, 6):
        return {2: "%H", 4: "%H%M", 6: "%H%M%S"}[len(value)]
    if 8 <= len(value) <= 11 and value[6] == ".":
        return "%H%M%S.%f"
    return None


def _offset_ok(offset: str) -> bool:
    if not offset:
        return True
    if len(offset) != 5 or offset[0] not in "+-":
        return False
    try:
        hours = datetime.strptime(offset[1:], "%H%M").hour
    except ValueError:
        return False
    return not ((offset[0] == "+" and hours > 14) or (offset[0] == "-" and hours > 12))


def _dt_ok(value: str, _most: int | None) -> bool:
    if len(value) in (4, 6, 8) and value.isdigit() and value.isascii() and _digits_ok(value):
        return True
    fmt = _DATE_FORMATS.get(len(value))
    return fmt is not None and _strptime_ok(value, fmt)


def _tm_ok(value: str, _most: int | None) -> bool:
    value, offset = _split_offset(value)
    fmt = _time_format(value)
    return fmt is not None and _strptime_ok(value, fmt) and _offset_ok(offset)


def _digits_ok(value: str) -> bool:
    """YYYY[MM[DD[HH[MM[SS]]]]] written in digits only, a real date and time (the common case, no strptime)."""
    n = len(value)
    try:
        datetime(
            int(value[0:4]),
            int(value[4:6]) if n >= 6 else 1,
            int(value[6:8]) if n >= 8 else 1,
            int(value[8:10]) if n >= 10 else 0,
            int(value[10:12]) if n >= 12 else 0,
            int(value[12:14]) if n >= 14 else 0,
        )
    except ValueError:
        return False
    return True


def _dtm_ok(value: str, _most: int | None) -> bool:
    if len(value) in (4, 6, 8, 10, 12, 14) and value.isdigit() and value.isascii() and _digits_ok(value):
        return True
    value, offset = _split_offset(value)
    date_fmt = _DATE_FORMATS.get(len(value[:8]))
    if date_fmt is None:
        return False
    time_part = value[8:]
    time_fmt = _time_format(time_part) if time_part else ""
    if time_fmt is None:
        return False
    return _strptime_ok(value, date_fmt + time_fmt) and _offset_ok(offset)


_VALUE_CHECKS = {"text": _text_ok, "TN": _tn_ok, "NM": _nm_ok, "SI": _si_ok, "DT": _dt_ok, "TM": _tm_ok, "DTM": _dtm_ok}
