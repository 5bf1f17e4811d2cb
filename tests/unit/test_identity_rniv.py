"""RNIV statuses, attributes and their rules (hub.identity.rniv), against DOMAIN.md §1.4, §2.5, §4.2."""

from __future__ import annotations

import pytest

from hub.identity import (
    TABLE_0445_CODES,
    IdentityAttribute,
    IdentityStatus,
    RnivRule,
    may_call_insi,
    may_carry_ins,
    pid32_allows_ins,
    read_pid32,
    rniv_violations,
)

PROV = IdentityStatus.PROVISOIRE
RECUP = IdentityStatus.RECUPEREE
VALI = IdentityStatus.VALIDEE
QUAL = IdentityStatus.QUALIFIEE
HOMA = IdentityAttribute.HOMA
DOUT = IdentityAttribute.DOUT
FICT = IdentityAttribute.FICT


@pytest.mark.parametrize(
    ("status", "from_insi", "document_checked", "fr_core", "pam"),
    [
        (PROV, False, False, "PROV", "PROV"),
        (RECUP, True, False, "RECUP", "PROV"),  # no RECUP in PAM FR: never claim more trust
        (VALI, False, True, "VALI", "VALI"),
        (QUAL, True, True, "QUAL", "VALI"),  # no QUAL in PAM FR: VALI + INS in PID-3
    ],
)
def test_status_axes_and_codes(
    status: IdentityStatus, from_insi: bool, document_checked: bool, fr_core: str, pam: str
) -> None:
    assert status.from_insi is from_insi
    assert status.document_checked is document_checked
    assert status.fr_core_code == fr_core
    assert status.pam_code == pam
    assert IdentityStatus.from_fr_core(fr_core) is status


@pytest.mark.parametrize("code", ["RECUPEREE", "QUALI", "", "vali"])
def test_unknown_fr_core_codes(code: str) -> None:
    with pytest.raises(ValueError):
        IdentityStatus.from_fr_core(code)


@pytest.mark.parametrize(
    ("code", "ins_present", "status"),
    [
        ("VALI", True, QUAL),
        ("VALI", False, VALI),
        ("PROV", False, PROV),
        ("PROV", True, PROV),
        ("VIDE", False, None),
        ("RECUP", True, None),
    ],
)
def test_status_from_pam(code: str, ins_present: bool, status: IdentityStatus | None) -> None:
    assert IdentityStatus.from_pam(code, ins_present=ins_present) is status


def test_attribute_codes_are_the_real_ones() -> None:
    # DOMAIN.md §1.4: DOUT, FICT, HOMA, not the common guesses DOUTE, FICTI, HOMON.
    assert {a.value for a in IdentityAttribute} == {"DOUT", "FICT", "HOMA"}
    assert {"DOUT", "FICT", "HOMA", "HOMD", "PROV", "VALI"} <= TABLE_0445_CODES
    assert not {"DOUTE", "FICTI", "HOMON", "RECUP", "QUAL"} & TABLE_0445_CODES


# The RNIV 01 §3.2.3 matrix of allowed status x attribute associations.
ALLOWED = {
    frozenset(): {PROV, RECUP, VALI, QUAL},
    frozenset({HOMA}): {PROV, RECUP, VALI, QUAL},
    frozenset({DOUT}): {PROV},
    frozenset({FICT}): {PROV},
    frozenset({DOUT, HOMA}): {PROV},
    frozenset({FICT, DOUT}): set(),
    frozenset({FICT, HOMA}): set(),
    frozenset({FICT, DOUT, HOMA}): set(),
}


@pytest.mark.parametrize("attributes", list(ALLOWED), ids=lambda a: "+".join(sorted(a)) or "none")
@pytest.mark.parametrize("status", list(IdentityStatus))
def test_rniv_matrix(status: IdentityStatus, attributes: frozenset[IdentityAttribute]) -> None:
    violations = rniv_violations(status, attributes)
    assert (not violations) is (status in ALLOWED[attributes])


@pytest.mark.parametrize(
    ("status", "attributes", "expected"),
    [
        (QUAL, {DOUT}, [RnivRule.DOUBTFUL_NOT_PROVISOIRE]),
        (VALI, {FICT}, [RnivRule.FICTITIOUS_NOT_PROVISOIRE]),
        (PROV, {FICT, DOUT}, [RnivRule.FICTITIOUS_COMBINED]),
        (PROV, {FICT, HOMA}, [RnivRule.FICTITIOUS_COMBINED]),
        (
            RECUP,
            {FICT, DOUT},
            [
                RnivRule.DOUBTFUL_NOT_PROVISOIRE,
                RnivRule.FICTITIOUS_NOT_PROVISOIRE,
                RnivRule.FICTITIOUS_COMBINED,
            ],
        ),
        (RECUP, {HOMA}, []),
    ],
)
def test_rniv_violations_name_the_rules(
    status: IdentityStatus, attributes: set[IdentityAttribute], expected: list[RnivRule]
) -> None:
    assert rniv_violations(status, attributes) == expected


def test_attributes_may_be_given_as_codes() -> None:
    assert rniv_violations(QUAL, ["DOUT"]) == [RnivRule.DOUBTFUL_NOT_PROVISOIRE]  # type: ignore[list-item]
    with pytest.raises(ValueError):
        rniv_violations(PROV, ["DOUTE"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("status", "has_ins", "expected"),
    [
        (PROV, True, [RnivRule.INS_WITHOUT_INSI_STATUS]),
        (VALI, True, [RnivRule.INS_WITHOUT_INSI_STATUS]),
        (RECUP, True, []),
        (QUAL, True, []),
        (PROV, False, []),
        (VALI, False, []),
        (RECUP, False, [RnivRule.INSI_STATUS_WITHOUT_INS]),
        (QUAL, False, [RnivRule.INSI_STATUS_WITHOUT_INS]),
        (QUAL, None, []),
    ],
)
def test_ins_presence_follows_the_insi_axis(
    status: IdentityStatus, has_ins: bool | None, expected: list[RnivRule]
) -> None:
    assert rniv_violations(status, has_ins=has_ins) == expected


@pytest.mark.parametrize(("status", "violated"), [(PROV, False), (VALI, False), (RECUP, True), (QUAL, True)])
def test_corrected_birth_date_bars_insi_statuses(status: IdentityStatus, violated: bool) -> None:
    violations = rniv_violations(status, birth_date_corrected=True)
    assert (RnivRule.CORRECTED_BIRTH_DATE in violations) is violated


@pytest.mark.parametrize(
    ("status", "attributes", "corrected", "allowed"),
    [
        (QUAL, set(), False, True),
        (QUAL, {HOMA}, False, True),
        (QUAL, {DOUT}, False, False),
        (QUAL, {FICT}, False, False),
        (QUAL, set(), True, False),
        (VALI, set(), False, False),
        (RECUP, set(), False, False),
        (PROV, set(), False, False),
        (PROV, {HOMA}, False, False),
    ],
)
def test_may_carry_ins_only_when_qualified(
    status: IdentityStatus, attributes: set[IdentityAttribute], corrected: bool, allowed: bool
) -> None:
    assert may_carry_ins(status, attributes, birth_date_corrected=corrected) is allowed


@pytest.mark.parametrize(
    ("attributes", "allowed"),
    [(set(), True), ({HOMA}, True), ({DOUT}, False), ({FICT}, False), ({DOUT, HOMA}, False)],
)
def test_may_call_insi(attributes: set[IdentityAttribute], allowed: bool) -> None:
    assert may_call_insi(attributes) is allowed


def test_read_pid32_sorts_the_repetitions() -> None:
    reading = read_pid32(["PROV", "DOUT", "HOMA", "HOMD", "", "ZZZZ", "PROV"])
    assert reading.status_codes == ("PROV",)
    assert reading.status_code == "PROV"
    assert reading.attributes == {DOUT, HOMA}
    assert reading.other_codes == ("HOMD",)
    assert reading.unknown_codes == ("ZZZZ",)


def test_read_pid32_contradictory_or_missing_status() -> None:
    assert read_pid32(["PROV", "VALI"]).status_code is None
    assert read_pid32([]).status_code is None
    assert read_pid32(["HOMA"]).status_code is None


@pytest.mark.parametrize(
    ("repetitions", "allowed"),
    [
        (["VALI"], True),
        ([" VALI "], True),
        (["VALI", "HOMA"], True),
        (["VALI", "HOMD"], True),
        (["PROV"], False),
        ([], False),
        ([""], False),
        (["vali"], False),  # table 0445 codes are case-sensitive
        (["VALI", "PROV"], False),
        (["VALI", "DOUT"], False),  # a doubtful identity cannot be qualified
        (["VALI", "FICT"], False),
        (["RECUP"], False),
        (["QUAL"], False),
    ],
)
def test_pid32_allows_ins(repetitions: list[str], allowed: bool) -> None:
    assert pid32_allows_ins(repetitions) is allowed
