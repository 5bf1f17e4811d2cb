"""HL7 v2 datatypes as XDS metadata carries them (CX, XCN, XON, CE-like triples, DTM).

XDS metadata reuses HL7 v2.5 datatypes inside slot values and external
identifiers (IHE ITI TF-3 §4.2.3.1.7 "Metadata attribute data types"). The
French DMP fixes how each is filled (DOMAIN.md §5.1):

* patientId: ``<INS>^^^&<INS OID>&ISO^NH`` (CX, empty HD namespace, CX-5 ``NH``);
* authorPerson / legalAuthenticator: ``id^FAMILY^Given^^^^^^&<OID>&ISO^D^^^IDNPS`` (XCN);
* authorInstitution: ``Name^^^^^&<OID>&ISO^IDNST^^^<idNat_Struct>`` (XON);
* dates: DTM ``YYYY[MM[DD[hh[mm[ss]]]]]`` in UTC (ITI TF-3 §4.2.3.1.7, DTM).

Values copied from a document are escaped with the HL7 escape sequences
(``\\S\\`` for ``^``, ``\\T\\`` for ``&``…), so a name holding a delimiter cannot
shift the components a registry reads.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "cx",
    "escape",
    "hl7_ts_to_dtm",
    "is_dtm",
    "parse_cx",
    "xcn",
    "xon",
]

# HL7 v2.5 §2.7.4: escape sequences for the delimiters of the default encoding characters.
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))

# HL7 V3 TS as CDA writes it: digits, optional fraction, optional UTC offset.
_TS = re.compile(r"(?P<digits>[0-9]{4,14})(?:\.[0-9]{1,4})?(?P<tz>[+-][0-9]{4})?")
# XDS DTM (ITI TF-3 §4.2.3.1.7): 4, 6, 8, 10, 12 or 14 digits, UTC, no offset.
_DTM = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,5}")


def escape(value: str) -> str:
    """Escape HL7 v2 delimiters in a value copied into a component."""
    for raw, esc in _ESCAPES:
        value = value.replace(raw, esc)
    return value


def cx(identifier: str, oid: str, type_code: str) -> str:
    """A CX with an ISO assigning authority and no HD namespace: ``id^^^&oid&ISO^type``."""
    return f"{escape(identifier)}^^^&{oid}&ISO^{type_code}"


def parse_cx(value: str) -> tuple[str, str, str, str] | None:
    """(CX-1, CX-4.2 universal id, CX-4.3 id type, CX-5) of a CX, or None when it is not one.

    Only the components XDS uses are returned; a value with fewer than four
    components (no assigning authority) is not a usable CX.
    """
    parts = value.split("^")
    if len(parts) < 4:
        return None
    hd = parts[3].split("&")
    universal = hd[1] if len(hd) > 1 else ""
    universal_type = hd[2] if len(hd) > 2 else ""
    return parts[0], universal, universal_type, parts[4] if len(parts) > 4 else ""


def xcn(
    identifier: str,
    family: str,
    given: str,
    oid: str,
    *,
    name_type: str = "D",
    id_type: str = "IDNPS",
) -> str:
    """An XCN as the DMP expects it: components 1, 2, 3, 9 (authority), 10 (name type) and 13 (id type).

    ``name_type`` is ``D`` for a person and ``U`` for a device; ``id_type``
    is ``IDNPS`` for a national health-professional id (root
    1.2.250.1.71.4.2.1) and ``EI``/``RI`` otherwise (DOMAIN.md §5.1).
    """
    comps = [escape(identifier), escape(family), escape(given), "", "", "", "", "", f"&{oid}&ISO", name_type]
    comps += ["", "", id_type]
    return "^".join(comps)


def xon(name: str, oid: str, identifier: str, *, id_type: str = "IDNST") -> str:
    """An XON: name (1), assigning authority (6), identifier type (7) and organization identifier (10)."""
    return "^".join([escape(name), "", "", "", "", f"&{oid}&ISO", id_type, "", "", escape(identifier)])


def hl7_ts_to_dtm(ts: str) -> str:
    """Turn a CDA TS (``20250102103000+0100``) into an XDS DTM in UTC (``20250102093000``).

    ITI TF-3 §4.2.3.1.7 wants UTC without an offset. A TS precise to the
    hour or better with an offset is shifted to UTC at the same precision;
    a date-only TS keeps its date (an offset cannot move a day that has no
    time); a TS without an offset is taken as already UTC. Fractions of a
    second are dropped (DTM stops at seconds). Raises ``ValueError`` for a
    value that is not a TS.
    """
    m = _TS.fullmatch(ts.strip())
    if m is None or len(m.group("digits")) % 2:
        raise ValueError("not an HL7 TS")
    digits, tz = m.group("digits"), m.group("tz")
    if not tz or len(digits) < 10:
        return digits
    padded = digits.ljust(14, "0")
    when = dt.datetime.strptime(padded, "%Y%m%d%H%M%S")
    sign = 1 if tz[0] == "+" else -1
    offset = dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
    return (when - sign * offset).strftime("%Y%m%d%H%M%S")[: len(digits)]


def is_dtm(value: str) -> bool:
    """Whether ``value`` is an XDS DTM (4 to 14 digits, even length, valid calendar values)."""
    if not _DTM.fullmatch(value):
        return False
    # The calendar check strptime("%Y%m%d%H%M%S"[...]) made, without its regular expressions (~8 us a call,
    # ~7 calls a DMP request): every field has its two digits, so datetime() refuses what strptime refused.
    n = len(value)
    month = int(value[4:6]) if n >= 6 else 1  # year alone, year and month: the first month and day,
    day = int(value[6:8]) if n >= 8 else 1  # as strptime fills them
    hour, minute, second = (int(value[i : i + 2]) if n > i else 0 for i in (8, 10, 12))
    try:
        dt.datetime(int(value[:4]), month, day, hour, minute, second)
    except ValueError:
        return False
    return True
