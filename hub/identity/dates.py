"""Birth dates, complete or not, recorded as the RNIV says.

RNIV 01 §3.1.4.1 and Annexe III [EXI PP 19] (DOMAIN.md §1.3): an incomplete
birth date is *recorded as a full date*:

- day unknown -> the 1st of the month (01/MM/AAAA);
- month unknown -> January (JJ/01/AAAA);
- day and month unknown -> 31 December (31/12/AAAA);
- year unknown -> an estimated year or decade, so the same rules apply;
- date unknown -> 31/12 of an estimated year, e.g. 31/12/1970.

RNIV footnote: the 31/12 rule does not fit a hospitalised infant under one
year (admission before the recorded birth date); the RNIV then recommends
estimating the month, 01/MM/AAAA, which is ``complete_birth_date(y, m)``.
That choice is the caller's.

Decision: `parse_birth_date` also reads ``00`` as "unknown" for a day or a
month (``19790300``, ``19790000``), as some senders write it; HL7 v2 itself
would send fewer digits (``197903``, ``1979``).
"""

from __future__ import annotations

import datetime as dt
import re

from hub.errors import ValidationError

__all__ = ["complete_birth_date", "parse_birth_date"]

# HL7 v2 TS (YYYY[MM[DD[HHMM...]]]) or ISO 8601 / FHIR date (YYYY[-MM[-DD]]).
_COMPACT = re.compile(r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:[0-9]{2,}(?:\.[0-9]+)?)?)?)?(?:[+-][0-9]{4})?")
_ISO = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


def complete_birth_date(year: int, month: int | None = None, day: int | None = None) -> dt.date:
    """Return the RNIV recorded date for a birth date that may lack its day, month or both.

    Raises `ValidationError` (no value in the text) if the parts do not make a date.
    """
    if month is None and day is None:
        month, day = 12, 31
    elif month is None:
        month = 1
    elif day is None:
        day = 1
    assert month is not None and day is not None
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise ValidationError("birth date: not a calendar date", code="102") from None


def parse_birth_date(text: str) -> tuple[dt.date, bool]:
    """Read a birth date and complete it per the RNIV; return ``(date, completed)``.

    Accepts HL7 v2 TS (``YYYY``, ``YYYYMM``, ``YYYYMMDD``, with any time part
    ignored) and ISO/FHIR dates (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``).
    ``completed`` is True when a day or month was missing and the RNIV rule
    filled it in. Raises `ValidationError` (no value in the text) otherwise.
    """
    match = _COMPACT.fullmatch(text) or _ISO.fullmatch(text)
    if match is None:
        raise ValidationError("birth date: unreadable", code="102")
    year = int(match.group(1))
    month = int(match.group(2)) if match.group(2) else None
    day = int(match.group(3)) if match.group(3) else None
    month = month or None  # "00" means unknown (see the module docstring)
    day = day or None
    return complete_birth_date(year, month, day), month is None or day is None
