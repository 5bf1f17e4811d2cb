"""Points in time as operators type them on a command line: ISO 8601, `today`, `yesterday`, `2h`, `30m ago`.

Used by ``hub messages --since/--until`` and ``hub export``; a value it cannot read
raises ValueError with the forms it accepts, so the CLI prints a usage error
rather than a traceback.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

__all__ = ["FORMS", "parse_when"]

FORMS = (
    "ISO 8601 (2025-01-31, 2025-01-31T08:00, 2025-01-31T08:00+01:00), now, today, yesterday, "
    "or an age: 90s, 30m, 2h, 3d, 1w (optionally followed by 'ago')"
)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*([smhdw])(?:\s+ago)?$")


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """An aware datetime for `text`; naive ISO values are read in the local time zone."""
    value = text.strip().lower()
    current = (now or datetime.now()).astimezone()
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if value == "now":
        return current
    if value == "today":
        return midnight
    if value == "yesterday":
        return midnight - timedelta(days=1)
    age = _AGE.match(value)
    if age:
        return current - timedelta(**{_UNITS[age.group(2)]: float(age.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time; use {FORMS}") from None
    return parsed if parsed.tzinfo else parsed.astimezone()
