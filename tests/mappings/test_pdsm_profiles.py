"""The ITI-65 Bundles the hub produces against the PDSm / IHE MHD profile rules (``mappings/fhir/profiles``).

The rules are data extracted from the guides' FSH sources (versions in the file); every Bundle of the
cases below must break none of them, and each mutation below, a thing the profiles refuse, must be
caught. ``PDSM_IG_DIR`` / ``MHD_IG_DIR`` (git work trees of ansforge/IG-fhir-partage-de-documents-de-sante
and IHE/ITI.MHD at the commits the shipped file names) also re-extract the rules and compare them with it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from hub.content_types import ContentType
from hub.errors import MappingError
from hub.message import Message
from mappings.fhir.cda_mhd import CdaToMhdConfig, cda_to_mhd
from mappings.fhir.profiles import PDSM_DOCUMENT_REFERENCE, rules, validate, validate_bundle
from mappings.fhir.validate import validate_fhir

ROOT = Path(__file__).resolve().parent
SETTINGS = json.loads((ROOT / "fhir_cases" / "cda_crbio_mhd" / "settings.json").read_text())
SETTINGS["class_codes"]["11490-0"] = {  # the class ASS_X04 gives a letter (11490-0)
    "code": "10",
    "coding_scheme": "1.2.250.1.213.1.1.4.1",
    "display_name": "Compte rendu",
}
CASES = {
    "crbio": ROOT / "fhir_cases" / "cda_crbio_mhd" / "input.xml",
    "letter": ROOT / "cases" / "document_mdm_t02_pdf_letter" / "expected.xml",
    "replacement": ROOT / "cases" / "document_mdm_t10_replacement" / "expected.xml",
}


def bundle(case: str, **metadata: str) -> dict[str, Any]:
    message = Message(
        id="01959bd2-a3c0-7000-8000-000000000009",
        content_type=ContentType.CDA,
        body=CASES[case].read_bytes(),
        metadata=MappingProxyType(metadata),
        received_at=dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC),
        correlation_id="01959bd2-a3c0-7000-8000-000000000009",
    )
    out, _ = cda_to_mhd(message.body, message, CdaToMhdConfig.model_validate(SETTINGS))
    return out


def entry(b: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == kind)


@pytest.mark.parametrize(
    ("case", "metadata"),
    [
        ("crbio", {}),
        ("letter", {}),
        ("replacement", {}),
        ("crbio", {"mask_ps": "Y"}),
        ("letter", {"invisible_patient": "Y", "invisible_legal_reps": "Y"}),
    ],
    ids=["crbio", "letter", "replacement", "masked-ps", "invisible-patient"],
)
def test_produced_bundles_conform_to_the_pdsm_profiles(case: str, metadata: dict[str, str]) -> None:
    b = bundle(case, **metadata)
    assert [str(i) for i in validate_bundle(b)] == []
    assert [i for i in validate_fhir(b) if i.severity == "error"] == []
    doc = entry(b, "DocumentReference")
    contained = {c["id"]: c for c in doc["contained"]}
    assert contained[doc["author"][0]["reference"][1:]]["resourceType"] in ("PractitionerRole", "Device")
    assert contained[doc["authenticator"]["reference"][1:]]["resourceType"] == "PractitionerRole"
    assert contained["source-patient"]["resourceType"] == "Patient"
    assert doc["category"][0]["coding"][0]["system"] == "urn:oid:1.2.250.1.213.1.1.4.1"
    submission = entry(b, "List")
    urls = {e["url"] for e in submission["extension"]}
    assert "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType" in urls
    assert submission["source"]["reference"] == "#lot-author"
    if metadata:
        codes = {c["code"] for label in doc["securityLabel"] for c in label["coding"]}
        assert {"MASQUE_PS", "INVISIBLE_PATIENT"} & codes


def test_a_replacement_names_the_document_it_replaces() -> None:
    doc = entry(bundle("replacement"), "DocumentReference")
    assert doc["relatesTo"][0]["code"] == "replaces"
    assert doc["relatesTo"][0]["target"]["identifier"]["value"].startswith("urn:uuid:")


def _drop(path: list[Any]) -> Any:
    def change(b: dict[str, Any]) -> None:
        node = b
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def _set(path: list[Any], value: Any) -> Any:
    def change(b: dict[str, Any]) -> None:
        node = b
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


# entry 0 = the SubmissionSet List, 1 = the DocumentReference, 2 = the Binary, 3 = the Patient.
MUTATIONS = {
    # PDSm 3.1.1 made authenticator optional (the hub still requires the CDA legalAuthenticator, as the DMP does).
    "authenticator-the-patient": (
        _set(["entry", 1, "resource", "authenticator"], {"reference": "#source-patient"}),
        "reference target must be one of",
    ),
    "author-not-contained": (
        _set(["entry", 1, "resource", "author"], [{"reference": "Practitioner/1"}]),
        "must reference a contained resource",
    ),
    "no-category": (_drop(["entry", 1, "resource", "category"]), "category: 1..1"),
    "no-custodian": (_drop(["entry", 1, "resource", "custodian"]), "custodian: 1..*"),
    "no-security-label": (_drop(["entry", 1, "resource", "securityLabel"]), "securityLabel: 1..*"),
    "no-attachment-hash": (_drop(["entry", 1, "resource", "content", 0, "attachment", "hash"]), "hash: 1..*"),
    "attachment-data": (
        _set(["entry", 1, "resource", "content", 0, "attachment", "data"], "AAAA"),
        "data: 0..0",
    ),
    "no-period-start": (_drop(["entry", 1, "resource", "context", "period"]), "period: 1..*"),
    "status-entered-in-error": (
        _set(["entry", 1, "resource", "status"], "entered-in-error"),
        "code not in DocumentReferenceStats",
    ),
    "master-identifier-use": (
        _set(["entry", 1, "resource", "masterIdentifier", "use"], "official"),
        'must be "usual"',
    ),
    "entry-uuid-not-uuid": (
        _set(["entry", 1, "resource", "identifier", 0, "value"], "urn:oid:1.2.3"),
        "invariant mhd-startswithuuid",
    ),
    "no-designation-type": (
        _set(["entry", 0, "resource", "extension"], lambda b: None),
        "extension[designationType]: 1..1",
    ),
    "no-source": (_drop(["entry", 0, "resource", "source"]), "source: 1..*"),
    "source-a-practitioner": (
        _set(["entry", 0, "resource", "contained", 0, "resourceType"], "Practitioner"),
        "reference target must be one of",
    ),
    "list-mode-snapshot": (_set(["entry", 0, "resource", "mode"], "snapshot"), 'must be "working"'),
    "submission-uid-not-oid": (
        _set(["entry", 0, "resource", "identifier", 0, "value"], "urn:uuid:x"),
        "invariant mhd-startswithoid",
    ),
    "bundle-type-batch": (_set(["type"], "batch"), 'must be "transaction"'),
    "document-put": (_set(["entry", 1, "request", "method"], "PUT"), "matches no slice of a closed slicing"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_what_the_profiles_refuse_is_caught(name: str) -> None:
    change, expected = MUTATIONS[name]
    b = copy.deepcopy(bundle("crbio"))
    if name == "no-designation-type":
        ext = b["entry"][0]["resource"]["extension"]
        b["entry"][0]["resource"]["extension"] = [e for e in ext if not e["url"].endswith("ihe-designationType")]
    else:
        change(b)
    issues = [str(i) for i in validate_bundle(b)]
    assert any(expected in i for i in issues), issues


def test_a_document_reference_alone_is_checked_against_its_profile() -> None:
    doc = copy.deepcopy(entry(bundle("letter"), "DocumentReference"))
    assert validate(doc, PDSM_DOCUMENT_REFERENCE) == []
    doc["contained"] = []
    assert any("contained: 1..*" in str(i) for i in validate(doc, PDSM_DOCUMENT_REFERENCE))


def test_the_rules_name_their_sources_and_versions() -> None:
    sources = {s["package"]: s for s in rules()["sources"]}
    assert sources["ans.fhir.fr.pdsm"]["version"].startswith("3.")
    assert sources["ihe.iti.mhd"]["version"] == "4.2.3"  # the version PDSm 3.1 declares
    assert all(len(s["commit"]) == 40 for s in sources.values())


@pytest.mark.skipif(
    not (os.environ.get("PDSM_IG_DIR") and os.environ.get("MHD_IG_DIR")),
    reason="set PDSM_IG_DIR and MHD_IG_DIR to git checkouts of ansforge/IG-fhir-partage-de-documents-de-sante "
    "and IHE/ITI.MHD (commits in mappings/fhir/profiles/pdsm.json) to re-extract the rules",
)
def test_shipped_rules_are_those_of_the_guides() -> None:
    from mappings.fhir.profiles.fsh import generate

    fresh = generate(Path(os.environ["PDSM_IG_DIR"]), Path(os.environ["MHD_IG_DIR"]))
    assert fresh == rules()


@pytest.mark.parametrize(
    ("change", "location"),
    [
        (
            lambda cda: re.sub(rb"<legalAuthenticator>.*?</legalAuthenticator>", b"", cda, flags=re.S),
            "/ClinicalDocument/legalAuthenticator",
        ),
        (
            lambda cda: re.sub(rb"<custodian>.*?</custodian>", b"", cda, flags=re.S),
            "/ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization/id",
        ),
        # A JDV_J66 type ASS_X04 has no row for, and no class configured for it.
        (lambda cda: cda.replace(b'code="11502-2"', b'code="101881-1"', 1), "/ClinicalDocument/code"),
        # Not a JDV_J66 type.
        (lambda cda: cda.replace(b'code="11502-2"', b'code="18842-5"', 1), "/ClinicalDocument/code"),
        # A facility type outside JDV_J61.
        (
            lambda cda: cda.replace(b'code="SA25"', b'code="SA62"', 1),
            "/ClinicalDocument/componentOf/encompassingEncounter/location/healthCareFacility/code",
        ),
    ],
    ids=["no-legal-authenticator", "no-custodian", "type-without-class-code", "type-not-in-j66", "facility-not-in-j61"],
)
def test_a_cda_that_cannot_give_a_pdsm_bundle_is_refused_naming_the_element(change: Any, location: str) -> None:
    cda = change(CASES["crbio"].read_bytes())
    with pytest.raises(MappingError) as info:
        cda_to_mhd(cda, None, CdaToMhdConfig.model_validate(SETTINGS))
    assert info.value.location == location
