"""The `fhir_map` step: FHIRPath-selected objects set, unset, removed; conditions; refusals; load-time checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.errors import MappingError, ParseError
from hub.message import Message
from hub.pipeline import Pipeline
from tests.conftest import ROOT

registry.load_builtin()
FHIR = "application/fhir+json"
BUNDLE = (ROOT / "samples" / "fhir_dui_bundle.json").read_bytes()
PATIENT = "Bundle.entry.resource.ofType(Patient)"


def run(rules: list[dict[str, Any]], body: bytes = BUNDLE) -> dict[str, Any]:
    out = Pipeline([("fhir_map", {"rules": rules})], route="r").apply(Message.new(body, content_type=FHIR))
    return json.loads(out.body)


def patient(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient")


def test_set_defaults_and_unset() -> None:
    doc = run(
        [
            {"select": PATIENT, "set": {"active": True, "gender": "other"}},
            {"select": PATIENT, "set": {"gender": "female", "language": "fr-FR"}, "if_absent": True},
            {"select": PATIENT, "unset": ["birthDate"]},
        ]
    )
    p = patient(doc)
    assert (p["active"], p["gender"], p["language"]) == (True, "other", "fr-FR")
    assert "birthDate" not in p
    before = json.loads(BUNDLE)
    assert [e for e in doc["entry"] if e["resource"]["resourceType"] != "Patient"] == [
        e for e in before["entry"] if e["resource"]["resourceType"] != "Patient"
    ]


def test_remove_selected_objects_and_conditions() -> None:
    pi = f"{PATIENT}.identifier.where(type.coding.code = 'PI')"
    untouched = run([{"select": pi, "remove": True, "if": {"path": "Bundle.type", "equals": "batch"}}])
    assert len(patient(untouched)["identifier"]) == 1
    doc = run([{"select": pi, "remove": True, "if": {"path": "Bundle.type", "equals": "transaction"}}])
    assert patient(doc)["identifier"] == []


def test_required_selection_and_bad_bodies_refuse() -> None:
    with pytest.raises(MappingError, match=r"^route r, step fhir_map: fhir_map: rules.0: .*ofType\(Device\) selects"):
        run([{"select": "Bundle.entry.resource.ofType(Device)", "set": {"x": 1}, "required": True}])
    with pytest.raises(ParseError):
        run([{"select": PATIENT, "remove": True}], b"{not json")


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"select": PATIENT}, "exactly one of set, unset, remove"),
        ({"select": PATIENT, "set": {"a": 1}, "remove": True}, "exactly one of"),
        ({"select": "Patient.name.(", "remove": True}, "FHIRPath syntax error"),
        ({"select": PATIENT, "remove": True, "if": {"path": "Bundle..type", "equals": "x"}}, "FHIRPath syntax error"),
    ],
)
def test_rule_errors_are_found_at_load(rule: dict[str, Any], problem: str) -> None:
    comp = registry.get("step", "fhir_map")
    assert comp is not None
    with pytest.raises(PydanticValidationError, match=problem):
        comp.config.model_validate({"rules": [rule]})
