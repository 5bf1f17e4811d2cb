"""HL7 v2 field conditions of the admin API's content search: ``PID-5.1=DUPONT``.

Registered as the ``hl7`` field search (:mod:`hub.registry`): the content search
(``hub/admin/content_search.py``) asks each registered field search whether the
searched text is one of its conditions, and keeps the messages whose stored text
carries the value there. The position notation is HL7 v2.5 §2.5.3's.
"""

from __future__ import annotations

import dataclasses
import re

from hub.registry import register

__all__ = ["FieldCondition", "parse_field"]

# SEG-field[.component[.subcomponent]]=value (HL7 v2.5 §2.5.3 position notation)
_FIELD = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?=(.+)$", re.DOTALL)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldCondition:
    """An HL7 v2 field (or component) that must equal `value`, case-insensitively."""

    segment: str
    field: int
    component: int | None
    subcomponent: int | None
    value: str

    @property
    def position(self) -> str:
        return ".".join(str(p) for p in (f"{self.segment}-{self.field}", self.component, self.subcomponent) if p)

    def matches(self, text: str) -> bool:
        """Whether a segment of this ER7 text carries the value there (every repetition is tried)."""
        if not text.startswith("MSH") or len(text) < 8:
            return False
        fs, cs, rs, _esc, ss = text[3], text[4], text[5], text[6], text[7]
        want = self.value.casefold()
        for segment in re.split(r"\r\n|\r|\n", text):
            fields = segment.split(fs)
            if fields[0] != self.segment:
                continue
            # MSH-1 is the field separator itself, so MSH field n is at index n - 1 (HL7 v2.5 §2.14.9).
            index = self.field - 1 if self.segment == "MSH" else self.field
            if index >= len(fields) or index < 1:
                continue
            for repetition in fields[index].split(rs):
                value = repetition
                if self.component:
                    parts = value.split(cs)
                    value = parts[self.component - 1] if self.component <= len(parts) else ""
                if self.subcomponent:
                    parts = value.split(ss)
                    value = parts[self.subcomponent - 1] if self.subcomponent <= len(parts) else ""
                if value.casefold() == want:
                    return True
        return False


@register("field_search", "hl7")
def parse_field(text: str) -> FieldCondition | None:
    """`PID-5.1=DUPONT` as a field condition; None for plain text."""
    m = _FIELD.match(text)
    if m is None:
        return None
    seg, field, comp, sub, value = m.groups()
    return FieldCondition(seg, int(field), int(comp) if comp else None, int(sub) if sub else None, value)
