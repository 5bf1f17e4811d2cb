"""FHIR R4 validation as the hub relies on it: structure (R4B models), bindings, Bundle rules, FR Core INS rules."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hub.errors import ValidationError
from mappings.fhir.common import dump_json
from mappings.fhir.identifiers import business_identifier, patient_key_of
from mappings.fhir.reader import fhir_metadata, read_fhir_metadata
from mappings.fhir.validate import validate_fhir

INS = "279035121518989"  # ANS test patient PAT-TROIS, INS-NIR test root
STATUS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"


def qualified() -> dict[str, Any]:
    """A qualified FR Core Patient (INS profile), synthetic."""
    return {
        "resourceType": "Patient",
        "extension": [
            {"extension": [{"url": "identityStatus", "valueCoding": {"system": STATUS, "code": "QUAL"}}],
             "url": RELIABILITY},
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
             "valueAddress": {"extension": [{
                 "url": "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code",
                 "valueCoding": {"system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM",
                                 "code": "51215"}}]}},
        ],
        "identifier": [
            {"use": "official",
             "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                                  "code": "INS-NIR-TEST"}]},
             "system": "urn:oid:1.2.250.1.213.1.4.10", "value": INS},
            {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                  "code": "PI"}]},
             "system": "urn:oid:2.999.3.1", "value": "DUI-1", "assigner": {"display": "ESMS-TEST"}},
        ],
        "name": [{"extension": [{"url": "https://hl7.fr/ig/fhir/core/StructureDefinition/"
                                        "fr-core-patient-birth-list-given-name", "valueString": "DOMINIQUE"}],
                  "use": "official", "family": "PAT-TROIS", "given": ["DOMINIQUE"]}],
        "gender": "female",
        "birthDate": "1979-03-28",
    }  # fmt: skip


def errors(doc: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    return [(i.expression, i.code) for i in validate_fhir(doc, **kw) if i.is_error]


def test_a_qualified_patient_passes() -> None:
    assert validate_fhir(qualified()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["identifier"][0].update(system="urn:oid:1.2.250.1.213.1.4.9"),
         ("Patient.identifier[0].system", "invalid")),
        (lambda p: p["identifier"][0].update(use="temp"), ("Patient.identifier[0].use", "code-invalid")),
        (lambda p: p["identifier"][0].update(value="27903512151898"), ("Patient.identifier[0].value", "value")),
        (lambda p: p["extension"].pop(0), ("Patient.extension", "required")),
        (lambda p: p["extension"][0]["extension"][0]["valueCoding"].update(code="PROV"),
         ("Patient.identifier", "business-rule")),
        (lambda p: p["extension"][0]["extension"][0]["valueCoding"].update(code="NOPE"),
         ("Patient.extension[0].extension[0].valueCoding.code", "code-invalid")),
        (lambda p: p["extension"][0]["extension"][0]["valueCoding"].update(system="http://example.org"),
         ("Patient.extension[0].extension[0].valueCoding.system", "code-invalid")),
        (lambda p: p["extension"].pop(1), ("Patient.extension", "required")),
        (lambda p: p["name"][0].pop("extension"), ("Patient.name[0].extension", "required")),
        (lambda p: p["name"][0].update(given=["DOMINIQUE", "MARIE"]), ("Patient.name[0].given", "invariant")),
        (lambda p: p.pop("birthDate"), ("Patient.birthDate", "required")),
        (lambda p: p.update(gender="other"), ("Patient.gender", "required")),
        (lambda p: p["identifier"].append({"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}),
         ("Patient.identifier[2].type", "required")),
        (lambda p: p["extension"][0]["extension"].append(
            {"url": "comment", "valueCodeableConcept": {"coding": [{
                "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status-comment",
                "code": "DOUT"}]}}),
         ("Patient.extension[0].extension[0].valueCoding", "business-rule")),
    ],
)  # fmt: skip
def test_fr_core_ins_rules(change: Any, expected: tuple[str, str]) -> None:
    patient = qualified()
    change(patient)
    found = errors(patient)
    assert expected in found, found


def test_a_wrong_key_is_a_warning_and_production_refuses_test_roots() -> None:
    patient = qualified()
    patient["identifier"][0]["value"] = "279035121518988"
    issues = validate_fhir(patient)
    assert [(i.severity, i.code) for i in issues] == [("warning", "value")]
    assert ("Patient.identifier[0].system", "business-rule") in errors(qualified(), environment="production")


def test_fr_core_2_1_vali_carries_the_ins() -> None:
    patient = qualified()
    patient["extension"][0]["extension"][0]["valueCoding"] = {
        "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445",
        "code": "VALI",
    }
    assert errors(patient) == []
    assert fhir_metadata(patient)["identity_status"] == "qualifiee"


def test_provisional_patient_without_ins_needs_no_traits() -> None:
    patient = {"resourceType": "Patient", "identifier": [qualified()["identifier"][1]], "gender": "female"}
    status = {"url": "identityStatus", "valueCoding": {"system": STATUS, "code": "PROV"}}
    patient["extension"] = [{"extension": [status], "url": RELIABILITY}]
    assert errors(patient) == []
    patient["extension"][0]["extension"][0]["valueCoding"]["code"] = "QUAL"
    assert ("Patient.identifier", "invariant") in errors(patient)


def test_structure_errors_name_the_element_never_the_value() -> None:
    patient = qualified()
    patient["birthDate"] = "1979-13-28"
    patient["nickname"] = "PAT"
    patient["name"][0]["given"] = "DOMINIQUE"
    issues = validate_fhir(patient)
    where = {(i.expression, i.code) for i in issues}
    assert ("Patient.birthDate", "value") in where
    assert ("Patient.nickname", "structure") in where
    assert ("Patient.name[0].given", "structure") in where
    text = json.dumps([str(i) for i in issues])
    assert "1979-13-28" not in text and "DOMINIQUE" not in text and INS not in text


def test_unknown_and_missing_resource_types() -> None:
    assert errors({"resourceType": "Nope"}) == [("Nope.resourceType", "not-supported")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"gender": "male"}}]}
    assert errors(bundle) == [("Bundle.entry[0].resource.resourceType", "required")]


def test_bundle_rules() -> None:
    patient = qualified()
    transaction = {"resourceType": "Bundle", "type": "transaction",
                   "entry": [{"fullUrl": "urn:uuid:1", "resource": patient},
                             {"fullUrl": "urn:uuid:1", "resource": patient,
                              "request": {"method": "FETCH", "url": "Patient"}}]}  # fmt: skip
    found = errors(transaction)
    assert ("Bundle.entry[0].request", "required") in found
    assert ("Bundle.entry[1].fullUrl", "invariant") in found
    assert ("Bundle.entry[1].request.method", "code-invalid") in found
    assert ("Bundle.entry[0].resource.identifier[0].value", "value") not in found
    document = {"resourceType": "Bundle", "type": "document", "entry": [{"resource": patient}]}
    assert {("Bundle.identifier", "invariant"), ("Bundle.entry[0]", "invariant")} <= set(errors(document))
    assert ("Bundle.type", "code-invalid") in errors({"resourceType": "Bundle", "type": "bogus"})


def test_attachments() -> None:
    document = {"resourceType": "DocumentReference", "status": "current",
                "content": [{"attachment": {"contentType": "application/pdf", "data": "aGVsbG8="}},
                            {"attachment": {"contentType": "text/xml", "data": "PGh0bWwvPg=="}},
                            {"attachment": {"contentType": "image/png", "data": "!!"}},
                            {"attachment": {"data": "JVBERi0="}}]}  # fmt: skip
    found = errors(document, check_attachments=True, attachment_content_types=["application/pdf", "text/xml"])
    assert found == [
        ("DocumentReference.content[0].attachment.data", "value"),
        ("DocumentReference.content[1].attachment.data", "value"),
        ("DocumentReference.content[2].attachment.contentType", "not-supported"),
        ("DocumentReference.content[2].attachment.data", "value"),
        ("DocumentReference.content[3].attachment.contentType", "required"),
    ]


def test_metadata_and_patient_key() -> None:
    doc_ref = {"resourceType": "DocumentReference", "status": "current",
               "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.999.1.1"},
               "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
               "subject": {"reference": "urn:uuid:p"},
               "content": [{"attachment": {"contentType": "application/pdf"}}]}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": qualified(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": doc_ref, "request": {"method": "POST", "url": "DocumentReference"}}]}  # fmt: skip
    meta = fhir_metadata(bundle)
    assert meta == {
        "resource_type": "Bundle",
        "message_type": "Bundle",
        "bundle_type": "transaction",
        "patient_key": "DUI-1@ESMS-TEST",
        "ins": INS,
        "ins_oid": "1.2.250.1.213.1.4.10",
        "identity_status": "qualifiee",
        "document_count": "1",
        "document_type": "11488-4",
        "document_type_system": "http://loinc.org",
        "unique_id": "urn:oid:2.999.1.1",
    }
    # The operator's mapping of a system to an authority name wins (HL7 v2's CX-4.1 for the same patient).
    patient = qualified()
    patient["identifier"][1].pop("assigner")
    assert patient_key_of(patient) == "DUI-1@2.999.3.1"
    assert patient_key_of(patient, {"urn:oid:2.999.3.1": "CHU-X"}) == "DUI-1@CHU-X"
    two = copy.deepcopy(bundle)
    other = qualified()
    other["identifier"][1]["value"] = "DUI-2"
    two["entry"].append({"resource": other, "request": {"method": "POST", "url": "Patient"}})
    assert "patient_key" not in fhir_metadata(two) and fhir_metadata(two)["patient_count"] == "2"


def test_business_identifiers() -> None:
    assert business_identifier(qualified()) == ("urn:oid:1.2.250.1.213.1.4.10", INS)
    no_ins = qualified()
    no_ins["identifier"].pop(0)
    assert business_identifier(no_ins) == ("urn:oid:2.999.3.1", "DUI-1")
    assert business_identifier({"resourceType": "Binary", "contentType": "text/plain"}) is None
    identifiers = [{"use": "secondary", "system": "s", "value": "1"}, {"use": "official", "system": "t", "value": "2"}]
    obs = {"resourceType": "Observation", "identifier": identifiers}
    assert business_identifier(obs) == ("t", "2")


def test_registered_reader_refuses_without_quoting() -> None:
    patient = qualified()
    assert read_fhir_metadata(dump_json(patient))["patient_key"] == "DUI-1@ESMS-TEST"
    patient["identifier"][0]["system"] = "urn:oid:1.2.250.1.213.1.4.9"
    with pytest.raises(ValidationError) as info:
        read_fhir_metadata(dump_json(patient))
    assert info.value.location == "Patient.identifier[0].system" and INS not in str(info.value)
