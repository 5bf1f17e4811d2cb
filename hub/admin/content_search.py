"""Content search helpers: the time window, an HL7 v2 field condition (``PID-5.1=DUPONT``) and the audit detail.

The searched text is never written anywhere: it is typically a patient's name or identifier, so the audit
entry records that a content search happened, its kind, field, length and window, not the text (a hash of a
name would be reversed by trying the names of a directory).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta

from hub.message import utcnow

#: Default window when `since` is not given, and the longest one accepted: a search stays an index lookup
#: over a bounded slice of the store.
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=31)

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


def parse_field(text: str) -> FieldCondition | None:
    """`PID-5.1=DUPONT` as a field condition; None for plain text."""
    m = _FIELD.match(text)
    if m is None:
        return None
    seg, field, comp, sub, value = m.groups()
    return FieldCondition(seg, int(field), int(comp) if comp else None, int(sub) if sub else None, value)


def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """[since, until): until defaults to now, since to DEFAULT_WINDOW before it; ValueError past MAX_WINDOW."""
    end = until or utcnow()
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise ValueError("since must be before until")
    if end - start > MAX_WINDOW:
        raise ValueError(f"the window is at most {MAX_WINDOW.days} days")
    return start, end


def audit_detail(
    text: str, field: FieldCondition | None, since: datetime, until: datetime, limit: int
) -> dict[str, str]:
    """What the audit trail keeps of a content search: never the text itself."""
    detail = {
        "kind": "field" if field else "text",
        "text": f"{len(field.value if field else text)} chars",
        "since": since.isoformat(),
        "until": until.isoformat(),
        "limit": str(limit),
    }
    if field:
        detail["field"] = field.position
    return detail
