"""Strict traits, RNIV name normalisation, incomplete birth dates and trait comparison.

Rules from RNIV 01 §3.1.4.1, §4.5.3 and Annexe III (DOMAIN.md §1.3). PAT-TROIS
DOMINIQUE is the ANS test patient quoted in DOMAIN.md §2.6/§3.2; every other
person here is made up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

import hub.identity
from hub.errors import ValidationError
from hub.identity import (
    BLOCKING_TRAITS,
    UNKNOWN_BIRTHPLACE,
    Sex,
    StrictTraits,
    Trait,
    TraitDiff,
    compare_traits,
    complete_birth_date,
    first_given_name_consistent,
    name_key,
    nir_trait_disagreements,
    normalize_name,
    parse_birth_date,
)

PAT_TROIS = StrictTraits(
    birth_name="PAT-TROIS",
    first_birth_given_name="DOMINIQUE",
    birth_given_names="DOMINIQUE MARIE-LOUISE",
    birth_date=dt.date(1979, 3, 28),
    sex=Sex.FEMALE,
    birthplace_code="51215",
)


def variant(**changes: object) -> StrictTraits:
    return dataclasses.replace(PAT_TROIS, **changes)  # type: ignore[arg-type]


# ---- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "recorded"),
    [
        ("Dark", "DARK"),
        ("Hélène", "HELENE"),
        ("Marie-Cécile", "MARIE-CECILE"),
        ("d\u2019Arc", "D'ARC"),  # typographic apostrophe
        ("JEAN\u2013PIERRE", "JEAN-PIERRE"),  # en dash
        ("Jeanne, Marie, Cécile", "JEANNE MARIE CECILE"),  # commas between given names are not recorded
        ("DUPONT/MARTIN", "DUPONT MARTIN"),  # Annexe III: "/" becomes a space
        ("  o'neil   de  la   tour ", "O'NEIL DE LA TOUR"),
        ("Œillet", "OEILLET"),
        ("Lætitia", "LAETITIA"),
        ("Strauß", "STRAUSS"),
        ("Çağla Ñúñez", "CAGLA NUNEZ"),
        ("Du\u00adpont", "DUPONT"),  # soft hyphen
        ("Αλέξης", "ΑΛΕΞΗΣ"),  # other scripts are kept, never dropped
    ],
)
def test_normalize_name(raw: str, recorded: str) -> None:
    assert normalize_name(raw) == recorded


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("MARIE-CECILE", "MARIE CECILE", True),  # [EXI SI 29]: hyphen = space
        ("D'ARC", "D ARC", True),  # apostrophe = space
        ("D'ARC", "d\u2019arc", True),
        ("Hélène", "HELENE", True),
        ("Jean Pierre", "JEAN-PIERRE", True),
        ("JEAN--PIERRE", "JEAN PIERRE", True),
        ("D'ARC", "DARC", False),  # decision: an apostrophe is a space, not nothing
        ("JEANPIERRE", "JEAN PIERRE", False),
        ("MARTIN", "MARTINE", False),
        ("Αλέξης", "Ιωάννης", False),
        ("Дмитрий", "Сергей", False),
    ],
)
def test_name_key(a: str, b: str, same: bool) -> None:
    assert (name_key(a) == name_key(b)) is same


@pytest.mark.parametrize(
    ("first", "names", "consistent"),
    [
        # RNIV Annexe III example: names MAX PATRICK.
        ("MAX", "MAX PATRICK", True),
        ("MAX PATRICK", "MAX PATRICK", True),
        ("MAX-PATRICK", "MAX PATRICK", True),
        ("PATRICK", "MAX PATRICK", False),
        ("PATRICK MAX", "MAX PATRICK", False),
        ("PATRICK-MAX", "MAX PATRICK", False),
        ("MA", "MAX PATRICK", False),
        ("Jean-Roger", "JEAN ROGER PIERRE", True),
        ("DOMINIQUE", "", True),
        ("", "MAX PATRICK", False),
    ],
)
def test_first_given_name_consistent(first: str, names: str, consistent: bool) -> None:
    assert first_given_name_consistent(first, names) is consistent


# ---- birth dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "month", "day", "recorded"),
    [
        (1979, 3, 28, dt.date(1979, 3, 28)),
        (1979, 3, None, dt.date(1979, 3, 1)),  # day unknown -> 01/MM/AAAA
        (1979, None, 28, dt.date(1979, 1, 28)),  # month unknown -> JJ/01/AAAA
        (1979, None, None, dt.date(1979, 12, 31)),  # both unknown -> 31/12/AAAA
        (1970, None, None, dt.date(1970, 12, 31)),  # date unknown, estimated decade (RNIV example)
    ],
)
def test_complete_birth_date(year: int, month: int | None, day: int | None, recorded: dt.date) -> None:
    assert complete_birth_date(year, month, day) == recorded


@pytest.mark.parametrize(
    ("year", "month", "day"), [(1979, 2, 30), (1979, 13, None), (1979, None, 32), (0, 1, 1)]
)
def test_complete_birth_date_refuses_impossible_dates(year: int, month: int | None, day: int | None) -> None:
    with pytest.raises(ValidationError):
        complete_birth_date(year, month, day)


@pytest.mark.parametrize(
    ("text", "recorded", "completed"),
    [
        ("19790328", dt.date(1979, 3, 28), False),
        ("19790328111153", dt.date(1979, 3, 28), False),  # HL7 TS with a time part
        ("197903281111+0100", dt.date(1979, 3, 28), False),
        ("197903", dt.date(1979, 3, 1), True),
        ("1979", dt.date(1979, 12, 31), True),
        ("19790300", dt.date(1979, 3, 1), True),
        ("19790028", dt.date(1979, 1, 28), True),
        ("19790000", dt.date(1979, 12, 31), True),
        ("1979-03-28", dt.date(1979, 3, 28), False),
        ("1979-03", dt.date(1979, 3, 1), True),
    ],
)
def test_parse_birth_date(text: str, recorded: dt.date, completed: bool) -> None:
    assert parse_birth_date(text) == (recorded, completed)


@pytest.mark.parametrize(
    "text", ["", "79", "1979-3-28", "19791328", "20240230", "28/03/1979", "1979-03-28T10:00"]
)
def test_parse_birth_date_refuses(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_birth_date(text)
    assert info.value.code == "102"
    if text:
        assert text not in str(info.value)


# ---- sex ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "sex"),
    [("M", Sex.MALE), ("F", Sex.FEMALE), ("U", Sex.UNKNOWN), ("I", Sex.UNKNOWN), ("female", Sex.FEMALE),
     ("male", Sex.MALE), ("unknown", Sex.UNKNOWN), (" f ", Sex.FEMALE)],
)  # fmt: skip
def test_sex_parse(code: str, sex: Sex) -> None:
    assert Sex.parse(code) is sex


@pytest.mark.parametrize("code", ["", "X", "other", "1", "2"])
def test_sex_parse_refuses(code: str) -> None:
    with pytest.raises(ValidationError):
        Sex.parse(code)


def test_sex_fhir() -> None:
    assert [s.fhir for s in Sex] == ["male", "female", "unknown"]


# ---- StrictTraits ------------------------------------------------------------------------------------


def test_traits_repr_hides_every_value() -> None:
    for text in (repr(PAT_TROIS), str(PAT_TROIS), repr([PAT_TROIS]), f"{PAT_TROIS!r}"):
        for secret in ("PAT", "TROIS", "DOMINIQUE", "MARIE", "1979", "51215", "28", "'F'", "FEMALE"):
            assert secret not in text


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"birth_name": ""}, id="no-birth-name"),
        pytest.param({"birth_name": " - "}, id="punctuation-only-birth-name"),
        pytest.param({"first_birth_given_name": "  "}, id="no-first-given-name"),
        pytest.param({"birthplace_code": "6322"}, id="birthplace-4-digits"),
        pytest.param({"birthplace_code": "2a004"}, id="birthplace-lower-case-corsica"),
        pytest.param({"birthplace_code": "Paris"}, id="birthplace-name"),
        pytest.param({"birth_date": "19790328"}, id="birth-date-string"),
        pytest.param({"sex": "X"}, id="sex-code"),
    ],
)
def test_traits_validation_errors_carry_no_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        variant(**changes)
    text = str(info.value)
    for secret in ("PAT-TROIS", "DOMINIQUE", "1979", "51215", "6322", "2a004", "Paris"):
        assert secret not in text


@pytest.mark.parametrize("code", ["63220", "2A004", "2B033", "97105", "99135", UNKNOWN_BIRTHPLACE])
def test_traits_birthplace_codes(code: str) -> None:
    assert variant(birthplace_code=code).birthplace_code == code


def test_traits_coerce_sex_codes_and_datetimes() -> None:
    traits = variant(sex="F", birth_date=dt.datetime(1979, 3, 28, 11, 11))
    assert traits.sex is Sex.FEMALE
    assert type(traits.birth_date) is dt.date
    assert traits == PAT_TROIS


def test_traits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAT_TROIS.birth_name = "X"  # type: ignore[misc]


def test_traits_normalized() -> None:
    raw = variant(birth_name="Pat-Trois", first_birth_given_name="Dominique",
                  birth_given_names="Dominique, Marie-Louise")  # fmt: skip
    assert raw != PAT_TROIS
    assert raw.normalized() == PAT_TROIS


# ---- comparison --------------------------------------------------------------------------------------

TWIN_BROTHER = variant(first_birth_given_name="CLAUDE", birth_given_names="CLAUDE JEAN", sex=Sex.MALE)
TWIN_SISTER = variant(first_birth_given_name="CAMILLE", birth_given_names="CAMILLE ANNE")
HOMONYM = variant(
    first_birth_given_name="DOMINIQUE", birth_given_names="DOMINIQUE ROSE", birthplace_code="63220"
)

SPELLING_VARIANT = variant(
    birth_name="Pat Trois", first_birth_given_name="Dominique", birth_given_names="dominique marie louise"
)
FIRST_NAMES = (Trait.FIRST_BIRTH_GIVEN_NAME, Trait.BIRTH_GIVEN_NAMES)

COMPARISONS = [
    pytest.param(PAT_TROIS, (), (), id="same-person"),
    pytest.param(SPELLING_VARIANT, (), (), id="case-hyphen-accent-variants"),
    pytest.param(TWIN_SISTER, FIRST_NAMES, (), id="twin-sister"),
    pytest.param(TWIN_BROTHER, (*FIRST_NAMES, Trait.SEX), (), id="twin-brother"),
    pytest.param(HOMONYM, (Trait.BIRTH_GIVEN_NAMES, Trait.BIRTHPLACE), (), id="homonym-same-first-name"),
    pytest.param(variant(birthplace_code="63220"), (Trait.BIRTHPLACE,), (), id="birthplace-only"),
    pytest.param(variant(birth_date=dt.date(1979, 12, 31)), (Trait.BIRTH_DATE,), (), id="completed-date"),
    pytest.param(variant(birth_name="PAT-QUATRE"), (Trait.BIRTH_NAME,), (), id="birth-name"),
    pytest.param(variant(birthplace_code=UNKNOWN_BIRTHPLACE), (), (Trait.BIRTHPLACE,), id="place-unknown"),
    pytest.param(variant(sex=Sex.UNKNOWN), (), (Trait.SEX,), id="sex-unknown"),
    pytest.param(variant(birth_given_names=""), (), (Trait.BIRTH_GIVEN_NAMES,), id="given-names-unknown"),
]


@pytest.mark.parametrize(("candidate", "disagreeing", "undetermined"), COMPARISONS)
def test_compare_traits(
    candidate: StrictTraits, disagreeing: tuple[Trait, ...], undetermined: tuple[Trait, ...]
) -> None:
    diff = compare_traits(PAT_TROIS, candidate)
    assert diff.disagreeing == disagreeing
    assert diff.undetermined == undetermined
    assert diff.agree is (not disagreeing)
    assert diff.blocking == tuple(t for t in disagreeing if t in BLOCKING_TRAITS)
    assert compare_traits(candidate, PAT_TROIS) == diff  # symmetric


@pytest.mark.parametrize("twin", [TWIN_SISTER, TWIN_BROTHER], ids=["sister", "brother"])
def test_twins_are_different_people(twin: StrictTraits) -> None:
    diff = compare_traits(PAT_TROIS, twin)
    assert Trait.FIRST_BIRTH_GIVEN_NAME in diff.blocking
    assert not diff.agree


def test_birthplace_and_given_name_list_alone_do_not_block() -> None:
    # RNIV 01 §4.5.4: these may be accepted after analysis; §4.5.3 lists the blocking four.
    assert {Trait.BIRTH_NAME, Trait.FIRST_BIRTH_GIVEN_NAME, Trait.BIRTH_DATE, Trait.SEX} == BLOCKING_TRAITS
    assert compare_traits(PAT_TROIS, HOMONYM).blocking == ()


def test_diff_shows_trait_names_only() -> None:
    diff = compare_traits(PAT_TROIS, TWIN_BROTHER)
    text = repr(diff)
    assert "first_birth_given_name" in text
    for secret in ("DOMINIQUE", "CLAUDE", "1979"):
        assert secret not in text
    assert TraitDiff().agree


# ---- NIR vs traits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matricule", "traits", "expected"),
    [
        ("279035121518989", PAT_TROIS, ()),
        ("279035121518989", variant(sex=Sex.MALE), (Trait.SEX,)),
        ("279035121518989", variant(sex=Sex.UNKNOWN), ()),
        ("279035121518989", variant(birth_date=dt.date(1980, 3, 28)), (Trait.BIRTH_DATE,)),
        ("279035121518989", variant(birth_date=dt.date(1879, 3, 28)), ()),  # the century is not in the NIR
        ("279035121518989", variant(birth_date=dt.date(1979, 4, 28)), (Trait.BIRTH_DATE,)),
        ("179035121518960", PAT_TROIS, (Trait.SEX,)),  # wrong key: decoded anyway
        ("291209921700358", variant(birth_date=dt.date(1991, 12, 31)), ()),  # pseudo-month not compared
        ("785059913504252", variant(birth_date=dt.date(1985, 5, 1)), ()),  # sex digit 7 not compared
    ],
)
def test_nir_trait_disagreements(matricule: str, traits: StrictTraits, expected: tuple[Trait, ...]) -> None:
    assert nir_trait_disagreements(matricule, traits) == expected


# ---- public API --------------------------------------------------------------------------------------


def test_public_api_is_sorted_and_importable() -> None:
    names = hub.identity.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(hub.identity, name) is not None


def test_normalize_name_ascii_shortcut_gives_the_per_character_form() -> None:
    # The translate() table for ASCII must give what the character-by-character rules give, for every pair.
    from hub.identity.names import _normalize_each

    for a in range(128):
        for b in range(128):
            value = chr(a) + chr(b) + "a-b'c`d"
            assert normalize_name(value) == _normalize_each(value), repr(value)
