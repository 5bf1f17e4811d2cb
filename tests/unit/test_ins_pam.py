"""PAM FR identity feed reader: what an ADT tells the identity registry.

Samples are synthetic or the official ANS / IHE-France test identities quoted
in DOMAIN.md: PAT-TROIS DOMINIQUE (test INS 279035121518989, ANS) and DARK
JEANNE (PAM FR §4.4 examples, whose NIA has a wrong key on purpose).
"""

from __future__ import annotations

import datetime as dt

import pytest

from hub.errors import ParseError, ValidationError
from hub.identity import (
    INS_NIA_OID,
    INS_NIR_OID,
    INS_NIR_TEST_OID,
    IdentityAttribute,
    IdentityStatus,
    InsKind,
    InsPolicy,
    InsProblem,
    InsUsage,
    Sex,
    StrictTraits,
    Trait,
)
from mappings.ins import (
    AssigningAuthority,
    IdentityFeed,
    InsAction,
    InsIgnoredReason,
    compare_with_registry,
    read_identity_feed,
)

TEST_INS = "279035121518989"  # ANS test patient PAT-TROIS, valid key
NIR_TEST = f"{TEST_INS}^^^ASIP-SANTE-INS-NIR&{INS_NIR_TEST_OID}&ISO^INS"
IPP = "000003^^^CHU-X&000897406&N^PI"
NAME = "PAT-TROIS^DOMINIQUE^DOMINIQUE MARIE-LOUISE^^Mme^^L"
BDL = "28 Av de Breteuil^^PARIS^^75007^FRA^H~^^^^^^BDL^^63220"

# PAM FR §4.4 examples (DOMAIN.md §2.6), the NIA/NIR pair of DARK JEANNE.
DARK_NIA = f"260058815400244^^^ASIP-SANTE-INS-NIA&{INS_NIA_OID}&ISO^INS"
DARK_NIR = f"260058815400233^^^ASIP-SANTE-INS-NIR&{INS_NIR_OID}&ISO^INS"
DARK_IPP = "1900068^^^&350000121&M^PI"
DARK_NAME = "^MARIE-CECILE^^^^^D~DARK^JEANNE^JEANNE MARIE CECILE^^Mme^^L"

SGL_A01 = (
    "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A01^ADT_A01|3975|D|2.5^FRA^2.11|||||FRA|UNICODE UTF-8|FR||"
    "2.11^IHE_FRANCE-2.11-PAM\r"
    "EVN||20240306111154||||20240306111154\r"
    "PID|1||000003^^^CHU-X&000897406&N^PI~279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS^^"
    "20101207||PAT-TROIS^DOMINIQUE^DOMINIQUE^^^^L||19790328|F|||28 Av de Breteuil^^PARIS^^75007^FRA^H^^^^^^^~"
    "^^^^^^BDL^^63220|||||S||24000006^^^CHU-X&000897406&M^AN|||||||1|||||N||VALI|20240306111153||||||\r"
    "PV1|1|I|^^^CHU-X&000897406&M^O^^||||||||||||||||000897406^^^CHU-X&000897406&M^VN^^20210409|||||||||||||||||"
    "|||||||||||||||V\r"
    "ZBE|312^CHU-X^000897406|20240306110000||INSERT|N||Chir V^^^^^CHU-X&000897406&N^UF^^^6268|Chir V^^^^^"
    "CHU-X&000897406&N^UF^^^6268|HMS\r"
    "ZFA|ACTIF|20240306111154|||||||INO|20240306111154|IC|20240306111154\r"
)  # verbatim from DOMAIN.md §2.6 (ANS SGL admission template)


def adt(
    event: str = "A31",
    *,
    pid3: str = f"{IPP}~{NIR_TEST}",
    pid5: str = NAME,
    pid7: str = "19790328",
    pid8: str = "F",
    pid11: str = BDL,
    pid32: str = "VALI",
    mrg: str | None = None,
    zfd: str | None = None,
    structure: str = "ADT_A05",
    msh18: str = "UNICODE UTF-8",
    sep: str = "\r",
) -> bytes:
    """A synthetic PAM FR ADT around one PID; fields not given take PAT-TROIS's values."""
    pid = ["PID", "1", "", pid3, "", pid5, "", pid7, pid8, "", "", pid11] + [""] * 20 + [pid32]
    segments = [
        f"MSH|^~\\&|GAM|HOSP|HUB|HOSP|20250102103000||ADT^{event}^{structure}|MSG-{event}|P|2.5^FRA^2.11|||||FRA|"
        f"{msh18}",
        "EVN||20250102103000",
        "|".join(pid),
    ]
    if mrg is not None:
        segments.append(f"MRG|{mrg}")
    segments.append("PV1|1|N")
    if zfd is not None:
        segments.append(f"ZFD|{zfd}")
    return (sep.join(segments) + sep).encode("utf-8")


def pat_trois(**changes: object) -> StrictTraits:
    values: dict[str, object] = {
        "birth_name": "PAT-TROIS",
        "first_birth_given_name": "DOMINIQUE",
        "birth_date": dt.date(1979, 3, 28),
        "sex": Sex.FEMALE,
        "birthplace_code": "63220",
        "birth_given_names": "DOMINIQUE MARIE-LOUISE",
    }
    values.update(changes)
    return StrictTraits(**values)  # type: ignore[arg-type]


def assert_no_patient_data(feed: IdentityFeed) -> None:
    text = repr(feed) + repr(feed.local_ids) + repr(feed.ins) + repr(feed.traits)
    for secret in (TEST_INS, "260058815400", "PAT-TROIS", "DOMINIQUE", "000003", "1900068"):
        assert secret not in text


# --------------------------------------------------------------------------- the trust rule


def test_a28_provisional_identity_has_no_ins() -> None:
    feed = read_identity_feed(adt("A28", pid3=IPP, pid32="PROV"))
    assert (feed.event, feed.control_id, feed.structure) == ("A28", "MSG-A28", "ADT_A05")
    assert (feed.sending_application, feed.sending_facility) == ("GAM", "HOSP")
    assert feed.status is IdentityStatus.PROVISOIRE
    assert feed.ins is None and feed.ins_ignored is None and feed.ins_action is InsAction.NONE
    [local] = feed.local_ids
    assert (local.value, local.type_code) == ("000003", "PI")
    assert local.authority == AssigningAuthority("CHU-X", "000897406", "N")
    assert feed.patient_key == "000003@CHU-X"  # the same key mappings.hl7v2.read_header puts in metadata
    assert feed.traits == pat_trois()
    assert feed.missing_traits == ()
    assert_no_patient_data(feed)


def test_ins_without_vali_is_dropped_and_the_reason_kept() -> None:
    # PAM FR §6.6.15: integrate the message without the INS.
    feed = read_identity_feed(adt("A28", pid32="PROV"))
    assert feed.ins is None
    assert feed.ins_ignored is InsIgnoredReason.STATUS_NOT_VALI
    assert feed.ins_action is InsAction.NONE
    assert feed.status is IdentityStatus.PROVISOIRE
    assert feed.traits == pat_trois()  # the rest of the message is integrated
    # An empty PID-32 (RE in PAM FR) is not VALI either.
    assert read_identity_feed(adt("A28", pid32="")).ins_ignored is InsIgnoredReason.STATUS_NOT_VALI
    assert read_identity_feed(adt("A28", pid32="")).status is None


def test_a31_qualifying_vali_with_ins() -> None:
    feed = read_identity_feed(adt("A31"))
    assert feed.status is IdentityStatus.QUALIFIEE
    assert feed.ins is not None and feed.ins_ignored is None
    assert (feed.ins.matricule, feed.ins.oid) == (TEST_INS, INS_NIR_TEST_OID)  # the test OID .10
    assert feed.ins.kind is InsKind.NIR and feed.ins.authority.usage is InsUsage.TEST
    assert feed.ins_action is InsAction.SET and feed.ins_warnings == ()
    assert feed.traits == pat_trois()
    assert feed.birth_given_names == "DOMINIQUE MARIE-LOUISE"
    assert_no_patient_data(feed)


def test_vali_without_ins_is_validee() -> None:
    feed = read_identity_feed(adt("A31", pid3=IPP))
    assert feed.status is IdentityStatus.VALIDEE
    assert feed.ins is None and feed.ins_ignored is None


def test_published_sgl_admission_is_read_whole() -> None:
    feed = read_identity_feed(SGL_A01.encode())
    assert (feed.event, feed.control_id, feed.structure) == ("A01", "3975", "ADT_A01")
    assert feed.ins is not None and feed.ins.matricule == TEST_INS  # CX-7 date tolerated (DOMAIN.md §2.2)
    assert feed.status is IdentityStatus.QUALIFIEE
    assert feed.pid32.status_codes == ("VALI",)
    assert feed.traits == pat_trois(birth_given_names="DOMINIQUE")
    assert feed.patient_key == "000003@CHU-X"


def test_nia_and_nir_together_the_nir_is_chosen() -> None:
    # PAM FR §4.4.1 example: NIA then NIR in PID-3, event A31; the receiver must take the NIR.
    feed = read_identity_feed(adt("A31", pid3=f"{DARK_IPP}~{DARK_NIA}~{DARK_NIR}", pid5=DARK_NAME))
    assert feed.ins is not None
    assert (feed.ins.matricule, feed.ins.oid, feed.ins.kind) == ("260058815400233", INS_NIR_OID, InsKind.NIR)
    assert feed.local_ids[0].authority == AssigningAuthority("", "350000121", "M")
    assert feed.patient_key == "1900068@350000121"
    # Used name: given name only (XPN-1 empty), the birth identity in the L repetition.
    assert (feed.used_family_name, feed.used_given_name) == (None, "MARIE-CECILE")
    assert (feed.birth_name, feed.first_birth_given_name) == ("DARK", "JEANNE")
    assert feed.birth_given_names == "JEANNE MARIE CECILE"


def test_nia_alone_is_kept_despite_its_wrong_key() -> None:
    # The PAM FR sample NIA has a wrong key (DOMAIN.md §1.2): a warning, not a refusal, by default.
    feed = read_identity_feed(adt(pid3=f"{DARK_IPP}~{DARK_NIA}"))
    assert feed.ins is not None and feed.ins.kind is InsKind.NIA
    assert feed.ins_warnings == (InsProblem.KEY,)
    # A production policy is strict on the key.
    strict = read_identity_feed(adt(pid3=f"{DARK_IPP}~{DARK_NIA}"), policy=InsPolicy.for_environment("production"))
    assert strict.ins is None and strict.ins_ignored is InsIgnoredReason.POLICY


def test_policy_refuses_test_root_in_production() -> None:
    production = InsPolicy.for_environment("production")
    feed = read_identity_feed(adt(), policy=production)
    assert feed.ins is None and feed.ins_ignored is InsIgnoredReason.POLICY
    assert feed.status is IdentityStatus.VALIDEE  # VALI without a usable INS
    assert read_identity_feed(adt(), policy=InsPolicy.for_environment("test")).ins is not None


@pytest.mark.parametrize(
    ("pid32", "zfd", "reason"),
    [
        ("VALI~DOUT", None, InsIgnoredReason.RNIV_ATTRIBUTE),  # DOUT only with provisoire
        ("VALI~FICT", None, InsIgnoredReason.RNIV_ATTRIBUTE),
        ("PROV~VALI", None, InsIgnoredReason.STATUS_CONTRADICTORY),
        ("VALI", "|||Y|INSI|20250101", InsIgnoredReason.CORRECTED_BIRTH_DATE),  # PAM FR §6.6.4
    ],
)
def test_ins_dropped_by_status_rules(pid32: str, zfd: str | None, reason: InsIgnoredReason) -> None:
    feed = read_identity_feed(adt(pid32=pid32, zfd=zfd))
    assert feed.ins is None and feed.ins_ignored is reason and feed.ins_action is InsAction.NONE


def test_homonym_attribute_keeps_the_ins() -> None:
    feed = read_identity_feed(adt(pid32="VALI~HOMA"))
    assert feed.ins is not None and feed.status is IdentityStatus.QUALIFIEE
    assert feed.pid32.attributes == {IdentityAttribute.HOMA}


@pytest.mark.parametrize(
    ("pid3", "reason"),
    [
        # INS-C is recognised and never an INS (DOMAIN.md §1.1).
        (f"{IPP}~{TEST_INS}^^^ASIP-SANTE-INS-C&1.2.250.1.213.1.4.2&ISO^INS", InsIgnoredReason.UNKNOWN_ROOT),
        (f"{IPP}~27903512151898^^^ASIP-SANTE-INS-NIR&{INS_NIR_OID}&ISO^INS", InsIgnoredReason.MALFORMED),
        (f"{IPP}~{NIR_TEST}~{DARK_NIR}", InsIgnoredReason.AMBIGUOUS),
    ],
)
def test_ins_dropped_by_its_own_shape(pid3: str, reason: InsIgnoredReason) -> None:
    feed = read_identity_feed(adt(pid3=pid3))
    assert feed.ins is None and feed.ins_ignored is reason


def test_billing_nir_is_not_an_ins() -> None:
    # Same .8 OID as the INS-NIR, CX-5 NH (DOMAIN.md §2.2, §9.2).
    feed = read_identity_feed(adt(pid3=f"{IPP}~{TEST_INS}^^^ASIP-SANTE-NIR&{INS_NIR_OID}&ISO^NH^^20210506"))
    assert feed.ins is None and feed.ins_ignored is None
    assert feed.status is IdentityStatus.VALIDEE


def test_zfd_is_read() -> None:
    feed = read_identity_feed(adt(zfd="||Y|N|INSI|20211201||"))  # the ANS example (DOMAIN.md §8.2)
    assert not feed.birth_date_corrected
    assert feed.acquisition_mode == "INSI"
    assert feed.insi_query_date == dt.date(2021, 12, 1)


# --------------------------------------------------------------------------- A47 and A40


def test_a47_ins_change() -> None:
    # PAM FR §4.4.2: the new INS in PID-3, the old one in MRG-1.
    feed = read_identity_feed(
        adt("A47", structure="ADT_A30", pid3=f"{DARK_IPP}~{DARK_NIR}", pid5=DARK_NAME, mrg=NIR_TEST)
    )
    assert feed.ins_action is InsAction.CHANGE
    assert feed.ins is not None and feed.ins.matricule == "260058815400233"
    assert feed.prior_ins is not None
    assert (feed.prior_ins.matricule, feed.prior_ins.oid) == (TEST_INS, INS_NIR_TEST_OID)
    assert feed.prior_ids == ()


def test_a47_ins_deletion() -> None:
    # PAM FR §4.4.3 (verbatim PID-3 and MRG): "" + the INS OID in PID-3, the INS in MRG-1.
    pid3 = f'{DARK_IPP}~""^^^ASIP-SANTE-INS-NIR&{INS_NIR_OID}&ISO^INS'
    feed = read_identity_feed(adt("A47", structure="ADT_A30", pid3=pid3, pid5=DARK_NAME, mrg=DARK_NIR))
    assert feed.ins_action is InsAction.REMOVE
    assert feed.ins is None and feed.ins_ignored is None
    assert feed.prior_ins is not None and feed.prior_ins.matricule == "260058815400233"
    # "la suppression d'un INS ne déclenche pas automatiquement le changement du statut": PID-32 says.
    assert feed.status is IdentityStatus.VALIDEE


def test_a47_downgrade_qualifiee_to_recuperee() -> None:
    # PAM FR §4.4.4: same message as a deletion, with the new state in PID-32 (PROV: no RECUP code).
    pid3 = f'{DARK_IPP}~""^^^ASIP-SANTE-INS-NIR&{INS_NIR_OID}&ISO^INS'
    feed = read_identity_feed(adt("A47", pid3=pid3, pid5=DARK_NAME, pid32="PROV", mrg=DARK_NIR))
    assert feed.ins_action is InsAction.REMOVE
    assert feed.status is IdentityStatus.PROVISOIRE
    assert feed.ins is None and feed.ins_ignored is None


def test_a47_new_ins_not_trusted_removes_the_old_one() -> None:
    feed = read_identity_feed(adt("A47", pid3=f"{DARK_IPP}~{DARK_NIR}", pid32="PROV", mrg=NIR_TEST))
    assert feed.ins_action is InsAction.REMOVE
    assert feed.ins_ignored is InsIgnoredReason.STATUS_NOT_VALI


def test_a47_local_identifier_change() -> None:
    feed = read_identity_feed(adt("A47", pid3="000777^^^CHU-X&000897406&N^PI", pid32="PROV", mrg=IPP))
    [old] = feed.prior_ids
    assert (old.value, old.type_code, old.patient_key) == ("000003", "PI", "000003@CHU-X")
    assert feed.patient_key == "000777@CHU-X"
    assert feed.prior_ins is None and feed.ins_action is InsAction.NONE


def test_a40_merge() -> None:
    feed = read_identity_feed(adt("A40", structure="ADT_A39", mrg="000099^^^CHU-X&000897406&N^PI"))
    [absorbed] = feed.prior_ids
    assert absorbed.patient_key == "000099@CHU-X"
    assert absorbed.authority == AssigningAuthority("CHU-X", "000897406", "N")
    assert feed.patient_key == "000003@CHU-X"  # the surviving patient
    assert feed.ins_action is InsAction.SET and feed.status is IdentityStatus.QUALIFIEE


# --------------------------------------------------------------------------- traits


@pytest.mark.parametrize(
    ("pid7", "expected"),
    [
        ("1979", dt.date(1979, 12, 31)),  # day and month unknown -> 31/12 (RNIV)
        ("197903", dt.date(1979, 3, 1)),  # day unknown -> 01
        ("19790000", dt.date(1979, 12, 31)),
        ("197903281230", dt.date(1979, 3, 28)),  # a TS with a time
    ],
)
def test_incomplete_birth_dates_are_completed(pid7: str, expected: dt.date) -> None:
    feed = read_identity_feed(adt(pid7=pid7))
    assert feed.birth_date == expected
    assert feed.birth_date_completed is (len(pid7) < 8 or pid7.endswith("0000"))


def test_missing_traits() -> None:
    feed = read_identity_feed(adt(pid11="28 Av de Breteuil^^PARIS^^75007^FRA^H", pid8=""))
    assert feed.traits is None
    assert feed.missing_traits == (Trait.SEX, Trait.BIRTHPLACE)
    # No L repetition at all (XPN-7 strictly read: "^^^Mme^^L" puts L in XPN-8).
    feed = read_identity_feed(adt(pid5="DARK^JEANNE^JEANNE MARIE CECILE^^^Mme^^L"))
    assert feed.birth_name is None and feed.traits is None
    assert Trait.BIRTH_NAME in feed.missing_traits


def test_given_name_list_is_optional_for_traits() -> None:
    feed = read_identity_feed(adt(pid5="PAT-TROIS^DOMINIQUE^^^^^L"))
    assert feed.missing_traits == (Trait.BIRTH_GIVEN_NAMES,)
    assert feed.traits == pat_trois(birth_given_names="")


def test_used_name_removed_with_hl7_null() -> None:
    feed = read_identity_feed(adt(pid5=f'""^DOMINIQUE^^^^^D~{NAME}'))
    assert feed.used_name_removed and feed.used_family_name is None
    feed = read_identity_feed(adt(pid5=f"MARTIN^DODO^^^^^D~{NAME}"))
    assert (feed.used_family_name, feed.used_given_name, feed.used_name_removed) == ("MARTIN", "DODO", False)


def test_escapes_and_latin1_charset() -> None:
    body = adt(pid5="D\\T\\ARC^H\u00c9L\u00c8NE^^^^^L", msh18="8859/1").decode("utf-8").encode("latin-1")
    feed = read_identity_feed(body)
    assert feed.birth_name == "D&ARC"
    assert feed.first_birth_given_name == "H\u00c9L\u00c8NE"


def test_lf_line_endings() -> None:
    assert read_identity_feed(adt(sep="\n")).ins is not None


def test_compare_with_registry() -> None:
    feed = read_identity_feed(adt())
    assert compare_with_registry(feed, pat_trois()) == ()
    assert compare_with_registry(feed, pat_trois(sex=Sex.MALE, birthplace_code="51215")) == (
        Trait.SEX,
        Trait.BIRTHPLACE,
    )
    # Accents, case and hyphens do not make a discordance (RNIV comparison form).
    assert compare_with_registry(pat_trois(birth_name="Pat Trois"), pat_trois()) == ()
    # A feed without birthplace does not disagree on it.
    partial = read_identity_feed(adt(pid11=""))
    assert partial.traits is None
    assert compare_with_registry(partial, pat_trois(birthplace_code="51215")) == ()
    assert compare_with_registry(partial, pat_trois(birth_date=dt.date(1979, 3, 29))) == (Trait.BIRTH_DATE,)


# --------------------------------------------------------------------------- structural errors


@pytest.mark.parametrize(
    ("body", "code", "location"),
    [
        (adt(pid3=NIR_TEST), "101", "PID^1^3"),  # no PI identifier
        (adt(pid3="000003^^^^PI"), "101", "PID^1^3^1^4"),  # PI without its authority
        (adt("A40", structure="ADT_A39"), "101", "MRG^1^1"),
        (adt("A47", structure="ADT_A30", mrg=""), "101", "MRG^1^1"),
        (adt("A08"), "201", "MSH^1^9^1^2"),  # A08 is excluded in France
        (adt(pid7="1979-13"), "102", "PID^1^7"),
        (adt(pid8="X"), "103", "PID^1^8"),
        (adt(pid11="^^^^^^BDL^^6322"), "102", "PID^1^11^1^9"),
    ],
)
def test_structurally_unusable_adts(body: bytes, code: str, location: str) -> None:
    with pytest.raises(ValidationError) as err:
        read_identity_feed(body)
    assert (err.value.code, err.value.location) == (code, location)
    for secret in (TEST_INS, "PAT-TROIS", "000003", "1979", "6322"):
        assert secret not in str(err.value)


def test_no_pid_and_not_adt() -> None:
    no_pid = b"MSH|^~\\&|GAM|HOSP|HUB|HOSP|20250102||ADT^A28^ADT_A05|1|P|2.5\rEVN||20250102\r"
    with pytest.raises(ValidationError) as err:
        read_identity_feed(no_pid)
    assert (err.value.code, err.value.location) == ("100", "PID")
    with pytest.raises(ValidationError) as err:
        read_identity_feed(no_pid.replace(b"ADT^A28^ADT_A05", b"ORU^R01^ORU_R01"))
    assert err.value.code == "200"
    with pytest.raises(ParseError):
        read_identity_feed(b"PID|1||x")
    with pytest.raises(ParseError):
        read_identity_feed(adt(msh18="UNICODE UTF-8").replace(b"DOMINIQUE MARIE", b"DOMINIQUE \xe9"))
