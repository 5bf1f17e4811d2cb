"""NIR / NIA matricules: structure, key check and decoding.

The INS matricule is the person's NIR (or, for people born abroad still being
registered, the NIA given by the CNAV): 15 characters, 13 + a 2-digit key
(DOMAIN.md §1.2; RNIV 01 §2.2). Both share this format; only the OID tells a
NIR from a NIA (RNIV 01 §2.2: "le NIR et le NIA ayant chacun leur autorité
d'affectation"), so nothing here tries to guess the kind from the digits.

Where python-stdnum (`stdnum.fr.nir`) fits and where it does not:

- The key formula and the Corsica rule (2A -> 19, 2B -> 18 before the modulo)
  are delegated to `stdnum.fr.nir.calc_check_digits`, the very source
  DOMAIN.md §1.2 cites for them [S3].
- `stdnum.fr.nir.validate` is *not* used as the front door, because it
  strips spaces and dots and upper-cases its input. An INS travels as an
  exact 15-character string (CX-1, CDA `id@extension`, FHIR `value`), so a
  separator or a lower-case ``2a`` is reported here as a character problem.
- stdnum accepts any first digit, any month field (``20``, ``42``, ``99``...)
  and any department/country code; so do we for the *check*. Such values are
  structurally fine: INSEE gives pseudo-months to people registered from an
  incomplete civil status, and people born abroad get ``99`` + an INSEE country
  code. `decode_nir` reports them without guessing: a month outside 01-12
  decodes to ``birth_month=None``.
- stdnum raises on the first problem and checks format before length; we
  return one structured `NirCheck` (length, then characters, then key).
- NIA: stdnum knows nothing of NIA. We apply the same length, character and
  key rules, as DOMAIN.md §1.2 does when it calls a published NIA sample's key
  invalid. Official samples do carry wrong keys (DOMAIN.md §9.6), so the
  caller chooses strict or lenient with `NirCheck.acceptable`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from stdnum.fr import nir as _stdnum_nir

from hub.errors import ValidationError

__all__ = [
    "NIR_LENGTH",
    "InsProblem",
    "NirCheck",
    "NirParts",
    "check_nir",
    "decode_nir",
    "nir_key",
    "require_nir",
]

NIR_LENGTH = 15
"""13 characters + a 2-digit key (DOMAIN.md §1.2)."""

# Positions 6-7 hold a department, which for Corsica is 2A or 2B; everything else is
# an ASCII digit. `[0-9]`, not `\d`, so that other scripts' digits are refused.
_NIR_RE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}")


class InsProblem(enum.StrEnum):
    """Why an INS matricule (or its OID) is not usable as it stands."""

    LENGTH = "length"
    """Not exactly 15 characters."""
    CHARACTERS = "characters"
    """Not 15 ASCII digits, save 2A/2B in the department position."""
    KEY = "key"
    """The last two digits are not 97 - (first 13 mod 97)."""
    UNKNOWN_ROOT = "unknown_root"
    """The OID is not one of the four INS roots (DOMAIN.md §1.1)."""
    ROOT_REFUSED = "root_refused"
    """An INS root this environment refuses (test/demo in production, DOMAIN.md §9.1)."""


@dataclass(frozen=True, slots=True)
class NirCheck:
    """Outcome of `check_nir`: ``problem`` is None when the matricule is valid.

    Holds no part of the number, so it can be logged or put in an error.
    """

    problem: InsProblem | None

    @property
    def valid(self) -> bool:
        """True when length, characters and key are all right."""
        return self.problem is None

    def acceptable(self, *, strict_key: bool) -> bool:
        """Whether to use the number: a wrong key passes only when ``strict_key`` is False.

        DOMAIN.md §1.2/§9.6: several official sample INS have wrong keys, so a
        test environment should warn on the key instead of rejecting.
        """
        if self.problem is None:
            return True
        return self.problem is InsProblem.KEY and not strict_key


def nir_key(first13: str) -> str:
    """Return the 2-digit key for the first 13 characters (Corsica 2A/2B handled).

    Raises `ValueError` if ``first13`` is not 13 characters of the NIR alphabet.
    """
    if len(first13) != NIR_LENGTH - 2 or not _NIR_RE.fullmatch(first13 + "00"):
        raise ValueError("expected the 13 leading characters of a NIR")
    # stdnum substitutes 19/18 for 2A/2B before the modulo (DOMAIN.md §1.2, [S3]).
    return str(_stdnum_nir.calc_check_digits(first13))


def check_nir(value: str) -> NirCheck:
    """Check a 15-character NIR or NIA: length, then characters, then key.

    No normalisation is applied: spaces, dots or a lower-case ``2a`` are
    character problems (see the module docstring). The first problem found
    is reported; the key is checked only on a well-formed number.
    """
    if len(value) != NIR_LENGTH:
        return NirCheck(InsProblem.LENGTH)
    if not _NIR_RE.fullmatch(value):
        return NirCheck(InsProblem.CHARACTERS)
    if nir_key(value[:13]) != value[13:]:
        return NirCheck(InsProblem.KEY)
    return NirCheck(None)


def require_nir(value: str, *, strict_key: bool = True, location: str = "") -> NirCheck:
    """Like `check_nir`, but raise `ValidationError` when the number is not acceptable.

    With ``strict_key=False`` a wrong key is tolerated and the returned check
    still says ``problem=KEY``, so the caller can warn. The error text names
    the problem, never the number.
    """
    result = check_nir(value)
    if not result.acceptable(strict_key=strict_key):
        assert result.problem is not None
        raise ValidationError(f"INS matricule: bad {result.problem.value}", code="102", location=location)
    return result


@dataclass(frozen=True, slots=True, repr=False)
class NirParts:
    """What the digits of a NIR/NIA say; every field is personal data, so the repr is masked.

    ``birth_year_2`` is the last two digits of the birth year: the century is
    not in the number. ``birth_month`` is None when the month field is not a
    calendar month (pseudo-months for an incomplete civil status, e.g. ``20``
    or ``99``). ``sex`` is ``"M"``/``"F"`` for digits 1/2 and None otherwise
    (other digits exist for provisional registrations; they are not
    interpreted here). ``birthplace_code`` is positions 6-10, which is the
    INSEE code of the commune (e.g. ``2A004``, ``97105``) or, for people born
    abroad, ``99`` + the INSEE country code. It may differ from the
    birthplace trait: INSEE uses fictitious "extension" codes in NIRs and
    commune codes change over time (RNIV 01 §4.5.4.1).
    """

    sex_digit: str
    sex: str | None
    birth_year_2: int
    month_code: str
    birth_month: int | None
    birthplace_code: str
    serial: str

    def __repr__(self) -> str:
        return "NirParts(<masked>)"

    @property
    def born_abroad(self) -> bool:
        """True when the department field is 99 (birthplace is an INSEE country code)."""
        return self.birthplace_code.startswith("99")

    @property
    def department(self) -> str | None:
        """Birth department: 2 characters, 3 for overseas (97x, 98x); None when born abroad."""
        if self.born_abroad:
            return None
        if self.birthplace_code[:2] in ("97", "98"):
            return self.birthplace_code[:3]
        return self.birthplace_code[:2]

    @property
    def country_code(self) -> str | None:
        """The INSEE country code (``99xxx``) when born abroad, else None."""
        return self.birthplace_code if self.born_abroad else None


def decode_nir(value: str) -> NirParts:
    """Decode sex, birth year/month and birthplace from a well-formed NIR or NIA.

    The key is not checked (decode a test sample with a wrong key if you
    must); the length and characters are, with `ValidationError` on failure.
    """
    result = check_nir(value)
    if result.problem in (InsProblem.LENGTH, InsProblem.CHARACTERS):
        assert result.problem is not None
        raise ValidationError(f"INS matricule: bad {result.problem.value}", code="102")
    month_code = value[3:5]
    month = int(month_code)
    return NirParts(
        sex_digit=value[0],
        sex={"1": "M", "2": "F"}.get(value[0]),
        birth_year_2=int(value[1:3]),
        month_code=month_code,
        birth_month=month if 1 <= month <= 12 else None,
        birthplace_code=value[5:10],
        serial=value[10:13],
    )
