"""The ``Retry-After`` header of an HTTP answer, for the outbound adapters that classify one."""

from __future__ import annotations

import email.utils

from hub.message import utcnow

__all__ = ["parse_retry_after"]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an HTTP date); None when
    absent or unreadable (a date without a zone included: it names no instant)."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (when - utcnow()).total_seconds()) if when.tzinfo else None
