"""One Bundle, one patient: the ways a resource can name another patient, and the ways it names the right one."""

from __future__ import annotations

from typing import Any

import pytest

from mappings.fhir.patient_consistency import patient_consistency_issues
from tests.unit.test_fhir_validate import INS, qualified

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.10"


def bundle(*subjects: dict[str, Any], patient: bool = True) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    if patient:
        entries.append({"fullUrl": "urn:uuid:p1", "resource": {**qualified(), "id": "p1"}})
    for i, subject in enumerate(subjects):
        entries.append({"fullUrl": f"urn:uuid:r{i}", "resource": {"resourceType": "Observation", "subject": subject}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.mark.parametrize(
    "subject",
    [{"reference": "urn:uuid:p1"}, {"reference": "Patient/p1"}, {"identifier": {"system": INS_SYSTEM, "value": INS}},
     {"reference": "Group/g1"}],
)  # fmt: skip
def test_references_to_the_bundles_patient_pass(subject: dict[str, Any]) -> None:
    assert patient_consistency_issues(bundle(subject)) == []


@pytest.mark.parametrize(
    "subject",
    [{"reference": "urn:uuid:p2"}, {"reference": "Patient/p2"}, {"identifier": {"system": INS_SYSTEM, "value": "1"}},
     {"display": "somebody"}],
)  # fmt: skip
def test_references_to_anyone_else_are_refused(subject: dict[str, Any]) -> None:
    [issue] = patient_consistency_issues(bundle(subject))
    assert (issue.code, issue.expression) == ("business-rule", "Bundle.entry[1].resource.subject")
    assert INS not in str(issue)


def test_without_a_patient_the_references_must_agree() -> None:
    same = {"identifier": {"system": INS_SYSTEM, "value": INS}}
    assert patient_consistency_issues(bundle(same, same, patient=False)) == []
    issues = patient_consistency_issues(bundle(same, {"reference": "Patient/x"}, patient=False))
    assert [i.expression for i in issues] == ["Bundle.entry[1].resource.subject"]


def test_the_same_patient_twice_is_one_patient_two_are_refused() -> None:
    doc = bundle({"reference": "urn:uuid:p1"})
    doc["entry"].append({"fullUrl": "urn:uuid:p1-again", "resource": qualified()})
    assert patient_consistency_issues(doc) == []
    other = qualified()
    other["identifier"] = [{"system": INS_SYSTEM, "value": "100000000000001"}]
    doc["entry"][-1] = {"fullUrl": "urn:uuid:p2", "resource": other}
    [issue] = patient_consistency_issues(doc)
    assert issue.expression == "Bundle.entry[2].resource"
