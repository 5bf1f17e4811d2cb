"""RNIV identity statuses and attributes, their combination rules, and PID-32.

RNIV 01 §3.2.1 (DOMAIN.md §1.4): four mutually exclusive statuses from two
axes, I (traits retrieved from the INSi teleservice) x C (checked against a
high-trust identity document). §3.2.3: the attributes homonyme (HOMA),
douteuse (DOUT) and fictive (FICT).

The codes differ by channel (DOMAIN.md §2.5, §9.3). PAM FR 2.11.1 table 0445
has only PROV and VALI for statuses, and VALI there means "the INS may be
trusted", i.e. RNIV *qualifiée*. FR Core >= 2.2 has PROV / RECUP / VALI / QUAL
with the RNIV meanings, so FR Core VALI (validée) may *not* carry an INS.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "FR_CORE_IDENTITY_STATUS_SYSTEM",
    "FR_CORE_STATUS_COMMENT_SYSTEM",
    "FR_CORE_V2_0445_SYSTEM",
    "TABLE_0445_CODES",
    "IdentityAttribute",
    "IdentityStatus",
    "IdentityStatusName",
    "Pid32Reading",
    "RnivRule",
    "may_call_insi",
    "may_carry_ins",
    "pid32_allows_ins",
    "read_pid32",
    "rniv_violations",
]

FR_CORE_IDENTITY_STATUS_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"
"""FR Core >= 2.2: PROV | RECUP | VALI | QUAL (DOMAIN.md §4.2)."""
FR_CORE_STATUS_COMMENT_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status-comment"
"""FR Core >= 2.2: attributes and management codes (HOMA, FICT, DOUT, DOUA, ...)."""
FR_CORE_V2_0445_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
"""FR Core 2.1.0: mirrors PAM table 0445 (no RECUP/QUAL), as used by the ANS TDDUI example.

Pin the FR Core version: stored revisions of the FSH source give this code
system the id ``fr-core-cs-v2-0445`` in one commit and ``fr-core-v2-0445`` in
another, so the canonical URL itself has moved.
"""

TABLE_0445_CODES = frozenset(
    {
        "VIDE", "PROV", "VALI", "DOUB", "DESA", "DPOT", "DOUA", "COLP", "COLV", "FILI", "CACH",
        "ANOM", "IDVER", "RECD", "IDRA", "USUR", "HOMD", "HOMA", "INVA", "FICT", "DOUT",
    }
)  # fmt: skip
"""Every value of PAM FR table 0445 (DOMAIN.md §1.4, PAM FR 2.11.1 §6.6.15)."""


class IdentityStatus(enum.StrEnum):
    """The four RNIV trust statuses of a local identity (RNIV 01 §3.2.1)."""

    PROVISOIRE = "provisoire"
    RECUPEREE = "recuperee"
    VALIDEE = "validee"
    QUALIFIEE = "qualifiee"

    @property
    def from_insi(self) -> bool:
        """The I axis: traits retrieved from the INSi teleservice (I+)."""
        return self in (IdentityStatus.RECUPEREE, IdentityStatus.QUALIFIEE)

    @property
    def document_checked(self) -> bool:
        """The C axis: checked against a high-trust identity document (C+)."""
        return self in (IdentityStatus.VALIDEE, IdentityStatus.QUALIFIEE)

    @property
    def fr_core_code(self) -> str:
        """Code in `FR_CORE_IDENTITY_STATUS_SYSTEM` (FR Core >= 2.2)."""
        return _FR_CORE_CODES[self]

    @property
    def pam_code(self) -> str:
        """PAM FR PID-32 code (table 0445) to send for this status.

        PAM has no RECUP or QUAL. Qualifiée is VALI (DOMAIN.md §2.5), validée
        is VALI ("Validé"; its INS is not sent anyway). Récupérée has no code
        (DOMAIN.md §1.4); we send PROV, so that a receiver never reads more
        trust than there is (a decision).
        """
        return "VALI" if self.document_checked else "PROV"

    @classmethod
    def from_fr_core(cls, code: str) -> IdentityStatus:
        """Read an FR Core >= 2.2 ``identityStatus`` code; `ValueError` if unknown."""
        for status, status_code in _FR_CORE_CODES.items():
            if status_code == code:
                return status
        raise ValueError("not an FR Core identity status code")

    @classmethod
    def from_pam(cls, code: str, *, ins_present: bool) -> IdentityStatus | None:
        """Infer the RNIV status from a PAM FR PID-32 status code.

        ``VALI`` with an INS in PID-3 -> qualifiée, without -> validée;
        ``PROV`` -> provisoire; anything else -> None. This inference is the
        hub's own (DOMAIN.md §2.5); no spec states it.
        """
        if code == "VALI":
            return cls.QUALIFIEE if ins_present else cls.VALIDEE
        if code == "PROV":
            return cls.PROVISOIRE
        return None


IdentityStatusName: TypeAlias = Literal[
    IdentityStatus.PROVISOIRE, IdentityStatus.RECUPEREE, IdentityStatus.VALIDEE, IdentityStatus.QUALIFIEE
]
"""A config field's type for `IdentityStatus`: its JSON Schema lists the values inline, as ``Literal`` does."""

_FR_CORE_CODES = {
    IdentityStatus.PROVISOIRE: "PROV",
    IdentityStatus.RECUPEREE: "RECUP",
    IdentityStatus.VALIDEE: "VALI",
    IdentityStatus.QUALIFIEE: "QUAL",
}


class IdentityAttribute(enum.StrEnum):
    """The RNIV identity attributes (RNIV 01 §3.2.3); same codes in PID-32 and FR Core.

    PAM FR limits the attribute repetitions of PID-32 to these three (the
    table 0445 values commented "Attribut d'identité"). HOMD ("homonyme
    détecté") and the other table 0445 values are management codes, not
    RNIV attributes (see `TABLE_0445_CODES`).
    """

    HOMA = "HOMA"
    """Homonyme avéré: allowed with every status."""
    DOUT = "DOUT"
    """Identité douteuse: provisoire only."""
    FICT = "FICT"
    """Identité fictive: provisoire only, and never with another attribute."""


class RnivRule(enum.StrEnum):
    """An RNIV (or PAM FR) rule an identity breaks; the value is a stable code for logs."""

    DOUBTFUL_NOT_PROVISOIRE = "dout_requires_provisoire"
    """DOUT goes only with provisoire (RNIV 01 §3.2.3, [EXI SI 09])."""
    FICTITIOUS_NOT_PROVISOIRE = "fict_requires_provisoire"
    """FICT goes only with provisoire (RNIV 01 §3.2.3, [EXI SI 09])."""
    FICTITIOUS_COMBINED = "fict_combined"
    """FICT goes alone: "seuls les attributs douteux et homonymes peuvent être utilisés
    simultanément", so FICT+DOUT and FICT+HOMA are both refused (RNIV 01 §3.2.3 and its matrix)."""
    INS_WITHOUT_INSI_STATUS = "ins_without_insi_status"
    """An INS matricule is kept with an I- status (provisoire/validée): RNIV 01 §3.2.2-3.2.3 remove it."""
    INSI_STATUS_WITHOUT_INS = "insi_status_without_ins"
    """Récupérée/qualifiée without an INS: no INS trait, no retrieval (RNIV 01 §4.5.3)."""
    CORRECTED_BIRTH_DATE = "corrected_birth_date"
    """A birth date corrected per the INS guide bars récupérée/qualifiée (PAM FR §6.6.4)."""


def rniv_violations(
    status: IdentityStatus,
    attributes: Iterable[IdentityAttribute] = (),
    *,
    has_ins: bool | None = None,
    birth_date_corrected: bool = False,
) -> list[RnivRule]:
    """Return the rules that ``status`` + ``attributes`` break, in a stable order; [] if none.

    ``has_ins`` (whether an INS matricule is stored) is checked against the I
    axis only when given. ``birth_date_corrected`` is the PAM ZFD-4 flag.
    """
    attrs = frozenset(IdentityAttribute(a) for a in attributes)
    violations: list[RnivRule] = []
    provisoire = status is IdentityStatus.PROVISOIRE
    if IdentityAttribute.DOUT in attrs and not provisoire:
        violations.append(RnivRule.DOUBTFUL_NOT_PROVISOIRE)
    if IdentityAttribute.FICT in attrs and not provisoire:
        violations.append(RnivRule.FICTITIOUS_NOT_PROVISOIRE)
    if IdentityAttribute.FICT in attrs and len(attrs) > 1:
        # DOMAIN.md §1.4 only says "FICT and DOUT cannot be combined"; the RNIV text and
        # matrix allow no combination but DOUT+HOMA, so FICT+HOMA is refused too.
        violations.append(RnivRule.FICTITIOUS_COMBINED)
    if has_ins is True and not status.from_insi:
        violations.append(RnivRule.INS_WITHOUT_INSI_STATUS)
    if has_ins is False and status.from_insi:
        violations.append(RnivRule.INSI_STATUS_WITHOUT_INS)
    if birth_date_corrected and status.from_insi:
        violations.append(RnivRule.CORRECTED_BIRTH_DATE)
    return violations


def may_call_insi(attributes: Iterable[IdentityAttribute]) -> bool:
    """False when DOUT or FICT is set: calling INSi must be impossible ([EXI SI 09])."""
    attrs = frozenset(IdentityAttribute(a) for a in attributes)
    return not attrs & {IdentityAttribute.DOUT, IdentityAttribute.FICT}


def may_carry_ins(
    status: IdentityStatus,
    attributes: Iterable[IdentityAttribute] = (),
    *,
    birth_date_corrected: bool = False,
) -> bool:
    """True only for a qualifiée identity that breaks no rule.

    RNIV [EXI SI 08]: qualifiée is the only status that allows the INS
    matricule in transmissions; PAM FR §6.6.4: not with a corrected birth date.
    """
    if status is not IdentityStatus.QUALIFIEE:
        return False
    return not rniv_violations(status, attributes, birth_date_corrected=birth_date_corrected)


@dataclass(frozen=True, slots=True)
class Pid32Reading:
    """PID-32 repetitions sorted out: status codes, RNIV attributes, other table 0445 codes, unknowns."""

    status_codes: tuple[str, ...]
    attributes: frozenset[IdentityAttribute]
    other_codes: tuple[str, ...]
    unknown_codes: tuple[str, ...]

    @property
    def status_code(self) -> str | None:
        """The single PROV/VALI code, or None when absent or contradictory."""
        return self.status_codes[0] if len(self.status_codes) == 1 else None


def read_pid32(repetitions: Iterable[str]) -> Pid32Reading:
    """Sort the PID-32 repetitions (codes, already split on ``~``); empty ones are skipped.

    PAM FR §6.6.15: attributes travel in extra repetitions of PID-32.
    """
    statuses: list[str] = []
    attributes: set[IdentityAttribute] = set()
    others: list[str] = []
    unknown: list[str] = []
    for raw in repetitions:
        code = raw.strip()
        if not code:
            continue
        if code in ("PROV", "VALI"):
            if code not in statuses:
                statuses.append(code)
        elif code in IdentityAttribute.__members__:
            attributes.add(IdentityAttribute(code))
        elif code in TABLE_0445_CODES:
            others.append(code)
        else:
            unknown.append(code)
    return Pid32Reading(tuple(statuses), frozenset(attributes), tuple(others), tuple(unknown))


def pid32_allows_ins(repetitions: Iterable[str]) -> bool:
    """Whether a received INS may be kept, judged from PID-32 alone.

    PAM FR §6.6.15 (DOMAIN.md §2.5): with PID-32 other than VALI the receiver
    integrates the message *without* the INS. We also refuse a PID-32 that
    says both PROV and VALI, or VALI with DOUT/FICT (an RNIV contradiction).
    """
    reading = read_pid32(repetitions)
    if reading.status_code != "VALI":
        return False
    return not rniv_violations(IdentityStatus.QUALIFIEE, reading.attributes)
