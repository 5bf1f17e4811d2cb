"""Golden files for the FHIR mappings, the resources they produce, and the cases they refuse.

Each folder of ``tests/mappings/fhir_cases`` holds a synthetic input (test INS
root 1.2.250.1.213.1.4.10, example arcs 2.999; PAT-TROIS is the ANS test
patient), optional ``settings.json`` (the step's settings, as a route gives
them) and ``metadata.json`` (the inbound message's metadata), and the
expected output: ``expected.json`` (FHIR, compared as JSON) or
``expected.hl7`` (ER7, segments one per line), plus
``expected_metadata.json``. The folder prefix names the step:

=============  ==========================
``adt_``       ``v2_adt_to_fhir_patient``
``oru_``       ``v2_oru_to_fhir_report``
``cda_``       ``cda_to_mhd_bundle``
``patient_``   ``fhir_patient_to_v2_adt``
=============  ==========================

Regenerate after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/mappings/test_fhir_golden.py`` and review the diff.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub import registry
from hub.content_types import ContentType
from hub.errors import MappingError, MessageError
from hub.message import Message
from mappings.fhir.identifiers import patient_key_of
from mappings.fhir.validate import validate_fhir
from mappings.hl7v2.er7 import read_header
from mappings.ins import read_identity_feed

CASES = Path(__file__).resolve().parent / "fhir_cases"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
STEPS = {
    "adt": ("v2_adt_to_fhir_patient", "input.hl7", ContentType.HL7V2),
    "oru": ("v2_oru_to_fhir_report", "input.hl7", ContentType.HL7V2),
    "cda": ("cda_to_mhd_bundle", "input.xml", ContentType.CDA),
    "patient": ("fhir_patient_to_v2_adt", "input.json", ContentType.FHIR),
}
RECEIVED = dt.datetime(2025, 3, 14, 9, 30, tzinfo=dt.UTC)
MESSAGE_ID = "01959bd2-a3c0-7000-8000-000000000001"


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir())


def inbound(folder: Path) -> Message:
    """The message as it would be stored: fixed id, correlation and receipt time, so outputs are stable."""
    _, input_name, content_type = STEPS[folder.name.split("_")[0]]
    meta_file = folder / "metadata.json"
    metadata = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return Message(
        id=MESSAGE_ID,
        content_type=content_type,
        body=(folder / input_name).read_bytes(),
        metadata=MappingProxyType(metadata),
        received_at=RECEIVED,
        correlation_id=MESSAGE_ID,
    )


def run(folder: Path, message: Message | None = None) -> Message:
    """Run the registered step (looked up by name, as a route would) with the case's settings."""
    step, _, content_type = STEPS[folder.name.split("_")[0]]
    component = registry.get("step", step)
    assert component is not None and content_type in component.consumes
    settings_file = folder / "settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    out = component.factory(message or inbound(folder), config=component.config.model_validate(settings))
    assert out.content_type == component.produces
    return out


def produced_metadata(out: Message, original: Message) -> dict[str, str]:
    return {k: v for k, v in out.metadata.items() if original.metadata.get(k) != v}


def resources(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["resourceType"] != "Bundle":
        return [doc]
    return [doc, *(e["resource"] for e in doc.get("entry", []))]


# ------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("name", case_names())
def test_golden_case(name: str) -> None:
    folder = CASES / name
    original = inbound(folder)
    out = run(folder, original)
    assert out.parent_id == original.id and out.correlation_id == original.correlation_id
    metadata = produced_metadata(out, original)
    expected_meta = folder / "expected_metadata.json"
    if out.content_type == ContentType.FHIR:
        expected, produced = folder / "expected.json", json.loads(out.body)
        if UPDATE:
            expected.write_text(json.dumps(produced, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        assert produced == json.loads(expected.read_text(encoding="utf-8"))
    else:
        expected_hl7 = folder / "expected.hl7"
        text = out.body.decode("utf-8").replace("\r", "\n")
        if UPDATE:
            expected_hl7.write_text(text, encoding="utf-8")
        assert text == expected_hl7.read_text(encoding="utf-8")
    if UPDATE:
        expected_meta.write_text(json.dumps(metadata, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    assert metadata == json.loads(expected_meta.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", [n for n in case_names() if not n.startswith("patient_")])
def test_every_produced_resource_validates(name: str) -> None:
    """fhir.resources (R4B models, R4 content) takes every resource, and the FR Core INS rules hold."""
    doc = json.loads(run(CASES / name).body)
    for resource in resources(doc):
        model = get_fhir_model_class(resource["resourceType"])
        assert model.__module__.startswith("fhir.resources.R4B.")
        model.model_validate(resource)
    assert [str(i) for i in validate_fhir(doc, check_attachments=True) if i.is_error] == []


@pytest.mark.parametrize("name", case_names())
def test_same_message_same_bytes(name: str) -> None:
    assert run(CASES / name).body == run(CASES / name).body


@pytest.mark.parametrize("name", [n for n in case_names() if n.startswith(("adt_", "oru_"))])
def test_patient_key_matches_hl7v2(name: str) -> None:
    """The FHIR Patient's key is the key the MLLP listener gave the HL7 v2 message (IPP@CX-4.1)."""
    folder = CASES / name
    _, header = read_header((folder / "input.hl7").read_bytes())
    doc = json.loads(run(folder).body)
    patient = next(r for r in resources(doc) if r["resourceType"] == "Patient")
    assert patient_key_of(patient) == header.patient_key != ""
    assert run(folder).metadata["patient_key"] == header.patient_key


@pytest.mark.parametrize("name", [n for n in case_names() if n.startswith("patient_")])
def test_adt_produced_reads_back_as_pam_fr(name: str) -> None:
    out = run(CASES / name)
    feed = read_identity_feed(out.body)
    _, header = read_header(out.body)
    assert header.version == "2.5" and header.patient_key == out.metadata["patient_key"]
    assert feed.event == out.metadata["message_type"].split("^")[1]


def test_round_trip_adt_fhir_adt_keeps_the_identity() -> None:
    adt = CASES / "adt_a31_qualified" / "input.hl7"
    fhir = run(CASES / "adt_a31_qualified")
    back = registry.get("step", "fhir_patient_to_v2_adt").factory(fhir)  # type: ignore[union-attr]
    before, after = read_identity_feed(adt.read_bytes()), read_identity_feed(back.body)
    for field in ("ins", "status", "birth_name", "first_birth_given_name", "birth_given_names", "birth_date", "sex",
                  "birthplace_code"):  # fmt: skip
        assert getattr(after, field) == getattr(before, field), field
    assert [p.patient_key for p in after.local_ids] == [p.patient_key for p in before.local_ids]
    assert after.event == "A31"  # a conditional update (PUT) is an update


# ------------------------------------------------------------------------------------- what it says


def test_adt_status_and_ins_follow_pam_fr() -> None:
    provisional = json.loads(run(CASES / "adt_a28_provisional").body)
    patient = provisional["entry"][0]["resource"]
    # PID-32 PROV: the INS sent in PID-3 is not integrated (PAM FR §6.6.15).
    assert all("INS" not in str(i.get("type")) for i in patient["identifier"])
    status = patient["extension"][0]["extension"]
    assert (
        status[0]["valueCoding"]["code"] == "PROV" and status[1]["valueCodeableConcept"]["coding"][0]["code"] == "HOMA"
    )
    assert patient["birthDate"] == "1985-07"  # an incomplete PID-7 stays incomplete in FHIR
    assert [n["use"] for n in patient["name"]] == ["official", "usual"]
    qualified = json.loads(run(CASES / "adt_a31_qualified").body)["entry"][0]["resource"]
    assert qualified["extension"][0]["extension"][0]["valueCoding"]["code"] == "QUAL"
    assert qualified["identifier"][0]["system"] == "urn:oid:1.2.250.1.213.1.4.10"


def test_fr_core_2_1_writes_vali() -> None:
    component = registry.get("step", "v2_adt_to_fhir_patient")
    assert component is not None
    out = component.factory(inbound(CASES / "adt_a31_qualified"), config=component.config(fr_core="2.1"))
    status = json.loads(out.body)["entry"][0]["resource"]["extension"][0]["extension"][0]["valueCoding"]
    assert status == {"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445", "code": "VALI"}


def test_admission_gives_an_encounter() -> None:
    doc = json.loads(run(CASES / "adt_a01_admission").body)
    encounter = doc["entry"][1]["resource"]
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "IMP"
    assert encounter["subject"]["reference"] == doc["entry"][0]["fullUrl"]
    assert encounter["period"]["start"] == "2024-03-06T11:00:00+01:00"  # ZBE-2, in local time
    assert encounter["serviceProvider"]["identifier"]["value"] == "6268"
    assert doc["entry"][1]["request"]["method"] == "PUT"


def test_lab_results_use_loinc_and_ucum() -> None:
    doc = json.loads(run(CASES / "oru_chemistry").body)
    observations = [r for r in resources(doc) if r["resourceType"] == "Observation"]
    assert len(observations) == 4  # the MetaDMPMSS flags are not results
    glucose = observations[0]
    assert glucose["code"]["coding"][0] == {"system": "http://loinc.org", "code": "2345-7",
                                            "display": "Glucose [Masse/Volume] Sérum/Plasma"}  # fmt: skip
    assert glucose["valueQuantity"] == {"value": 1.02, "unit": "g/L", "system": "http://unitsofmeasure.org",
                                        "code": "g/L"}  # fmt: skip
    creatinine = observations[1]["valueQuantity"]
    assert creatinine["value"] == 8.5 and creatinine["code"] == "mg/L"  # "8,5 mg/l" as labs write it
    report = next(r for r in resources(doc) if r["resourceType"] == "DiagnosticReport")
    assert len(report["result"]) == 4 and report["status"] == "final"
    specimen = next(r for r in resources(doc) if r["resourceType"] == "Specimen")
    assert specimen["type"]["coding"][0]["code"] == "SER"
    assert all(o["specimen"] == report["specimen"][0] for o in observations)


def test_microbiology_values_notes_and_flags() -> None:
    doc = json.loads(run(CASES / "oru_microbiology").body)
    observations = [r for r in resources(doc) if r["resourceType"] == "Observation"]
    leucocytes, gram, culture = observations
    assert leucocytes["interpretation"][0]["coding"][0]["code"] == "H"
    assert leucocytes["referenceRange"][0]["high"]["value"] == 10
    assert gram["valueString"] == "Bacilles à Gram négatif"
    assert culture["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert culture["note"][0]["text"] == "Culture > 10^5 UFC/mL.\nAntibiogramme à suivre."


def test_corrected_result_replaces_by_conditional_update() -> None:
    body = (CASES / "oru_chemistry" / "input.hl7").read_bytes().replace(b"|CH|F|", b"|CH|C|")
    out = registry.get("step", "v2_oru_to_fhir_report").factory(  # type: ignore[union-attr]
        Message.new(body, content_type=ContentType.HL7V2)
    )
    doc = json.loads(out.body)
    report_entry = next(e for e in doc["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report_entry["resource"]["status"] == "corrected"
    assert report_entry["request"]["url"].startswith("DiagnosticReport?identifier=")
    patient_entry = doc["entry"][0]
    assert patient_entry["request"]["method"] == "POST" and "ifNoneExist" in patient_entry["request"]


def test_mhd_bundle_carries_the_document() -> None:
    folder = CASES / "cda_crbio_mhd"
    doc = json.loads(run(folder).body)
    kinds = [e["resource"]["resourceType"] for e in doc["entry"]]
    assert kinds == ["List", "DocumentReference", "Binary", "Patient"]
    submission, document, binary, patient = (e["resource"] for e in doc["entry"])
    assert base64.b64decode(binary["data"]) == (folder / "input.xml").read_bytes()
    assert document["content"][0]["attachment"]["url"] == doc["entry"][2]["fullUrl"]
    assert submission["entry"][0]["item"]["reference"] == doc["entry"][1]["fullUrl"]
    assert document["subject"]["reference"] == submission["subject"]["reference"] == doc["entry"][3]["fullUrl"]
    assert document["content"][0]["format"]["code"] == "urn:ihe:lab:xd-lab:2008"
    assert submission["extension"][0]["valueIdentifier"]["value"] == "urn:oid:2.999.9.1"
    assert patient["identifier"][0]["value"] == "285077511234511"
    minimal = json.loads(run(CASES / "cda_minimal_header_mhd").body)
    master = minimal["entry"][1]["resource"]["masterIdentifier"]
    assert master == {"use": "usual", "system": "urn:oid:1.2.3.4.5.6.7.8.100.1", "value": "DOC-0001-V1"}


def test_adt_from_fhir_escapes_and_maps_statuses() -> None:
    text = run(CASES / "patient_update_to_a31").body.decode()
    pid = next(s for s in text.split("\r") if s.startswith("PID"))
    fields = pid.split("|")
    assert fields[3] == "IPP0700^^^HOPTEST&2.999.2.2&ISO^PI"  # no INS: the identity is provisional
    assert fields[32] == "PROV~HOMA"
    assert "Les Pins \\T\\ Chênes^Bât. B\\F\\2^PARIS" in fields[11]
    created = run(CASES / "patient_create_to_a28").body.decode()
    assert "ADT^A28^ADT_A05" in created
    assert "279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS" in created


# --------------------------------------------------------------------------------------- refusals

SECRETS = ("279035121518989", "PAT-TROIS", "DOMINIQUE", "19790328", "285077511234511", "TESTCHIMIE", "IPP0001")


def refused(step: str, body: bytes, content_type: str = ContentType.HL7V2) -> MessageError:
    component = registry.get("step", step)
    assert component is not None
    settings = CASES / "cda_crbio_mhd" / "settings.json" if step == "cda_to_mhd_bundle" else None
    config = component.config.model_validate(json.loads(settings.read_text())) if settings else None
    with pytest.raises(MessageError) as info:
        component.factory(Message.new(body, content_type=content_type), config=config)
    error = info.value
    assert not any(s in f"{error} {error.location}" for s in SECRETS), str(error)
    return error


def a31() -> str:
    return (CASES / "adt_a31_qualified" / "input.hl7").read_text()


def chemistry() -> str:
    return (CASES / "oru_chemistry" / "input.hl7").read_text()


@pytest.mark.parametrize(
    ("case", "change", "location"),
    [
        ("INS without birthplace", lambda t: t.replace("^^DOMPREMY^^^^BDL^^51215", ""), "PID^1^11"),
        ("INS without the given-name list", lambda t: t.replace("DOMINIQUE^DOMINIQUE^", "DOMINIQUE^^"), "PID^1^5"),
        ("no PI identifier", lambda t: t.replace("^PI~", "^AN~"), "PID^1^3"),
        ("PI without authority", lambda t: t.replace("CHU-X&000897406&N^PI", "^PI"), "PID^1^3^1^4"),
        ("sex outside PAM FR", lambda t: t.replace("|19790328|F|", "|19790328|X|"), "PID^1^8"),
        ("bad birth date", lambda t: t.replace("|19790328|", "|19791328|"), "PID^1^7"),
    ],
)
def test_adt_refusals(case: str, change: Any, location: str) -> None:
    error = refused("v2_adt_to_fhir_patient", change(a31()).encode())
    assert isinstance(error, MappingError) and error.location == location, case


def test_not_an_adt_is_refused() -> None:
    assert refused("v2_adt_to_fhir_patient", chemistry().encode()).location == "MSH^1^9"
    assert refused("v2_oru_to_fhir_report", a31().encode()).location == "MSH^1^9"


@pytest.mark.parametrize(
    ("change", "location"),
    [
        (lambda t: t.replace("||1.02|g/L", "||un|g/L"), "OBX^1^5"),
        (lambda t: t.replace("OBX|3|NM|", "OBX|3|RP|"), "OBX^3^2"),
        (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("OBR")) + "\n", "OBX^1^1"),
        (lambda t: t.replace("OBR|1|PLACER-1^PRESCRIPTEUR|FILLER-1^LABO-TEST|", "OBR|1|||"), "OBR^1^3"),
        (lambda t: t.replace("OBX|1|NM|", "OBX|1|ED|").replace("|1.02|g/L", "|^AP^RTF^Base64^e30=|g/L"), "OBX^1^5"),
    ],
)
def test_oru_refusals(change: Any, location: str) -> None:
    error = refused("v2_oru_to_fhir_report", change(chemistry()).encode())
    assert isinstance(error, MappingError) and error.location == location


def test_oru_pdf_copy_becomes_presented_form() -> None:
    pdf = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
    body = chemistry().replace("SPM|", f"OBX|5|ED|11502-2^CR^LN||^AP^PDF^Base64^{pdf}||||||F\nSPM|").encode()
    out = registry.get("step", "v2_oru_to_fhir_report").factory(  # type: ignore[union-attr]
        Message.new(body, content_type=ContentType.HL7V2)
    )
    report = next(
        e["resource"] for e in json.loads(out.body)["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    assert base64.b64decode(report["presentedForm"][0]["data"]) == b"%PDF-1.4\n%%EOF\n"


def test_cda_refusals() -> None:
    cda = (CASES / "cda_crbio_mhd" / "input.xml").read_bytes()
    no_id = cda.replace(b'<id root="2.999.1.1.2916569287464094975"/>', b"")
    assert refused("cda_to_mhd_bundle", no_id, ContentType.CDA).location == "/ClinicalDocument/id"
    no_county = cda.replace(b"<county>75112</county>", b"")
    error = refused("cda_to_mhd_bundle", no_county, ContentType.CDA)
    assert error.location.endswith("birthplace/place/addr/county")
    assert refused("cda_to_mhd_bundle", b"<html/>", ContentType.CDA).__class__.__name__ == "ParseError"


def test_patient_to_adt_refusals() -> None:
    patient = json.loads((CASES / "patient_create_to_a28" / "input.json").read_text())
    patient["identifier"] = patient["identifier"][:1]
    error = refused("fhir_patient_to_v2_adt", json.dumps(patient).encode(), ContentType.FHIR)
    assert error.location == "Patient.identifier"
    two = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}, {"resource": patient}]}
    assert refused("fhir_patient_to_v2_adt", json.dumps(two).encode(), ContentType.FHIR).location == "Bundle.entry"
    assert refused("fhir_patient_to_v2_adt", b"[]", ContentType.FHIR).__class__.__name__ == "ParseError"


def test_steps_describe_their_settings() -> None:
    for name in ("v2_adt_to_fhir_patient", "v2_oru_to_fhir_report", "cda_to_mhd_bundle", "fhir_patient_to_v2_adt"):
        component = registry.get("step", name)
        assert component is not None and component.summary
        schema = component.config.model_json_schema()
        assert all("description" in p for p in schema["properties"].values()), name


def test_masking_flags_drive_the_fhir_security_labels() -> None:
    folder = CASES / "cda_crbio_mhd"
    base = inbound(folder)
    hidden = Message(
        id=base.id,
        content_type=base.content_type,
        body=base.body,
        metadata=MappingProxyType({**base.metadata, "mask_ps": "Y", "invisible_patient": "Y"}),
        received_at=base.received_at,
        correlation_id=base.correlation_id,
    )
    document = json.loads(run(folder, hidden).body)["entry"][1]["resource"]
    tre_a07 = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
    labels = [(c["system"], c["code"]) for label in document["securityLabel"] for c in label["coding"]]
    assert labels[1:] == [(tre_a07, "MASQUE_PS"), (tre_a07, "INVISIBLE_PATIENT")]
    assert labels[0][1] in ("N", "R", "V")
    # A flag that cannot be honoured stops the document: never published visible.
    broken = Message(
        id=base.id,
        content_type=base.content_type,
        body=base.body,
        metadata=MappingProxyType({**base.metadata, "invisible_patient": "maybe"}),
        received_at=base.received_at,
        correlation_id=base.correlation_id,
    )
    with pytest.raises(MappingError, match="invisible_patient"):
        run(folder, broken)
