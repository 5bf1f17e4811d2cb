"""HL7 v2 paths (``PID-3[2].1``, ``OBX[*]-5``, ``MSH-5``) and an editable view of one ER7 message.

A path names a segment, optionally one of its occurrences, then a field, a
field repetition, a component and a subcomponent (HL7 v2.5 §2.5 numbering:
every index is 1-based, MSH-1 is the field separator)::

    SEG[occ]-field[rep].component.subcomponent      occ, rep: a number or *

Without ``[occ]`` a path means the first occurrence of the segment, and
``[*]`` all of them; but in a rule that walks ``SEG[*]``, both mean the
occurrence being walked. Without ``[rep]`` a path to a component means the first repetition,
and a path to a whole field means the field with all its repetitions.

`Er7Edit` reads the message through `mappings.hl7v2.er7.Er7Message` (the
encoding characters come from MSH-1/MSH-2, never assumed) and splits only the
segments a rule touches; untouched segments are written back as received.
Values handed out are unescaped; values written are escaped with the
message's own delimiters (HL7 v2.5 §2.7.4).
"""

from __future__ import annotations

import dataclasses
import re

from mappings.hl7v2.er7 import Delimiters, Er7Message, escape, unescape

__all__ = ["ALL", "Er7Edit", "Hl7Path"]

ALL = 0
"""The index written ``*``: every occurrence / every repetition."""

_PATH = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<occ>[1-9][0-9]*|\*)\])?"
    r"(?:-(?P<field>[1-9][0-9]*)(?:\[(?P<rep>[1-9][0-9]*|\*)\])?"
    r"(?:\.(?P<comp>[1-9][0-9]*)(?:\.(?P<sub>[1-9][0-9]*))?)?)?$"
)


def _index(text: str | None) -> int | None:
    if text is None:
        return None
    return ALL if text == "*" else int(text)


@dataclasses.dataclass(frozen=True, slots=True)
class Hl7Path:
    """A parsed HL7 path; indexes are 1-based, ``ALL`` (0) for ``*``, None when not written."""

    text: str
    segment: str
    occurrence: int | None = None
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None
    is_segment: bool = False
    """The path names a segment only (`NTE`, `OBX[2]`)."""
    is_delimiters: bool = False
    """MSH-1 or MSH-2: readable, never written (the delimiters of the whole message)."""
    whole_field: bool = False
    """No repetition and no component given: the field with all its repetitions."""

    @classmethod
    def parse(cls, text: str) -> Hl7Path:
        """Parse ``SEG[occ]-field[rep].comp.sub``; ValueError (naming the path) when it is not one."""
        m = _PATH.match(text.strip())
        if m is None:
            raise ValueError(f"{text!r} is not an HL7 path (SEG[occ]-field[rep].component.subcomponent)")
        field, rep, comp = _index(m["field"]), _index(m["rep"]), _index(m["comp"])
        delimiters = m["seg"] == "MSH" and field in (1, 2)
        if delimiters and (rep or comp):
            raise ValueError(f"{text!r}: MSH-1 and MSH-2 are the delimiters, they have no parts")
        return cls(
            text.strip(),
            m["seg"],
            _index(m["occ"]),
            field,
            rep,
            comp,
            _index(m["sub"]),
            is_segment=field is None,
            is_delimiters=delimiters,
            whole_field=rep is None and comp is None,
        )

    def __str__(self) -> str:
        return self.text


class Er7Edit:
    """One ER7 message, editable by path. Segments are split into fields only when touched."""

    __slots__ = ("_specials", "codec", "d", "ids", "segments")

    def __init__(self, message: Er7Message) -> None:
        self.d: Delimiters = message.delimiters
        self.codec: str = message.codec
        """The message's character set (MSH-18), for ``\\Xhh\\`` escapes and for encoding it back."""
        # A segment is kept as its text until a rule reads or writes its fields, then as its field list.
        self.segments: list[str | list[str]] = list(message.segments)
        fs = self.d.field
        self.ids = [s.split(fs, 1)[0] for s in message.segments]
        self._specials = frozenset(fs + self.d.encoding_characters + "\r\n")

    # -- segments ---------------------------------------------------------------------------------
    def segment_id(self, index: int) -> str:
        return self.ids[index]

    def occurrences(self, segment: str) -> list[int]:
        """Indexes of every segment with this id, in message order."""
        return [i for i, sid in enumerate(self.ids) if sid == segment]

    def select(self, path: Hl7Path, current: tuple[str, int] | None = None) -> list[int]:
        """Segment indexes a path designates; `current` is the occurrence a rule is walking."""
        if path.occurrence in (None, ALL) and current is not None and current[0] == path.segment:
            return [current[1]]
        found = self.occurrences(path.segment)
        if path.occurrence == ALL:
            return found
        n = (path.occurrence or 1) - 1
        return found[n : n + 1]

    def insert_segment(self, index: int, segment: str) -> None:
        self.segments.insert(index, [segment])
        self.ids.insert(index, segment)

    def remove_segment(self, index: int) -> None:
        del self.segments[index]
        del self.ids[index]

    def fields(self, index: int) -> list[str]:
        """The field list of a segment (split now if needed); element 0 is the segment id."""
        seg = self.segments[index]
        if isinstance(seg, list):
            return seg
        parts = seg.split(self.d.field)
        if parts[0] == "MSH":
            parts = ["MSH", self.d.field, *parts[1:]]
        self.segments[index] = parts
        return parts

    # -- values -----------------------------------------------------------------------------------
    def raw(self, index: int, path: Hl7Path) -> list[str]:
        """The values a path selects in one segment, as written (escaped); [] when the repetition is absent."""
        f = self.fields(index)
        assert path.field is not None
        value = f[path.field] if path.field < len(f) else ""
        if path.whole_field or path.is_delimiters:
            return [value]
        reps = value.split(self.d.repetition)
        if path.repetition == ALL:
            chosen = reps
        else:
            n = (path.repetition or 1) - 1
            chosen = reps[n : n + 1]
        if path.component is None:
            return chosen
        out = []
        for rep in chosen:
            comps = rep.split(self.d.component)
            comp = comps[path.component - 1] if path.component <= len(comps) else ""
            if path.subcomponent is not None:
                subs = comp.split(self.d.subcomponent)
                comp = subs[path.subcomponent - 1] if path.subcomponent <= len(subs) else ""
            out.append(comp)
        return out

    def values(self, path: Hl7Path, current: tuple[str, int] | None = None) -> list[str]:
        """Unescaped values of a path over every segment it designates."""
        if path.is_segment:
            return [self.ids[i] for i in self.select(path, current)]
        esc = self.d.escape
        out = []
        for i in self.select(path, current):
            for v in self.raw(i, path):
                out.append(unescape(v, self.d, codec=self.codec) if esc in v else v)
        return out

    def escape(self, value: str) -> str:
        """`value` escaped with this message's delimiters (HL7 v2.5 §2.7.4)."""
        return value if self._specials.isdisjoint(value) else escape(value, self.d)

    def put(self, index: int, path: Hl7Path, raw_value: str) -> None:
        """Write an already escaped value at a path of one segment, creating empty fields/components as needed."""
        assert path.field is not None and not path.is_delimiters
        f = self.fields(index)
        if len(f) <= path.field:
            f.extend([""] * (path.field + 1 - len(f)))
        if path.whole_field:
            f[path.field] = raw_value
            return
        d = self.d
        reps = f[path.field].split(d.repetition)
        targets = range(len(reps)) if path.repetition == ALL else [(path.repetition or 1) - 1]
        for t in targets:
            if len(reps) <= t:
                reps.extend([""] * (t + 1 - len(reps)))
            if path.component is None:
                reps[t] = raw_value
                continue
            comps = reps[t].split(d.component)
            if len(comps) < path.component:
                comps.extend([""] * (path.component - len(comps)))
            if path.subcomponent is None:
                comps[path.component - 1] = raw_value
            else:
                subs = comps[path.component - 1].split(d.subcomponent)
                if len(subs) < path.subcomponent:
                    subs.extend([""] * (path.subcomponent - len(subs)))
                subs[path.subcomponent - 1] = raw_value
                comps[path.component - 1] = d.subcomponent.join(subs)
            reps[t] = d.component.join(comps)
        f[path.field] = d.repetition.join(reps)

    def delete(self, index: int, path: Hl7Path) -> None:
        """Clear a field, component or subcomponent; a repetition named by index is removed from the list."""
        f = self.fields(index)
        assert path.field is not None and not path.is_delimiters
        if path.field >= len(f):
            return
        if path.component is None and path.repetition not in (None, ALL):
            reps = f[path.field].split(self.d.repetition)
            assert path.repetition is not None
            if path.repetition <= len(reps):
                del reps[path.repetition - 1]
            f[path.field] = self.d.repetition.join(reps)
        elif path.component is None:
            f[path.field] = ""
        else:
            self.put(index, path, "")

    def set_repetitions(self, index: int, field: int, reps: list[str]) -> None:
        f = self.fields(index)
        if len(f) <= field:
            f.extend([""] * (field + 1 - len(f)))
        f[field] = self.d.repetition.join(reps)

    def segment_text(self, index: int) -> str:
        seg = self.segments[index]
        if isinstance(seg, str):
            return seg
        return self.d.field.join(["MSH", *seg[2:]] if seg[0] == "MSH" else seg)

    def text(self) -> str:
        """The message as ER7 text, segments ended by CR (HL7 v2.5 §2.7)."""
        return "\r".join([self.segment_text(i) for i in range(len(self.segments))]) + "\r"
