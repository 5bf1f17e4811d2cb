"""Read what a CDA header needs out of an HL7 v2 message (PID, XCN/CNN/XON, timestamps).

Built on :class:`mappings.hl7v2.er7.Er7Message`. Every failure raises
:class:`hub.errors.MappingError` whose reason names the HL7 field and never
quotes it, and whose ``location`` is an HL7 error location (``PID^1^7``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hub.errors import MappingError
from hub.identity import INS_AUTHORITIES, INS_ROOTS, InsKind, InsProblem, check_nir, pid32_allows_ins
from mappings.cda.builder import II, Organization, Patient, Practitioner
from mappings.cda.codes import RPPS_OID, STRUCTURE_OID, gender
from mappings.hl7v2.er7 import Er7Message

__all__ = [
    "Segment",
    "national_practitioner_from_cnn",
    "national_practitioner_from_xcn",
    "organization_from_xon",
    "qualified_ins",
    "read_patient",
    "segments",
    "ts",
]

# HL7 v2.5 §2.A.22 DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; the same literal as a CDA TS.
_DTM = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,5}(?:\.[0-9]{1,4})?(?:[+-][0-9]{4})?")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_NATIONAL_PS = re.compile(r"[0-9][0-9A-Za-z/-]{8,29}")
_NATIONAL_STRUCT = re.compile(r"[1-4][0-9A-Za-z/-]{8,29}")


class Segment:
    """One segment of an Er7Message, with 1-based field and component access."""

    __slots__ = ("er7", "index", "position")

    def __init__(self, er7: Er7Message, index: int, position: int) -> None:
        self.er7 = er7
        self.index = index
        self.position = position
        """1-based rank among segments with the same id (for HL7 error locations)."""

    @property
    def id(self) -> str:
        return self.er7.segments[self.index][:3]

    def raw(self, field: int) -> str:
        return self.er7.raw(self.index, field)

    def reps(self, field: int) -> list[str]:
        """Non-empty repetitions of a field."""
        return [r for r in self.er7.repetitions(self.index, field) if r]

    def get(self, field: int, comp: int = 1, sub: int = 1) -> str:
        """Component of the first repetition, unescaped, stripped."""
        return self.er7.component(self.er7.repetitions(self.index, field)[0], comp, sub).strip()

    def comp(self, value: str, comp: int, sub: int = 1) -> str:
        return self.er7.component(value, comp, sub).strip()

    def loc(self, field: int, comp: int | None = None) -> str:
        base = f"{self.id}^{self.position}^{field}"
        return base if comp is None else f"{base}^{comp}"


def segments(er7: Er7Message, *ids: str) -> list[Segment]:
    """Every segment (in message order) whose id is one of ``ids`` (all segments when none given)."""
    counts: dict[str, int] = {}
    out = []
    for i, sid in enumerate(er7.segment_ids()):
        counts[sid] = counts.get(sid, 0) + 1
        if not ids or sid in ids:
            out.append(Segment(er7, i, counts[sid]))
    return out


def ts(value: str, location: str, what: str) -> str:
    """A v2 timestamp as a CDA TS literal; MappingError when it is not one."""
    text = value.strip()
    if not _DTM.fullmatch(text):
        raise MappingError(f"{what} ({location}) is not an HL7 timestamp", location=location)
    return text


# ------------------------------------------------------------------------------------------ patient


def qualified_ins(er7: Er7Message) -> II | None:
    """The INS of PID-3 (CX-5 INS, CX-4.2 an INS root) when PID-32 says VALI, else None.

    PAM FR §6.6.15 (DOMAIN.md §2.5): with PID-32 other than VALI the receiver integrates the
    message without the INS. With an INS-NIR and an INS-NIA, the NIR wins (§6.6.1, §4.4.1).
    """
    found = segments(er7, "PID")
    if not found:
        return None
    pid = found[0]
    if not pid32_allows_ins(pid.comp(r, 1) for r in pid.reps(32)):
        return None
    ins: II | None = None
    for rep in pid.reps(3):
        value, universal = pid.comp(rep, 1), pid.comp(rep, 4, 2)
        if not value or pid.comp(rep, 5) != "INS" or universal not in INS_ROOTS:
            continue
        if check_nir(value).problem in (InsProblem.LENGTH, InsProblem.CHARACTERS):
            raise MappingError("PID-3 carries a malformed INS", location="PID^1^3^1")
        if ins is None or (
            INS_AUTHORITIES[universal].kind is InsKind.NIR and INS_AUTHORITIES[ins.root].kind is InsKind.NIA
        ):
            ins = II(universal, value)
    return ins


def read_patient(er7: Er7Message, patient_id_roots: Mapping[str, str]) -> Patient:
    """The recordTarget patient from PID (DOMAIN.md §2.2-2.5, §3.2).

    The INS comes from :func:`qualified_ins`. Local identifiers (CX-5 PI) need an OID:
    CX-4.2 when CX-4.3 is ISO, else ``patient_id_roots`` (PAM FR IPP authorities are often a
    FINESS with type M/N, not an OID: DOMAIN.md §2.2).
    """
    found = segments(er7, "PID")
    if not found:
        raise MappingError("the message has no PID segment", location="PID")
    pid = found[0]

    ins = qualified_ins(er7)
    locals_: list[II] = []
    for rep in pid.reps(3):
        value, namespace = pid.comp(rep, 1), pid.comp(rep, 4, 1)
        universal, universal_type = pid.comp(rep, 4, 2), pid.comp(rep, 4, 3)
        if value and pid.comp(rep, 5) == "PI":
            root = universal if universal_type == "ISO" and _OID.fullmatch(universal) else None
            root = root or patient_id_roots.get(namespace)
            if root:
                locals_.append(II(root, value))
    if ins is None and not locals_:
        raise MappingError(
            "PID-3 carries neither a qualified INS (with PID-32 VALI) nor a local identifier (PI) whose "
            "assigning authority has an OID (CX-4.2 ISO or config patient_id_roots)",
            location="PID^1^3",
        )

    used_family = used_given = ""
    names = pid.reps(5)
    legal = next((n for n in names if pid.comp(n, 7) == "L"), names[0] if names else "")
    birth_family = pid.comp(legal, 1)
    birth_given = pid.comp(legal, 2)
    # XPN-3 is the full birth given-name list (PAM FR §6.6.2); a sender that omits it sent one name.
    given_list = pid.comp(legal, 3) or birth_given
    for used in (n for n in names if pid.comp(n, 7) == "D"):
        family = pid.comp(used, 1)
        # '""' removes a used name (DOMAIN.md §2.3).
        used_family = "" if family == '""' else family
        used_given = pid.comp(used, 2)
    if not birth_family or birth_family == '""':
        raise MappingError("PID-5 has no birth name (XPN-7 L)", location="PID^1^5")

    birth = pid.get(7)
    if not birth:
        raise MappingError("PID-7 birth date is required", location="PID^1^7")
    birth_date = ts(birth, "PID^1^7", "PID-7 birth date")[:8]

    county = city = ""
    for address in pid.reps(11):
        if pid.comp(address, 7) == "BDL":
            county, city = pid.comp(address, 9), pid.comp(address, 3)
            break
    if ins is not None:
        # DOMAIN.md §9.5: the birthplace is mandatory whenever the INS is carried; so are the
        # birth traits of the RNIV (birth name, first birth given name).
        if not county:
            raise MappingError("PID-11 birthplace (BDL with XAD-9) is required with an INS", location="PID^1^11")
        if not birth_given:
            raise MappingError("PID-5 first birth given name is required with an INS", location="PID^1^5^2")

    ids = ((ins,) if ins else ()) + tuple(locals_)
    return Patient(
        ids=ids,
        birth_family=birth_family,
        birth_given_first=birth_given,
        birth_given_list=given_list,
        used_family=used_family,
        used_given=used_given,
        gender=gender(pid.get(8)),
        birth_date=birth_date,
        birthplace_county=county,
        birthplace_city=city,
        has_ins=ins is not None,
    )


# ------------------------------------------------------------------------------------- professionals


def _national_ps(value: str, id_type: str, authority: str) -> str | None:
    """idNat_PS from an identifier and its type (DOMAIN.md §2.7): 8+RPPS, 0+ADELI, or as sent."""
    value = value.strip()
    if id_type == "RPPS" and re.fullmatch(r"[0-9]{11}", value):
        return "8" + value
    if id_type == "ADELI" and re.fullmatch(r"[0-9]{9}", value):
        return "0" + value
    if authority == RPPS_OID or id_type in ("IDNPS", "RPPS"):
        return value if _NATIONAL_PS.fullmatch(value) else None
    return None


def national_practitioner_from_xcn(seg: Segment, xcn: str) -> Practitioner | None:
    """A professional from an XCN whose identifier is national (RPPS/ADELI/IDNPS), else None.

    XCN-1 id, XCN-2 family, XCN-3 given, XCN-9.2 assigning authority OID, XCN-13 type
    (IHE France Appendix N: ``801234567897^Réault^Pierre^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS``).
    """
    national = _national_ps(seg.comp(xcn, 1), seg.comp(xcn, 13), seg.comp(xcn, 9, 2))
    family = seg.comp(xcn, 2)
    if national is None or not family:
        return None
    return Practitioner(national, family, seg.comp(xcn, 3))


def national_practitioner_from_cnn(seg: Segment, cnn: str) -> Practitioner | None:
    """A professional from OBR-32 (NDL, whose first component is a CNN in subcomponents)."""
    national = _national_ps(seg.comp(cnn, 1, 1), "", seg.comp(cnn, 1, 10))
    family = seg.comp(cnn, 1, 2)
    if national is None or not family:
        return None
    return Practitioner(national, family, seg.comp(cnn, 1, 3))


def organization_from_xon(seg: Segment, xon: str) -> Organization | None:
    """A structure from an XON carrying a national structure id, else None.

    XON-1 name, XON-6.2 authority OID, XON-7 type (FINEG/FINEJ/IDNST), XON-10 identifier
    (DOMAIN.md §2.7): a 9-digit FINESS becomes idNat_Struct ``1`` + FINESS.
    """
    name = seg.comp(xon, 1)
    value = seg.comp(xon, 10) or seg.comp(xon, 3)
    id_type = seg.comp(xon, 7)
    authority = seg.comp(xon, 6, 2)
    if not name or not value:
        return None
    if id_type in ("FINEG", "FINEJ", "FINESS") and re.fullmatch(r"[0-9]{9}", value):
        value = "1" + value
    elif not (authority == STRUCTURE_OID or id_type in ("IDNST", "FINEG", "FINEJ", "FINESS")):
        return None
    return Organization(value, name) if _NATIONAL_STRUCT.fullmatch(value) else None
