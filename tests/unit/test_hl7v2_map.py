"""The `hl7v2_map` step: HL7 paths, every rule kind, conditions, tables, charsets, and its refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.content_types import ContentType
from hub.errors import MappingError
from hub.message import Message
from hub.pipeline import Pipeline
from mappings.hl7v2.er7 import Er7Message
from mappings.hl7v2.fieldmap import Hl7v2MapConfig, map_er7
from mappings.hl7v2.paths import ALL, Er7Edit, Hl7Path

registry.load_builtin()

ORU = "\r".join(
    [
        r"MSH|^~\&|SIL|LABO|DPI|CHU|20250301101500||ORU^R01^ORU_R01|C1|P|2.5|||||FRA|UNICODE UTF-8",
        "PID|1||1234567890123^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS~000003^^^CHU&1.2.3&ISO^PI"
        "||NOM^PRENOM^^^^^L||19790328|F",
        "PV1|1|I|CARDIO",
        "OBR|1|CMD1|LAB1|BIL^Bilan^L",
        "OBX|1|NM|GLU^Glucose^L||5.1|mmol/L|||||F",
        "NTE|1||first",
        "OBX|2|ST|COM^Comment^L||text||||||F",
        "NTE|2||second",
        "OBX|3|NM|K^Potassium^L||4.0|mmol/L|||||F",
    ]
) + "\r"


def run(rules: list[dict[str, Any]], body: str | bytes = ORU, **settings: Any) -> str:
    context = settings.pop("context", None)
    config = Hl7v2MapConfig.model_validate({"rules": rules, **settings}, context=context)
    out, _ = map_er7(body.encode() if isinstance(body, str) else body, config)
    return out.decode()


def seg(text: str, segment_id: str, n: int = 1) -> str:
    return [s for s in text.split("\r") if s.startswith(segment_id + "|")][n - 1]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("MSH-5", ("MSH", None, 5, None, None, None)),
        ("PID-3[2].1", ("PID", None, 3, 2, 1, None)),
        ("OBX[*]-5", ("OBX", ALL, 5, None, None, None)),
        ("PID-3[*].4.2", ("PID", None, 3, ALL, 4, 2)),
        ("NTE[2]", ("NTE", 2, None, None, None, None)),
    ],
)
def test_paths_parse(text: str, want: tuple[Any, ...]) -> None:
    p = Hl7Path.parse(text)
    assert (p.segment, p.occurrence, p.field, p.repetition, p.component, p.subcomponent) == want


@pytest.mark.parametrize("bad", ["PID3", "pid-3", "PID-0", "PID-3[0]", "PID-3.1.2.3", "MSH-2.1", "PID-3[x]"])
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"HL7 path|delimiters"):
        Hl7Path.parse(bad)


def test_reads_follow_the_message_delimiters() -> None:
    body = "MSH#$*!@#A#B#C#D#1##ADT$A01#X#P#2.5\rPID#1##111$$$AUTH$PI*222$$$INS!S!x$INS##NOM\r"
    edit = Er7Edit(Er7Message(body))
    assert edit.values(Hl7Path.parse("PID-3[2].1")) == ["222"]
    assert edit.values(Hl7Path.parse("PID-3[2].4")) == ["INS$x"]  # \S\ escape resolved with this message's `!`
    assert edit.values(Hl7Path.parse("PID-3[*].5")) == ["PI", "INS"]
    assert edit.values(Hl7Path.parse("MSH-9.2")) == ["A01"]
    out = run([{"set": "PID-5.2", "value": "A$B#C"}], body)
    assert out.split("\r")[1].endswith("##NOM$A!S!B!F!C")


def test_set_escapes_and_keeps_other_bytes() -> None:
    out = run([{"set": "MSH-5", "value": "PACS|1^2"}])
    assert seg(out, "MSH").split("|")[4] == r"PACS\F\1\S\2"
    assert out.split("\r")[1:] == ORU.split("\r")[1:]


def test_set_on_every_occurrence_with_a_condition_on_the_same_occurrence() -> None:
    out = run([{"set": "OBX[*]-11", "value": "C", "if": {"path": "OBX-2", "equals": "NM"}}])
    assert [seg(out, "OBX", n).split("|")[11] for n in (1, 2, 3)] == ["C", "F", "C"]


def test_conditions_on_other_segments_and_tests() -> None:
    rules = [
        {"set": "MSH-6", "value": "KITCHEN", "if": [{"path": "PV1-2", "in": ["I", "H"]}]},
        {"set": "MSH-3", "value": "X", "if": {"path": "PV1-3", "matches": "^CAR"}},
        {"set": "MSH-4", "value": "Y", "if": {"path": "ZZZ-1", "present": True}},
    ]
    fields = seg(run(rules), "MSH").split("|")
    assert (fields[2], fields[3], fields[5]) == ("X", "LABO", "KITCHEN")


def test_defaults_only_fill_empty_fields() -> None:
    out = run([{"set": "PV1-2", "value": "O", "if_empty": True}, {"set": "PV1-4", "value": "R", "if_empty": True}])
    assert seg(out, "PV1") == "PV1|1|I|CARDIO|R"


def test_copy_move_delete_repetitions() -> None:
    out = run(
        [
            {"copy": "PID-3[2]", "to": "PID-2"},
            {"move": "PID-3[1].1", "to": "PID-19"},
            {"delete": "PID-3[2]"},
            {"delete": "PID-8"},
        ]
    )
    f = seg(out, "PID").split("|")
    assert f[2] == "000003^^^CHU&1.2.3&ISO^PI"
    assert f[3] == "^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    assert f[8] == "" and f[19] == "1234567890123"


def test_reorder_repetitions_puts_pi_first_and_drops_others() -> None:
    out = run([{"reorder": "PID-3", "by": "5", "order": ["PI", "INS"]}])
    assert seg(out, "PID").split("|")[3].startswith("000003^^^CHU")
    out = run([{"reorder": "PID-3", "by": "5", "order": ["PI"], "drop_unlisted": True}])
    assert seg(out, "PID").split("|")[3] == "000003^^^CHU&1.2.3&ISO^PI"


def test_add_and_remove_segments() -> None:
    out = run(
        [
            {"add_segment": "ZPI", "after": "PID", "if": {"path": "ZPI", "present": False}},
            {"add_segment": "ZPI", "after": "PID", "if": {"path": "ZPI", "present": False}},
            {"set": "ZPI-2", "value": "x"},
            {"remove_segment": "NTE", "if": {"path": "NTE-1", "equals": "2"}},
            {"remove_segment": "OBX[3]"},
        ]
    )
    assert [s[:3] for s in out.split("\r") if s] == ["MSH", "PID", "ZPI", "PV1", "OBR", "OBX", "NTE", "OBX"]
    assert seg(out, "ZPI") == "ZPI||x"
    assert seg(out, "NTE") == "NTE|1||first"


def write_table(tmp_path: Path, text: str, name: str = "lab_loinc.csv") -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


TABLE = "local,loinc,label\nGLU,2345-7,Glucose [Mass/volume] in Serum or Plasma\nK,2823-3,Potassium\n"


def test_translate_through_a_csv_table(tmp_path: Path) -> None:
    write_table(tmp_path, TABLE)
    rules = [
        {"translate": "OBX[*]-3.1", "table": "lab", "to": {"OBX-3.1": "loinc", "OBX-3.2": "label"}, "on_miss": "keep"},
        {"set": "OBX[*]-3.3", "value": "LN", "if": {"path": "OBX-3.1", "matches": r"^\d+-\d$"}},
    ]
    out = run(rules, tables={"lab": "lab_loinc.csv"}, context={"route_dir": str(tmp_path)})
    assert seg(out, "OBX", 1).split("|")[3] == "2345-7^Glucose [Mass/volume] in Serum or Plasma^LN"
    assert seg(out, "OBX", 2).split("|")[3] == "COM^Comment^L"  # kept: not in the table
    assert seg(out, "OBX", 3).split("|")[3] == "2823-3^Potassium^LN"


def test_translate_in_place_default_column_and_default_value(tmp_path: Path) -> None:
    write_table(tmp_path, TABLE)
    ctx = {"route_dir": str(tmp_path)}
    out = run([{"translate": "OBX[*]-3.1", "table": "lab", "default": "UNK"}], tables={"lab": "lab_loinc.csv"},
              context=ctx)  # fmt: skip
    assert [seg(out, "OBX", n).split("|")[3].split("^")[0] for n in (1, 2, 3)] == ["2345-7", "UNK", "2823-3"]


def test_a_code_missing_from_the_table_rejects_naming_the_path_and_route(tmp_path: Path) -> None:
    write_table(tmp_path, TABLE)
    settings = {"tables": {"lab": "lab_loinc.csv"}, "rules": [{"translate": "OBX[*]-3.1", "table": "lab"}]}
    pipeline = Pipeline([("hl7v2_map", settings)], route="lab_to_loinc", route_dir=tmp_path)
    with pytest.raises(MappingError) as exc:
        pipeline.apply(Message.new(ORU.encode(), content_type=ContentType.HL7V2))
    assert "route lab_to_loinc" in exc.value.reason and "OBX[*]-3.1" in exc.value.reason
    assert "COM" not in exc.value.reason  # the code itself is not quoted


def test_required_paths_reject_when_absent() -> None:
    with pytest.raises(MappingError, match="ZPI"):
        run([{"copy": "PID-3[2]", "to": "ZPI-2", "required": True}])
    with pytest.raises(MappingError, match=r"PID-3\[3\] is empty"):
        run([{"copy": "PID-3[3]", "to": "PID-2", "required": True}])
    assert run([{"copy": "PID-3[3]", "to": "PID-2"}]) == ORU  # not required: skipped


def test_iso_8859_1_bytes_come_out_unchanged_and_new_values_in_that_charset() -> None:
    body = ORU.replace("UNICODE UTF-8", "8859/1").replace("NOM^PRENOM", "HÉLÈNE^ANAÏS").encode("latin-1")
    out = Hl7v2MapConfig.model_validate({"rules": [{"set": "PV1-3", "value": "MÉDECINE"}]})
    mapped, _ = map_er7(body, out)
    assert mapped == body.replace(b"CARDIO", "MÉDECINE".encode("latin-1"))


def test_a_value_the_charset_cannot_hold_is_refused() -> None:
    body = ORU.replace("UNICODE UTF-8", "8859/1").encode("latin-1")
    with pytest.raises(MappingError, match="MSH-18"):
        run([{"set": "PV1-3", "value": "€"}], body)


def test_changing_msh_updates_the_routing_metadata() -> None:
    pipeline = Pipeline([("hl7v2_map", {"rules": [{"set": "MSH-5", "value": "PACS"}]})])
    message = Message.new(ORU.encode(), content_type=ContentType.HL7V2, metadata={"receiving_app": "DPI"})
    assert pipeline.apply(message).metadata["receiving_app"] == "PACS"


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([{"set": "PID-3"}], "set: give `value`"),
        ([{"set": "PID-3", "delete": "PID-4", "value": "x"}], "exactly one operation"),
        ([{"set": "MSH-2", "value": "x"}], "delimiters"),
        ([{"copy": "PID-3"}], "target path"),
        ([{"set": "PID3", "value": "x"}], "not an HL7 path"),
        ([{"translate": "OBX-3.1", "table": "nope"}], "no table 'nope'"),
        ([{"remove_segment": "MSH"}], "stays first"),
        ([{"reorder": "PID-3.1", "by": "5", "order": ["PI"]}], "whole field"),
        ([{"set": "PID-3", "value": "x", "if": {"path": "PV1-2", "equals": "I", "present": True}}], "exactly one"),
    ],
)
def test_rule_errors_are_found_at_load(rules: list[dict[str, Any]], problem: str) -> None:
    with pytest.raises(PydanticValidationError, match=problem):
        Hl7v2MapConfig.model_validate({"rules": rules})


@pytest.mark.parametrize(
    ("csv", "problem"),
    [
        ("local,loinc\nGLU,1\nGLU,2\n", r"lab_loinc.csv:3: key 'GLU' is already"),
        ("local,loinc\nGLU,1,x\n", r"lab_loinc.csv:2: 3 cells"),
        ("local,\n", r"lab_loinc.csv:1: the first row"),
    ],
)
def test_table_errors_name_file_and_line(tmp_path: Path, csv: str, problem: str) -> None:
    write_table(tmp_path, csv)
    with pytest.raises(PydanticValidationError, match=problem):
        Hl7v2MapConfig.model_validate(
            {"tables": {"lab": "lab_loinc.csv"}, "rules": [{"translate": "OBX-3.1", "table": "lab"}]},
            context={"route_dir": str(tmp_path)},
        )


def test_unknown_table_column_is_found_at_load(tmp_path: Path) -> None:
    write_table(tmp_path, TABLE)
    with pytest.raises(PydanticValidationError, match="no column 'snomed'"):
        Hl7v2MapConfig.model_validate(
            {
                "tables": {"lab": "lab_loinc.csv"},
                "rules": [{"translate": "OBX-3.1", "table": "lab", "to": {"OBX-3.1": "snomed"}}],
            },
            context={"route_dir": str(tmp_path)},
        )
