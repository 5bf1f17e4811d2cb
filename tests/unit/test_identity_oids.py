"""INS roots and the per-environment policy (hub.identity.oids), against DOMAIN.md §1.1, §2.2, §4.1, §9.1."""

from __future__ import annotations

import pytest

from hub.errors import ConfigError, ValidationError
from hub.identity import (
    INS_AUTHORITIES,
    INS_C_OIDS,
    INS_NIA_OID,
    INS_NIR_DEMO_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    INS_ROOTS,
    Environment,
    InsKind,
    InsPolicy,
    InsProblem,
    InsUsage,
    authority_for_oid,
    cx4_assigning_authority,
    ins_oid,
)

PAT_TROIS = "279035121518989"  # ANS test INS, valid key
APPENDIX_N_SAMPLE = "276037510669380"  # published with a wrong key (DOMAIN.md §1.2)


def test_the_four_roots() -> None:
    assert INS_NIR_OID == "1.2.250.1.213.1.4.8"
    assert INS_NIA_OID == "1.2.250.1.213.1.4.9"
    assert INS_NIR_TEST_OID == "1.2.250.1.213.1.4.10"
    assert INS_NIR_DEMO_OID == "1.2.250.1.213.1.4.11"
    assert frozenset(INS_AUTHORITIES) == INS_ROOTS
    assert len(INS_ROOTS) == 4


@pytest.mark.parametrize(
    ("oid", "kind", "usage", "cx4", "fhir_type", "fhir_use"),
    [
        (INS_NIR_OID, InsKind.NIR, InsUsage.PRODUCTION,
         "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO", "INS-NIR", "official"),
        (INS_NIA_OID, InsKind.NIA, InsUsage.PRODUCTION,
         "ASIP-SANTE-INS-NIA&1.2.250.1.213.1.4.9&ISO", "INS-NIA", "temp"),
        (INS_NIR_TEST_OID, InsKind.NIR, InsUsage.TEST,
         "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO", "INS-NIR-TEST", "official"),
        # .11 is NIR *demonstration*, not "NIA test" (DOMAIN.md §1.1, §9.1).
        (INS_NIR_DEMO_OID, InsKind.NIR, InsUsage.DEMO,
         "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.11&ISO", "INS-NIR-DEMO", "official"),
    ],
)  # fmt: skip
def test_authorities(
    oid: str, kind: InsKind, usage: InsUsage, cx4: str, fhir_type: str, fhir_use: str
) -> None:
    authority = authority_for_oid(oid)
    assert authority is not None
    assert authority.kind is kind
    assert authority.usage is usage
    assert cx4_assigning_authority(oid) == cx4
    assert authority.fhir_type == fhir_type
    assert authority.fhir_use == fhir_use
    assert authority.fhir_system == f"urn:oid:{oid}"


def test_no_nia_test_root_exists() -> None:
    nia = [a for a in INS_AUTHORITIES.values() if a.kind is InsKind.NIA]
    assert [a.oid for a in nia] == [INS_NIA_OID]


@pytest.mark.parametrize("oid", [*sorted(INS_C_OIDS), "1.2.250.1.176.1.2", "1.2.250.1.213.1.4.12", ""])
def test_other_oids_are_not_ins_roots(oid: str) -> None:
    assert authority_for_oid(oid) is None
    with pytest.raises(ValueError):
        cx4_assigning_authority(oid)


ACCEPTS = [
    # environment, oid, accepted
    ("production", INS_NIR_OID, True),
    ("production", INS_NIA_OID, True),
    ("production", INS_NIR_TEST_OID, False),
    ("production", INS_NIR_DEMO_OID, False),
    ("integration", INS_NIR_OID, True),
    ("integration", INS_NIA_OID, True),
    ("integration", INS_NIR_TEST_OID, True),
    ("integration", INS_NIR_DEMO_OID, True),
    ("test", INS_NIR_OID, True),
    ("test", INS_NIA_OID, True),
    ("test", INS_NIR_TEST_OID, True),
    ("test", INS_NIR_DEMO_OID, True),
    ("test", "1.2.250.1.213.1.4.2", False),  # INS-C is no INS
]


@pytest.mark.parametrize(("environment", "oid", "accepted"), ACCEPTS)
def test_policy_accepts_roots_by_environment(environment: str, oid: str, accepted: bool) -> None:
    assert InsPolicy.for_environment(environment).accepts_root(oid) is accepted


@pytest.mark.parametrize(
    ("kind", "environment", "oid"),
    [
        (InsKind.NIR, Environment.PRODUCTION, INS_NIR_OID),
        (InsKind.NIA, Environment.PRODUCTION, INS_NIA_OID),
        (InsKind.NIR, Environment.INTEGRATION, INS_NIR_TEST_OID),
        (InsKind.NIR, Environment.TEST, INS_NIR_TEST_OID),
        ("NIA", "test", INS_NIA_OID),  # no NIA test root: the production NIA root is stamped
        ("NIA", "integration", INS_NIA_OID),
    ],
)
def test_ins_oid_picks_the_root_to_stamp(
    kind: InsKind | str, environment: Environment | str, oid: str
) -> None:
    assert ins_oid(kind, environment) == oid


def test_unknown_environment_or_kind() -> None:
    with pytest.raises(ValueError):
        InsPolicy.for_environment("staging")
    with pytest.raises(ValueError):
        ins_oid("NIR-TEST", "test")


def test_demo_stamping_can_be_chosen_outside_production() -> None:
    policy = InsPolicy(environment=Environment.TEST, nir_oid=INS_NIR_DEMO_OID)
    assert policy.oid_for(InsKind.NIR) == INS_NIR_DEMO_OID


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(
            {"accepted_roots": frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_TEST_OID})}, id="test-root"
        ),
        pytest.param(
            {"accepted_roots": frozenset({INS_NIR_OID, INS_NIA_OID, INS_NIR_DEMO_OID})}, id="demo-root"
        ),
        pytest.param({"nir_oid": INS_NIR_TEST_OID}, id="stamps-test-root"),
        pytest.param({"nir_oid": INS_NIA_OID}, id="nir-stamped-with-nia-root"),
        pytest.param({"nia_oid": INS_NIR_OID}, id="nia-stamped-with-nir-root"),
        pytest.param({"accepted_roots": frozenset({INS_NIR_OID, "1.2.3"})}, id="not-an-ins-root"),
    ],
)
def test_production_policy_cannot_be_misconfigured(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        InsPolicy(environment=Environment.PRODUCTION, **kwargs)  # type: ignore[arg-type]


CHECKS = [
    # environment, matricule, oid, errors, warnings
    ("production", PAT_TROIS, INS_NIR_OID, (), ()),
    ("production", PAT_TROIS, INS_NIR_TEST_OID, (InsProblem.ROOT_REFUSED,), ()),
    ("production", PAT_TROIS, INS_NIR_DEMO_OID, (InsProblem.ROOT_REFUSED,), ()),
    ("production", APPENDIX_N_SAMPLE, INS_NIR_OID, (InsProblem.KEY,), ()),
    ("production", PAT_TROIS, "1.2.250.1.213.1.4.2", (InsProblem.UNKNOWN_ROOT,), ()),
    ("test", PAT_TROIS, INS_NIR_TEST_OID, (), ()),
    ("test", APPENDIX_N_SAMPLE, INS_NIR_TEST_OID, (), (InsProblem.KEY,)),  # DOMAIN.md §9.6: warn only
    ("integration", "260058815400244", INS_NIA_OID, (), (InsProblem.KEY,)),
    ("test", "27903512151898", INS_NIR_TEST_OID, (InsProblem.LENGTH,), ()),
    ("test", "2790351215189 9", "9.9.9", (InsProblem.UNKNOWN_ROOT, InsProblem.CHARACTERS), ()),
]


@pytest.mark.parametrize(("environment", "matricule", "oid", "errors", "warnings"), CHECKS)
def test_policy_check(
    environment: str,
    matricule: str,
    oid: str,
    errors: tuple[InsProblem, ...],
    warnings: tuple[InsProblem, ...],
) -> None:
    verdict = InsPolicy.for_environment(environment).check(matricule, oid)
    assert verdict.errors == errors
    assert verdict.warnings == warnings
    assert verdict.accepted is (not errors)


def test_strict_key_can_be_forced_in_test() -> None:
    policy = InsPolicy(environment=Environment.TEST, strict_key=True)
    assert policy.check(APPENDIX_N_SAMPLE, INS_NIR_TEST_OID).errors == (InsProblem.KEY,)


@pytest.mark.parametrize(
    ("matricule", "oid", "code"),
    [(PAT_TROIS, INS_NIR_TEST_OID, "103"), (APPENDIX_N_SAMPLE, INS_NIR_OID, "102")],
)
def test_policy_require_raises_without_values(matricule: str, oid: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        InsPolicy.for_environment("production").require(matricule, oid, location="PID^1^3")
    assert info.value.code == code
    assert info.value.location == "PID^1^3"
    assert matricule not in str(info.value)
    assert matricule[:13] not in str(info.value)


def test_policy_require_returns_warnings() -> None:
    verdict = InsPolicy.for_environment("test").require(APPENDIX_N_SAMPLE, INS_NIR_TEST_OID)
    assert verdict.warnings == (InsProblem.KEY,)
