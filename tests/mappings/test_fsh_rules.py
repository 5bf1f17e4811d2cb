"""The FSH rule extractor (``mappings.fhir.profiles.fsh``) on a small profile: each kind of rule it keeps, and
the rules it leaves out because they do not constrain instances."""

from __future__ import annotations

from pathlib import Path

from mappings.fhir.profiles.fsh import _parse, _rules

CANONICAL = "https://example.org/ig"
FSH = """\
Alias: $loinc = http://loinc.org
Alias: $VsAlias = https://example.org/aliased/ValueSet/vs

Profile: MyDocRef
Parent: DocumentReference
Id: my-docref
Title: "A title with // no comment"
Description: "Several
lines"
* ^status = #active
* insert SomeRuleSet
* identifier -> "XDSDocumentEntry.uniqueId"
* identifier ^slicing.discriminator[0].type = #value
* identifier ^slicing.discriminator[0].path = "system"
* identifier ^slicing.rules = #closed
* identifier ^short = "ignored"
* author ^type.aggregation = #contained
* author[device].reference ^type.code = "Reference"
* status MS
* status 1..1 MS
* subject 1..
* description ..0
* type from MyTypes (extensible)
* category from $VsAlias
* author only Reference(Practitioner or MyDevice) or Device
* context.related only MyOther
* content obeys inv-1 and inv-2
* identifier contains uid 1..1 and
    entry 0..*
* extension contains MyExt named myExt 0..1 MS
* type = $loinc#11502-2 "CR" (exactly)
* category = $loinc#11369-6
* docStatus = #final
* content.attachment.title = "Title"
* language = Canonical(SomeThing)
"""
NAMES = {
    "MyTypes": f"{CANONICAL}/ValueSet/my-types",
    "MyDevice": f"{CANONICAL}/StructureDefinition/my-device",
    "MyExt": f"{CANONICAL}/StructureDefinition/my-ext",
}


def test_each_rule_kind_becomes_its_data_and_the_rest_is_left_out(tmp_path: Path) -> None:
    source = tmp_path / "profile.fsh"
    source.write_text(FSH, encoding="utf-8")
    guide = _parse([source], CANONICAL)
    (entity,) = guide["entities"]
    assert (entity["kind"], entity["name"], entity["keys"]) == (
        "Profile",
        "MyDocRef",
        {"Parent": "DocumentReference", "Id": "my-docref"},
    )

    loinc = {"system": "http://loinc.org", "code": "11502-2"}
    assert _rules(entity, guide, NAMES) == [
        {"path": "identifier", "discriminator": {"index": 0, "type": "value"}},
        {"path": "identifier", "discriminator": {"index": 0, "path": "system"}},
        {"path": "identifier", "slicing_rules": "closed"},
        {"path": "author", "aggregation": "contained"},
        {"path": "author[device].reference", "type_code": "Reference"},
        {"path": "status", "min": 1, "max": "1"},
        {"path": "subject", "min": 1, "max": "*"},
        {"path": "description", "min": 0, "max": "0"},
        {"path": "type", "binding": {"strength": "extensible", "valueSet": NAMES["MyTypes"]}},
        {
            "path": "category",
            "binding": {"strength": "required", "valueSet": "https://example.org/aliased/ValueSet/vs"},
        },
        {
            "path": "author",
            "only": [
                {
                    "code": "Reference",
                    "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Practitioner", NAMES["MyDevice"]],
                },
                {"profile": "http://hl7.org/fhir/StructureDefinition/Device"},
            ],
        },
        {"path": "context.related", "only": [{"profile": "http://hl7.org/fhir/StructureDefinition/MyOther"}]},
        {"path": "content", "obeys": ["inv-1", "inv-2"]},
        {
            "path": "identifier",
            "slices": [{"name": "uid", "min": 1, "max": "1"}, {"name": "entry", "min": 0, "max": "*"}],
        },
        {"path": "extension", "slices": [{"name": "myExt", "min": 0, "max": "1", "extension": NAMES["MyExt"]}]},
        {"path": "type", "fixed": loinc},
        {"path": "category", "pattern": {"system": "http://loinc.org", "code": "11369-6"}},
        {"path": "docStatus", "fixed": "final"},
        {"path": "content.attachment.title", "fixed": "Title"},
    ]
