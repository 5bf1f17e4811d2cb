"""Content search helpers: the time window, a field condition (HL7 v2: ``PID-5.1=DUPONT``) and the audit detail.

Field conditions belong to their format: each is a registered ``field_search`` (HL7 v2's is
``mappings/hl7v2/field_search.py``); the hub only asks them.

The searched text is never written anywhere: it is typically a patient's name or identifier, so the audit
entry records that a content search happened, its kind, field, length and window, not the text (a hash of a
name would be reversed by trying the names of a directory).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from hub import registry
from hub.message import utcnow

#: Default window when `since` is not given, and the longest one accepted: a search stays an index lookup
#: over a bounded slice of the store.
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=31)


class FieldCondition(Protocol):
    """A condition on one field of a format (HL7 v2: ``PID-5.1=DUPONT``), from a registered field search."""

    @property
    def value(self) -> str:
        """The value searched for (what the store's content index looks up first)."""

    @property
    def position(self) -> str:
        """Where, in the format's own notation (``PID-5.1``): kept in the audit trail, the value never is."""

    def matches(self, text: str) -> bool:
        """Whether this stored text carries the value there."""


def parse_field(text: str) -> FieldCondition | None:
    """The searched text as a field condition of a registered format (``field_search``); None for plain text."""
    for name in registry.names("field_search"):
        component = registry.get("field_search", name)
        condition = component.factory(text) if component is not None else None
        if condition is not None:
            return condition  # type: ignore[no-any-return]
    return None


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
