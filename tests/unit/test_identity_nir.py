"""NIR/NIA check and decoding (hub.identity.nir), against DOMAIN.md §1.2 and §9.6.

Synthetic numbers were built with the key formula; the ANS test INS of
PAT-TROIS and the published spec samples are quoted from DOMAIN.md.
"""

from __future__ import annotations

import pytest
from stdnum.fr import nir as stdnum_nir

from hub.errors import ValidationError
from hub.identity import InsProblem, check_nir, decode_nir, nir_key, require_nir

VALID = [
    pytest.param("279035121518989", id="ans-test-ins-pat-trois"),
    pytest.param("260058815400233", id="pam-fr-nir-sample"),
    pytest.param("185059913504261", id="born-abroad-99135"),
    pytest.param("284122A04512304", id="corsica-2A"),
    pytest.param("177052B03301702", id="corsica-2B"),
    pytest.param("199059710507703", id="overseas-971"),
    pytest.param("291209921700358", id="pseudo-month-20"),
    pytest.param("185429910001482", id="pseudo-month-42"),
    pytest.param("785059913504252", id="sex-digit-7"),
]

WRONG_KEY = [
    pytest.param("276037510669380", id="appendix-n-sample"),  # DOMAIN.md §1.2: key should be 26
    pytest.param("260058815400244", id="pam-fr-nia-sample"),  # DOMAIN.md §1.2: key should be 33
    pytest.param("147720425367411", id="tddui-fhir-example"),  # DOMAIN.md §4.2 example; key should be 30
    pytest.param("279035121518988", id="pat-trois-key-off-by-one"),
    pytest.param("284122A04512318", id="corsica-2A-key-of-2B"),
]

MALFORMED = [
    pytest.param("", InsProblem.LENGTH, id="empty"),
    pytest.param("27903512151898", InsProblem.LENGTH, id="14-chars"),
    pytest.param("2790351215189890", InsProblem.LENGTH, id="16-chars"),
    pytest.param("2 79 03 51 215 189 89", InsProblem.LENGTH, id="spaced-human-format"),
    pytest.param("27903512151898X", InsProblem.CHARACTERS, id="letter-in-key"),
    pytest.param("2790351215 8989", InsProblem.CHARACTERS, id="inner-space"),
    pytest.param("284122a04512304", InsProblem.CHARACTERS, id="lower-case-2a"),
    pytest.param("284122C04512304", InsProblem.CHARACTERS, id="department-2C"),
    pytest.param("2A4122104512304", InsProblem.CHARACTERS, id="2A-out-of-place"),
    pytest.param("\u0662\u0667\u0669\u0660\u0663\u0665\u0661\u0662\u0661\u0665\u0661\u0668\u0669\u0668\u0669",
                 InsProblem.CHARACTERS, id="arabic-indic-digits"),
]  # fmt: skip


@pytest.mark.parametrize("value", VALID)
def test_valid_numbers(value: str) -> None:
    result = check_nir(value)
    assert result.problem is None
    assert result.valid
    assert result.acceptable(strict_key=True)


@pytest.mark.parametrize("value", WRONG_KEY)
def test_wrong_key_is_reported_and_only_lenient_accepts_it(value: str) -> None:
    result = check_nir(value)
    assert result.problem is InsProblem.KEY
    assert not result.valid
    assert not result.acceptable(strict_key=True)
    assert result.acceptable(strict_key=False)


@pytest.mark.parametrize(("value", "problem"), MALFORMED)
def test_malformed_numbers(value: str, problem: InsProblem) -> None:
    result = check_nir(value)
    assert result.problem is problem
    # Leniency is for the key only: a malformed number is never acceptable.
    assert not result.acceptable(strict_key=False)


@pytest.mark.parametrize("value", [*VALID, *WRONG_KEY])
def test_key_agrees_with_python_stdnum(value: str) -> None:
    assert check_nir(value).valid is stdnum_nir.is_valid(value)


@pytest.mark.parametrize(
    ("first13", "key"),
    [
        ("2790351215189", "89"),
        ("1850599135042", "61"),
        ("284122A045123", "04"),
        ("177052B033017", "02"),
    ],
)
def test_nir_key(first13: str, key: str) -> None:
    assert nir_key(first13) == key


def test_corsica_departments_are_replaced_by_19_and_18_before_the_modulo() -> None:
    assert nir_key("284122A045123") == nir_key("2841219045123")
    assert nir_key("177052B033017") == nir_key("1770518033017")
    assert nir_key("284122A045123") != nir_key("284122B045123")


@pytest.mark.parametrize("bad", ["279035121518", "27903512151898", "2790351X15189", "2a4122104512 "])
def test_nir_key_refuses_malformed_input(bad: str) -> None:
    with pytest.raises(ValueError):
        nir_key(bad)


def test_require_nir_strict_raises_without_the_number_in_the_text() -> None:
    with pytest.raises(ValidationError) as info:
        require_nir("276037510669380", location="PID^1^3")
    assert info.value.code == "102"
    assert info.value.location == "PID^1^3"
    assert "key" in info.value.reason
    assert "276037510669380" not in str(info.value)
    assert "2760375106693" not in str(info.value)


def test_require_nir_lenient_tolerates_the_key_but_says_so() -> None:
    assert require_nir("276037510669380", strict_key=False).problem is InsProblem.KEY
    assert require_nir("279035121518989").valid


@pytest.mark.parametrize("value", ["27903512151898", "27903512151898X"])
def test_require_nir_lenient_still_refuses_malformed(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        require_nir(value, strict_key=False)
    assert value not in str(info.value)


DECODED = [
    # value, sex_digit, sex, yy, month_code, month, birthplace, department, country, abroad
    ("279035121518989", "2", "F", 79, "03", 3, "51215", "51", None, False),
    ("185059913504261", "1", "M", 85, "05", 5, "99135", None, "99135", True),
    ("284122A04512304", "2", "F", 84, "12", 12, "2A045", "2A", None, False),
    ("177052B03301702", "1", "M", 77, "05", 5, "2B033", "2B", None, False),
    ("199059710507703", "1", "M", 99, "05", 5, "97105", "971", None, False),
    ("291209921700358", "2", "F", 91, "20", None, "99217", None, "99217", True),
    ("185429910001482", "1", "M", 85, "42", None, "99100", None, "99100", True),
    ("785059913504252", "7", None, 85, "05", 5, "99135", None, "99135", True),
]


@pytest.mark.parametrize(
    ("value", "sex_digit", "sex", "yy", "month_code", "month", "place", "department", "country", "abroad"),
    DECODED,
)
def test_decode_nir(
    value: str,
    sex_digit: str,
    sex: str | None,
    yy: int,
    month_code: str,
    month: int | None,
    place: str,
    department: str | None,
    country: str | None,
    abroad: bool,
) -> None:
    parts = decode_nir(value)
    assert parts.sex_digit == sex_digit
    assert parts.sex == sex
    assert parts.birth_year_2 == yy
    assert parts.month_code == month_code
    assert parts.birth_month == month
    assert parts.birthplace_code == place
    assert parts.department == department
    assert parts.country_code == country
    assert parts.born_abroad is abroad
    assert parts.serial == value[10:13]


def test_decode_accepts_a_wrong_key_but_not_a_malformed_number() -> None:
    assert decode_nir("276037510669380").birthplace_code == "75106"
    with pytest.raises(ValidationError) as info:
        decode_nir("27603751066938")
    assert "2760375106693" not in str(info.value)


def test_decoded_parts_and_checks_do_not_show_the_number() -> None:
    parts = decode_nir("279035121518989")
    for text in (repr(parts), str(parts), repr([parts])):
        assert "51215" not in text
        assert "79" not in text
        assert "F" not in text.replace("NirParts", "")
    assert "279035121518989" not in repr(check_nir("279035121518989"))
