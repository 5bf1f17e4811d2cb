"""Read an IHE PAM France ADT (ITI-30 / ITI-31) into an `IdentityFeed`: what the identity registry learns.

One pure function, `read_identity_feed`, over the ER7 bytes. It takes from the
message (DOMAIN.md §2, §8.1):

- the local identifiers: PID-3 repetitions with CX-5 ``PI`` and their CX-4
  assigning authority (HD: namespace id & universal id & universal id type);
- the INS: a PID-3 repetition with CX-5 ``INS`` whose CX-4 universal id is an
  INS root. PAM FR §6.6.15 (DOMAIN.md §2.5): a receiver that gets an INS with
  PID-32 other than ``VALI`` integrates the message *without* it, so the feed
  then carries no INS, only `InsIgnoredReason` saying why it was dropped (never
  the value: data that must not be used is not kept);
- PID-32 (status and RNIV attributes, `hub.identity.read_pid32`) and the RNIV
  status it implies (`IdentityStatus.from_pam`: ``VALI`` + INS = qualifiée);
- the strict traits: PID-5 ``L`` repetition (XPN-1 birth name, XPN-2 first
  birth given name, XPN-3 given-name list), PID-7 (incomplete dates completed
  per RNIV), PID-8, PID-11 ``BDL`` repetition XAD-9 (INSEE code); the ``D``
  repetition gives the used name;
- MRG-1 (A40: the absorbed patient; A47: the old identifier or old INS) and
  ZFD-4/5/6 (corrected birth date, acquisition mode, INSi query date).

Structural problems raise `hub.errors.ValidationError` with an HL7 error
location (``PID^1^3``) and a table 0357 code; texts never quote a value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

from hub.errors import ValidationError
from hub.identity import (
    INS_CX5,
    IdentityStatus,
    InsAuthority,
    InsKind,
    InsPolicy,
    InsProblem,
    Pid32Reading,
    Sex,
    StrictTraits,
    Trait,
    authority_for_oid,
    check_nir,
    name_key,
    parse_birth_date,
    read_pid32,
    rniv_violations,
)
from mappings.hl7v2.er7 import Er7Message

__all__ = [
    "ITI30_EVENTS",
    "ITI31_EVENTS",
    "AssigningAuthority",
    "IdentityFeed",
    "Ins",
    "InsAction",
    "InsIgnoredReason",
    "PatientIdentifier",
    "read_identity_feed",
]

ITI30_EVENTS = frozenset({"A28", "A31", "A47", "A40"})
"""Patient identity feed events of PAM FR (DOMAIN.md §8.1); A08 is excluded in France."""

ITI31_EVENTS = frozenset(
    {
        "A01", "A02", "A03", "A04", "A05", "A06", "A07", "A11", "A12", "A13", "A21", "A22", "A38",
        "A44", "A52", "A53", "A54", "A55", "Z99",
        # Optional options: pending events (A14 A15 A16 A25 A26 A27), temporary transfer (A09 A10 A32 A33).
        "A09", "A10", "A14", "A15", "A16", "A25", "A26", "A27", "A32", "A33",
    }
)  # fmt: skip
"""ITI-31 encounter events of PAM FR; each carries PID (DOMAIN.md §8.1)."""

_PAM_SEX = {"F": Sex.FEMALE, "M": Sex.MALE, "U": Sex.UNKNOWN}  # PAM FR §6.6.5: table 0001 limited to F/M/U
_HL7_NULL = '""'  # HL7 v2.5 §2.5.3: "" asks the receiver to delete the value


@dataclasses.dataclass(frozen=True, slots=True)
class AssigningAuthority:
    """CX-4 (HD): namespace id, universal id (OID, FINESS...) and universal id type (ISO, M, N, L)."""

    namespace_id: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    @property
    def key(self) -> str:
        """The authority part of a patient key: the namespace id, else the universal id.

        The same choice as `mappings.hl7v2.er7.read_header` makes for the
        ``patient_key`` metadata, so that a feed and the messages it releases
        name a patient the same way.
        """
        return self.namespace_id or self.universal_id


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class PatientIdentifier:
    """One CX: identifier value, assigning authority and CX-5 type code (``PI`` for an IPP)."""

    value: str
    authority: AssigningAuthority
    type_code: str = "PI"

    def __repr__(self) -> str:
        return f"PatientIdentifier(<masked>, authority={self.authority.key!r}, type_code={self.type_code!r})"

    @property
    def patient_key(self) -> str:
        """``value@authority``, the hub's patient key (`hub.message` metadata ``patient_key``)."""
        return f"{self.value}@{self.authority.key}" if self.authority.key else self.value


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Ins:
    """An INS: the 15-character matricule and the OID of its authority (one of the four INS roots)."""

    matricule: str
    oid: str

    def __post_init__(self) -> None:
        if authority_for_oid(self.oid) is None:
            raise ValueError("not an INS root OID")

    def __repr__(self) -> str:
        return f"Ins(<masked>, oid={self.oid!r})"

    @property
    def authority(self) -> InsAuthority:
        """The INS authority of `oid` (kind NIR/NIA, usage production/test/demo)."""
        authority = authority_for_oid(self.oid)
        assert authority is not None  # checked in __post_init__
        return authority

    @property
    def kind(self) -> InsKind:
        """NIR or NIA, from the OID (never from the digits)."""
        return self.authority.kind


class InsIgnoredReason(enum.StrEnum):
    """Why an INS found in PID-3 is not carried by the feed; the value is a stable code for logs."""

    STATUS_NOT_VALI = "pid32_not_vali"
    """PID-32 is not VALI: integrate without the INS (PAM FR §6.6.15, DOMAIN.md §2.5)."""
    STATUS_CONTRADICTORY = "pid32_contradictory"
    """PID-32 says both PROV and VALI: no single status to trust."""
    RNIV_ATTRIBUTE = "rniv_attribute"
    """VALI with DOUT or FICT, which RNIV allows only with provisoire (DOMAIN.md §1.4)."""
    CORRECTED_BIRTH_DATE = "corrected_birth_date"
    """ZFD-4 = Y: a corrected birth date bars récupérée/qualifiée and the INS (PAM FR §6.6.4)."""
    UNKNOWN_ROOT = "unknown_root"
    """CX-5 is INS but CX-4 holds no INS root OID (INS-C and other OIDs included)."""
    MALFORMED = "malformed"
    """The matricule is not 15 characters of digits (2A/2B allowed)."""
    AMBIGUOUS = "ambiguous"
    """Several different INS of the same kind: PAM FR sends only the latest one (§6.6.1)."""
    POLICY = "policy"
    """The environment's `InsPolicy` refuses it (test/demo root in production, strict key)."""


class InsAction(enum.StrEnum):
    """What the message asks the registry to do with the patient's INS."""

    NONE = "none"
    """No usable INS information (none sent, or the one sent was ignored)."""
    SET = "set"
    """A trusted INS: record it (A28, A31, encounter events)."""
    CHANGE = "change"
    """A47 with the old INS in MRG-1 and a trusted new one in PID-3 (PAM FR §4.4.2)."""
    REMOVE = "remove"
    """Delete the INS: ``""`` in PID-3 (PAM FR §4.4.3, and the §4.4.4 downgrade, which carries
    PID-32 = PROV), or an A47 whose old INS in MRG-1 is not replaced by a trusted one."""


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class IdentityFeed:
    """What one PAM FR ADT tells the identity registry. The repr shows no patient data.

    Trait fields are None when the message does not carry them; `traits`
    assembles them into `StrictTraits` when the five required ones are there.
    """

    event: str
    """Trigger event (MSH-9.2), e.g. ``A31``."""
    control_id: str
    """MSH-10."""
    structure: str
    """MSH-9.3, e.g. ``ADT_A05`` (may be empty)."""
    sending_application: str
    sending_facility: str
    local_ids: tuple[PatientIdentifier, ...]
    """PID-3 repetitions with CX-5 = PI, in message order (at least one)."""
    ins: Ins | None
    """The trusted INS, or None (absent, deleted, or ignored: see `ins_ignored`)."""
    ins_ignored: InsIgnoredReason | None
    """Why an INS present in PID-3 was dropped, or None."""
    ins_warnings: tuple[InsProblem, ...]
    """Tolerated problems of the kept INS (a wrong key outside strict environments, DOMAIN.md §9.6)."""
    ins_action: InsAction
    pid32: Pid32Reading
    status: IdentityStatus | None
    """RNIV status implied by PID-32: VALI + INS -> qualifiée, VALI -> validée, PROV -> provisoire."""
    birth_name: str | None
    first_birth_given_name: str | None
    birth_given_names: str | None
    birth_date: dt.date | None
    """As recorded per RNIV: an incomplete PID-7 is completed (see `birth_date_completed`)."""
    birth_date_completed: bool
    sex: Sex | None
    birthplace_code: str | None
    used_family_name: str | None
    """PID-5 ``D`` XPN-1, or None."""
    used_given_name: str | None
    """PID-5 ``D`` XPN-2 (prénom utilisé), or None."""
    used_name_removed: bool
    """PID-5 ``D`` sent as ``""``: the used name no longer exists (PAM FR §6.6.2)."""
    prior_ids: tuple[PatientIdentifier, ...]
    """MRG-1 identifiers other than INS: the absorbed patient (A40), the old identifier (A47)."""
    prior_ins: Ins | None
    """MRG-1 INS: the old or deleted INS (A47, PAM FR §4.4.2-4.4.4)."""
    birth_date_corrected: bool
    """ZFD-4 = Y."""
    acquisition_mode: str
    """ZFD-5: SM, CV, INSI, CB, RFID, or empty."""
    insi_query_date: dt.date | None
    """ZFD-6 (date part)."""

    def __repr__(self) -> str:
        return (
            f"IdentityFeed(event={self.event!r}, status={self.status}, has_ins={self.ins is not None}, "
            f"ins_ignored={self.ins_ignored}, ins_action={self.ins_action})"
        )

    @property
    def patient_key(self) -> str:
        """The first local identifier's ``value@authority``."""
        return self.local_ids[0].patient_key

    @property
    def missing_traits(self) -> tuple[Trait, ...]:
        """Strict traits the message does not carry, in `Trait` order."""
        present = {
            Trait.BIRTH_NAME: self.birth_name,
            Trait.FIRST_BIRTH_GIVEN_NAME: self.first_birth_given_name,
            Trait.BIRTH_GIVEN_NAMES: self.birth_given_names,
            Trait.BIRTH_DATE: self.birth_date,
            Trait.SEX: self.sex,
            Trait.BIRTHPLACE: self.birthplace_code,
        }
        return tuple(t for t in Trait if present[t] is None)

    @property
    def traits(self) -> StrictTraits | None:
        """The strict traits, or None when one of the five required by RNIV [EXI PP 02] is missing.

        The given-name list is not required: it may be unknown until INSi is
        called (RNIV [EXI PP 03]) and is then empty here.
        """
        if (
            self.birth_name is None
            or self.first_birth_given_name is None
            or self.birth_date is None
            or self.sex is None
            or self.birthplace_code is None
        ):
            return None
        return StrictTraits(
            birth_name=self.birth_name,
            first_birth_given_name=self.first_birth_given_name,
            birth_date=self.birth_date,
            sex=self.sex,
            birthplace_code=self.birthplace_code,
            birth_given_names=self.birth_given_names or "",
        )


def read_identity_feed(body: bytes | str, *, policy: InsPolicy | None = None) -> IdentityFeed:
    """Read one PAM FR ADT message into an `IdentityFeed`.

    ``policy``, when given, also drops an INS the environment refuses (test or
    demo root in production, wrong key when strict) with reason
    `InsIgnoredReason.POLICY`; without it the four INS roots are accepted and
    a wrong key is only a warning (DOMAIN.md §1.2, §9.6).

    Raises `hub.errors.ParseError` when the bytes are not ER7 and
    `hub.errors.ValidationError` when the ADT cannot feed an identity: not
    ADT (code 200), an event outside PAM FR (201), no PID (100), no PI
    identifier or one without its assigning authority (101, ``PID^1^3``), an
    A40/A47 without MRG-1 (101), an unreadable PID-7 / a PID-8 outside F/M/U /
    a birthplace code that is not 5 characters (102/103).
    """
    msg = Er7Message(body)  # decoded with its MSH-18 character set
    msh = msg.fields(0)

    def msh_field(n: int, comp: int = 1) -> str:
        return msg.component(msh[n], comp) if n < len(msh) else ""

    if msh_field(9) != "ADT":
        raise ValidationError("not an ADT message", code="200", location="MSH^1^9")
    event = msh_field(9, 2) or msg.value("EVN", 1)
    if event not in ITI30_EVENTS and event not in ITI31_EVENTS:
        raise ValidationError("trigger event outside IHE PAM France", code="201", location="MSH^1^9^1^2")

    pid = msg.find("PID")
    if pid is None:
        raise ValidationError("no PID segment", code="100", location="PID")
    local_ids, ins_reps, deletion = _read_pid3(msg, pid)
    pid32 = read_pid32(msg.component(r, 1) for r in msg.repetitions(pid, 32))
    zfd = msg.find("ZFD")
    corrected = zfd is not None and msg.component(msg.raw(zfd, 4), 1).upper() == "Y"

    ins, ignored, warnings = _choose_ins(ins_reps, pid32, corrected, policy)
    status = IdentityStatus.from_pam(pid32.status_code, ins_present=ins is not None) if pid32.status_code else None

    prior_ids: tuple[PatientIdentifier, ...] = ()
    prior_ins: Ins | None = None
    mrg = msg.find("MRG")
    if event in ("A40", "A47") and (mrg is None or not msg.raw(mrg, 1).strip()):
        raise ValidationError(f"{event} without MRG-1", code="101", location="MRG^1^1")
    if mrg is not None:
        prior_ids, prior_ins = _read_mrg1(msg, mrg)

    if deletion:
        action = InsAction.REMOVE
    elif event == "A47" and prior_ins is not None:
        action = InsAction.CHANGE if ins is not None else InsAction.REMOVE
    else:
        action = InsAction.SET if ins is not None else InsAction.NONE

    names = _read_names(msg, pid)
    birth_date, completed = _read_birth_date(msg, pid)
    zfd6 = msg.component(msg.raw(zfd, 6), 1) if zfd is not None else ""
    return IdentityFeed(
        event=event,
        control_id=msh_field(10),
        structure=msh_field(9, 3),
        sending_application=msh_field(3),
        sending_facility=msh_field(4),
        local_ids=local_ids,
        ins=ins,
        ins_ignored=ignored,
        ins_warnings=warnings,
        ins_action=action,
        pid32=pid32,
        status=status,
        birth_name=names.birth_name,
        first_birth_given_name=names.first_given_name,
        birth_given_names=names.given_names,
        birth_date=birth_date,
        birth_date_completed=completed,
        sex=_read_sex(msg, pid),
        birthplace_code=_read_birthplace(msg, pid),
        used_family_name=names.used_family_name,
        used_given_name=names.used_given_name,
        used_name_removed=names.used_name_removed,
        prior_ids=prior_ids,
        prior_ins=prior_ins,
        birth_date_corrected=corrected,
        acquisition_mode=msg.component(msg.raw(zfd, 5), 1) if zfd is not None else "",
        insi_query_date=_date_or_none(zfd6),
    )


# --------------------------------------------------------------------------- PID-3 / MRG-1


def _authority(msg: Er7Message, rep: str) -> AssigningAuthority:
    return AssigningAuthority(msg.component(rep, 4, 1), msg.component(rep, 4, 2), msg.component(rep, 4, 3))


def _read_pid3(msg: Er7Message, pid: int) -> tuple[tuple[PatientIdentifier, ...], list[tuple[str, str]], bool]:
    """PI identifiers, INS candidates as (matricule, OID), and whether ``""`` deletes the INS."""
    local: list[PatientIdentifier] = []
    ins: list[tuple[str, str]] = []
    deletion = False
    for n, rep in enumerate(msg.repetitions(pid, 3), 1):
        value, cx5 = msg.component(rep, 1), msg.component(rep, 5)
        if cx5 == "PI" and value:
            authority = _authority(msg, rep)
            if not authority.key:
                # CX-4 is R [1..1] in IHE-France Appendix N: an IPP means nothing without its authority.
                raise ValidationError(
                    "PI identifier without an assigning authority", code="101", location=f"PID^1^3^{n}^4"
                )
            local.append(PatientIdentifier(value, authority, "PI"))
        elif cx5 == INS_CX5:
            if value == _HL7_NULL:
                deletion = True  # PAM FR §4.4.3: "" + the INS OID in PID-3 deletes the INS
            elif value:
                ins.append((value, msg.component(rep, 4, 2)))
    if not local:
        raise ValidationError("no PI identifier in PID-3", code="101", location="PID^1^3")
    return tuple(local), ins, deletion


def _read_mrg1(msg: Er7Message, mrg: int) -> tuple[tuple[PatientIdentifier, ...], Ins | None]:
    ids: list[PatientIdentifier] = []
    prior_ins: Ins | None = None
    for rep in msg.repetitions(mrg, 1):
        value, cx5 = msg.component(rep, 1), msg.component(rep, 5)
        if not value or value == _HL7_NULL:
            continue
        if cx5 == INS_CX5:
            oid = msg.component(rep, 4, 2)
            if prior_ins is None and authority_for_oid(oid) is not None:
                prior_ins = Ins(value, oid)
        else:
            ids.append(PatientIdentifier(value, _authority(msg, rep), cx5))
    return tuple(ids), prior_ins


def _choose_ins(
    candidates: list[tuple[str, str]],
    pid32: Pid32Reading,
    corrected_birth_date: bool,
    policy: InsPolicy | None,
) -> tuple[Ins | None, InsIgnoredReason | None, tuple[InsProblem, ...]]:
    """Apply the PAM FR trust rules to the INS repetitions of PID-3."""
    if not candidates:
        return None, None, ()
    # PAM FR §6.6.15: without VALI the INS is dropped, whatever else is wrong with it.
    if len(pid32.status_codes) > 1:
        return None, InsIgnoredReason.STATUS_CONTRADICTORY, ()
    if pid32.status_code != "VALI":
        return None, InsIgnoredReason.STATUS_NOT_VALI, ()
    if rniv_violations(IdentityStatus.QUALIFIEE, pid32.attributes):
        return None, InsIgnoredReason.RNIV_ATTRIBUTE, ()
    if corrected_birth_date:
        return None, InsIgnoredReason.CORRECTED_BIRTH_DATE, ()

    known = [(m, a) for m, oid in candidates if (a := authority_for_oid(oid)) is not None]
    if not known:
        return None, InsIgnoredReason.UNKNOWN_ROOT, ()
    # PAM FR §4.4.1 (DOMAIN.md §2.2): NIA and NIR may both be sent; the receiver must take the NIR.
    chosen = {(m, a.oid) for m, a in known if a.kind is InsKind.NIR} or {(m, a.oid) for m, a in known}
    if len(chosen) > 1:
        return None, InsIgnoredReason.AMBIGUOUS, ()
    matricule, oid = chosen.pop()
    problem = check_nir(matricule).problem
    if problem in (InsProblem.LENGTH, InsProblem.CHARACTERS):
        return None, InsIgnoredReason.MALFORMED, ()
    if policy is not None:
        verdict = policy.check(matricule, oid)
        if verdict.errors:
            return None, InsIgnoredReason.POLICY, ()
        return Ins(matricule, oid), None, verdict.warnings
    # Without a policy a wrong key is tolerated: official samples carry wrong keys (DOMAIN.md §9.6).
    return Ins(matricule, oid), None, (problem,) if problem is not None else ()


# --------------------------------------------------------------------------- traits


@dataclasses.dataclass(slots=True)
class _Names:
    birth_name: str | None = None
    first_given_name: str | None = None
    given_names: str | None = None
    used_family_name: str | None = None
    used_given_name: str | None = None
    used_name_removed: bool = False


def _name_or_none(value: str) -> str | None:
    return value if value != _HL7_NULL and name_key(value) else None


def _read_names(msg: Er7Message, pid: int) -> _Names:
    """PID-5: the first ``L`` repetition (birth identity) and the first ``D`` one (used name).

    XPN-7 is read strictly. IHE-France Appendix N prints its INSi example with
    one ``^`` too many (``...CECILE^^^Mme^^L`` puts L in XPN-8); such a name has
    no type here, rather than a guessed one.
    """
    names = _Names()
    seen_l = seen_d = False
    for rep in msg.repetitions(pid, 5):
        kind = msg.component(rep, 7)
        if kind == "L" and not seen_l:
            seen_l = True
            names.birth_name = _name_or_none(msg.component(rep, 1))
            names.first_given_name = _name_or_none(msg.component(rep, 2))
            names.given_names = _name_or_none(msg.component(rep, 3))
        elif kind == "D" and not seen_d:
            seen_d = True
            family = msg.component(rep, 1)
            names.used_name_removed = family == _HL7_NULL
            names.used_family_name = _name_or_none(family)
            names.used_given_name = _name_or_none(msg.component(rep, 2))
    return names


def _read_birth_date(msg: Er7Message, pid: int) -> tuple[dt.date | None, bool]:
    value = msg.component(msg.raw(pid, 7), 1)
    if not value or value == _HL7_NULL:
        return None, False
    try:
        return parse_birth_date(value)
    except ValidationError as exc:
        raise ValidationError(exc.reason, code="102", location="PID^1^7") from None


def _read_sex(msg: Er7Message, pid: int) -> Sex | None:
    value = msg.component(msg.raw(pid, 8), 1)
    if not value or value == _HL7_NULL:
        return None
    sex = _PAM_SEX.get(value)
    if sex is None:
        raise ValidationError("PID-8 is not F, M or U (PAM FR table 0001)", code="103", location="PID^1^8")
    return sex


def _read_birthplace(msg: Er7Message, pid: int) -> str | None:
    """PID-11 repetition with XAD-7 = BDL, XAD-9 = INSEE (COG) code (IHE-France Appendix N, XAD-9)."""
    for n, rep in enumerate(msg.repetitions(pid, 11), 1):
        if msg.component(rep, 7) != "BDL":
            continue
        code = msg.component(rep, 9).strip()
        if not code or code == _HL7_NULL:
            return None
        if len(code) != 5 or not (code.isdigit() or (code[:2] in ("2A", "2B") and code[2:].isdigit())):
            raise ValidationError("birthplace is not a 5-character INSEE code", code="102", location=f"PID^1^11^{n}^9")
        return code
    return None


def _date_or_none(value: str) -> dt.date | None:
    if len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
