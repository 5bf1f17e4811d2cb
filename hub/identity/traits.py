"""Strict identity traits (traits stricts) and their comparison.

RNIV 01 §3.1.4.1 (DOMAIN.md §1.3): birth name, first birth given name, birth
date, sex, birthplace (INSEE code of the commune, or of the country when born
abroad), the birth given-name list, and the INS matricule + OID. The
matricule lives apart (`hub.identity.oids.InsPolicy`, `hub.identity.nir`);
`StrictTraits` holds the other six.

A comparison says *which* traits disagree, by name, never by value, so the
result can be logged and shown in an identity-review queue. Names compare
by `hub.identity.names.name_key`. RNIV 01 §4.5.3 [EXI PP 20]: a discordance
on birth name, first birth given name, sex or birth date forbids retrieving
or qualifying the INS (`BLOCKING_TRAITS`); one on the rest of the given-name
list or on the birthplace code may be accepted after analysis (§4.5.4).
Twins and homonyms (same birth name and date, other given names) therefore
come out as different people.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from hub.errors import ValidationError
from hub.identity.names import name_key, normalize_name
from hub.identity.nir import decode_nir

__all__ = [
    "BLOCKING_TRAITS",
    "UNKNOWN_BIRTHPLACE",
    "Sex",
    "StrictTraits",
    "Trait",
    "TraitDiff",
    "compare_traits",
    "nir_trait_disagreements",
]

UNKNOWN_BIRTHPLACE = "99999"
"""Birthplace code to record when the birthplace is unknown (RNIV [EXI SI 18])."""

# A COG commune code (Corsica 2A/2B + 3 digits), or 99 + an INSEE country code.
_BIRTHPLACE_RE = re.compile(r"[0-9]{5}|2[AB][0-9]{3}")


class Sex(enum.StrEnum):
    """Administrative sex as a strict trait; the values are the HL7 v2 PID-8 codes.

    INSi returns only M and F (DOMAIN.md §2.4). The RNIV allows a provisional
    ``I`` (indéterminé, Annexe III) which has no PID-8 code; we read it as
    UNKNOWN (``U``), the only non-M/F value PAM FR and FR Core allow.
    """

    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"

    @classmethod
    def parse(cls, code: str) -> Sex:
        """Read PID-8 (M/F/U), RNIV (M/F/I) or FHIR (male/female/unknown); `ValidationError` otherwise."""
        sex = _SEX_CODES.get(code.strip().upper())
        if sex is None:
            raise ValidationError("sex: not M, F, U, I or a FHIR gender", code="103")
        return sex

    @property
    def fhir(self) -> str:
        """FHIR ``Patient.gender``: male, female or unknown."""
        return {Sex.MALE: "male", Sex.FEMALE: "female", Sex.UNKNOWN: "unknown"}[self]


_SEX_CODES = {
    "M": Sex.MALE,
    "F": Sex.FEMALE,
    "U": Sex.UNKNOWN,
    "I": Sex.UNKNOWN,
    "MALE": Sex.MALE,
    "FEMALE": Sex.FEMALE,
    "UNKNOWN": Sex.UNKNOWN,
}


class Trait(enum.StrEnum):
    """The name of one strict trait; the value is the `StrictTraits` field name."""

    BIRTH_NAME = "birth_name"
    FIRST_BIRTH_GIVEN_NAME = "first_birth_given_name"
    BIRTH_GIVEN_NAMES = "birth_given_names"
    BIRTH_DATE = "birth_date"
    SEX = "sex"
    BIRTHPLACE = "birthplace_code"


BLOCKING_TRAITS = frozenset({Trait.BIRTH_NAME, Trait.FIRST_BIRTH_GIVEN_NAME, Trait.BIRTH_DATE, Trait.SEX})
"""A discordance on these forbids retrieving or qualifying the INS (RNIV 01 §4.5.3)."""


@dataclass(frozen=True, slots=True, repr=False)
class StrictTraits:
    """The strict identity traits of one person; the repr never shows them.

    Construction checks presence and shape only, raising `ValidationError`
    (without values): names must not be empty (the RNIV records SANSNOM /
    SANSPRENOM when the document has none), ``birth_date`` is a date
    (complete incomplete ones with `hub.identity.dates`), ``sex`` a `Sex`
    or a code `Sex.parse` reads, ``birthplace_code`` five characters (INSEE
    commune code such as ``63220`` or ``2A004``, ``99`` + country code when
    born abroad, `UNKNOWN_BIRTHPLACE` when unknown). ``birth_given_names`` is
    the list as INSi gives it, space separated, and may be empty until known
    (RNIV [EXI PP 03]). Values are kept as given: see `normalized`.
    """

    birth_name: str
    first_birth_given_name: str
    birth_date: dt.date
    sex: Sex
    birthplace_code: str
    birth_given_names: str = ""

    def __post_init__(self) -> None:
        if not name_key(self.birth_name):
            raise ValidationError("strict traits: birth name missing")
        if not name_key(self.first_birth_given_name):
            raise ValidationError("strict traits: first birth given name missing")
        if isinstance(self.birth_date, dt.datetime):
            object.__setattr__(self, "birth_date", self.birth_date.date())
        elif not isinstance(self.birth_date, dt.date):
            raise ValidationError("strict traits: birth date is not a date", code="102")
        if not isinstance(self.sex, Sex):
            object.__setattr__(self, "sex", Sex.parse(self.sex))
        if not _BIRTHPLACE_RE.fullmatch(self.birthplace_code):
            raise ValidationError("strict traits: birthplace is not a 5-character INSEE code", code="102")

    def __repr__(self) -> str:
        return "StrictTraits(<masked>)"

    def normalized(self) -> StrictTraits:
        """A copy with the names in RNIV recording form (`hub.identity.names.normalize_name`)."""
        return StrictTraits(
            birth_name=normalize_name(self.birth_name),
            first_birth_given_name=normalize_name(self.first_birth_given_name),
            birth_date=self.birth_date,
            sex=self.sex,
            birthplace_code=self.birthplace_code,
            birth_given_names=normalize_name(self.birth_given_names),
        )


@dataclass(frozen=True, slots=True)
class TraitDiff:
    """Which traits disagree, and which could not be compared (unknown on one side).

    Holds trait names only, so it may be logged. Traits are in `Trait` order.
    """

    disagreeing: tuple[Trait, ...] = ()
    undetermined: tuple[Trait, ...] = ()

    @property
    def agree(self) -> bool:
        """True when no compared trait disagrees (undetermined ones do not count)."""
        return not self.disagreeing

    @property
    def blocking(self) -> tuple[Trait, ...]:
        """The disagreeing traits that forbid treating both as one person (RNIV 01 §4.5.3)."""
        return tuple(t for t in self.disagreeing if t in BLOCKING_TRAITS)


def compare_traits(reference: StrictTraits, candidate: StrictTraits) -> TraitDiff:
    """Compare two sets of strict traits trait by trait.

    Names compare by `name_key` (case, accents, hyphen/apostrophe vs space
    ignored). A trait is *undetermined*, not disagreeing, when one side does
    not know it: an empty given-name list, sex UNKNOWN, birthplace 99999.
    Birth dates compare as recorded: an RNIV-completed 31/12/1970 differs
    from 15/03/1970.
    """
    disagreeing: list[Trait] = []
    undetermined: list[Trait] = []

    def judge(trait: Trait, unknown: bool, same: bool) -> None:
        if unknown:
            undetermined.append(trait)
        elif not same:
            disagreeing.append(trait)

    a, b = reference, candidate
    judge(Trait.BIRTH_NAME, False, name_key(a.birth_name) == name_key(b.birth_name))
    judge(
        Trait.FIRST_BIRTH_GIVEN_NAME,
        False,
        name_key(a.first_birth_given_name) == name_key(b.first_birth_given_name),
    )
    judge(
        Trait.BIRTH_GIVEN_NAMES,
        not name_key(a.birth_given_names) or not name_key(b.birth_given_names),
        name_key(a.birth_given_names) == name_key(b.birth_given_names),
    )
    judge(Trait.BIRTH_DATE, False, a.birth_date == b.birth_date)
    judge(Trait.SEX, Sex.UNKNOWN in (a.sex, b.sex), a.sex == b.sex)
    judge(
        Trait.BIRTHPLACE,
        UNKNOWN_BIRTHPLACE in (a.birthplace_code, b.birthplace_code),
        a.birthplace_code == b.birthplace_code,
    )
    return TraitDiff(tuple(disagreeing), tuple(undetermined))


def nir_trait_disagreements(matricule: str, traits: StrictTraits) -> tuple[Trait, ...]:
    """Traits that contradict what the NIR/NIA digits say: sex, birth year and month.

    Advisory, for routing to review (an INS stamped on the wrong person). The
    birthplace is not compared: NIRs may hold INSEE extension codes and
    commune codes change over time (RNIV 01 §4.5.4.1). A NIR pseudo-month
    or a sex digit other than 1/2 is not compared. An RNIV-completed birth
    date (31/12) may legitimately disagree on the month. The key is not
    checked; `ValidationError` if the matricule is malformed.
    """
    parts = decode_nir(matricule)
    found: list[Trait] = []
    if parts.birth_year_2 != traits.birth_date.year % 100 or (
        parts.birth_month is not None and parts.birth_month != traits.birth_date.month
    ):
        found.append(Trait.BIRTH_DATE)
    if parts.sex is not None and traits.sex is not Sex.UNKNOWN and parts.sex != traits.sex.value:
        found.append(Trait.SEX)
    return tuple(found)
