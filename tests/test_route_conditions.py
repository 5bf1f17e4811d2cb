"""Route filters (`when:`): metadata tests, content tests (HL7 path, FHIRPath, XPath), `hub check` errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub import registry
from hub.conditions import RouteFilter
from hub.config import RouteConfig, load_config
from hub.content_types import ContentType
from hub.errors import ConfigError
from hub.message import Message
from hub.pipeline import route_message
from mappings.hl7v2.reader import read_hl7v2_metadata
from tests.conftest import ROOT
from tests.hubkit import FAST_RETRY, MllpClient, adt, mllp_port, running_hub, running_peer, wait_until, write_config

registry.load_builtin()

FHIR = "application/fhir+json"
CDA = "application/cda+xml"


def hl7(body: bytes) -> Message:
    return Message.new(body, content_type=ContentType.HL7V2, metadata={**read_hl7v2_metadata(body), "endpoint": "in"})


def holds(when: dict[str, Any], message: Message) -> bool:
    compiled = RouteFilter(when)
    assert compiled.problems == []
    return compiled.matches(message, {})


def test_metadata_tests() -> None:
    m = hl7(adt("C1"))
    assert holds({"message_type": "ADT^A01"}, m)
    assert holds({"message_type": ["ADT^A04", "ADT^A01"], "sending_app": {"matches": "^GA"}}, m)
    assert not holds({"message_type": ["ADT^A04"]}, m)
    assert holds({"patient_key": {"present": True}, "hl7_version": {"not_in": ["2.3"]}}, m)
    assert not holds({"ins": {"present": True}}, m)
    assert holds({"ins": {"present": False}, "content_type": ContentType.HL7V2}, m)


def test_hl7_path_conditions_read_the_body() -> None:
    inpatient, outpatient = hl7(adt("C1")), hl7(adt("C2").replace(b"PV1|1|I", b"PV1|1|O"))
    assert holds({"hl7": {"PV1-2": "I"}}, inpatient)
    assert not holds({"hl7": {"PV1-2": "I"}}, outpatient)
    assert holds({"hl7": {"PID-3[*].5": "PI", "PID-5.1": {"matches": "^TEST"}}}, inpatient)
    assert not holds({"hl7": {"ZPI-1": {"present": True}}}, inpatient)
    oru = hl7((ROOT / "samples" / "oru_r01.hl7").read_bytes())
    assert holds({"hl7": {"OBX[*]-3.1": "2571-8"}}, oru)  # any occurrence
    assert not holds({"hl7": {"OBX-3.1": "2571-8"}}, oru)  # the first only


def test_content_conditions_parse_the_body_once_for_all_routes() -> None:
    routes = [
        RouteConfig.model_validate({"route": f"r{n}", "from": "in", "when": w, "to": [{"destination": "out"}]})
        for n, w in enumerate([{"hl7": {"PV1-2": "I"}}, {"hl7": {"PV1-2": "O"}}, {"hl7": {"PID-8": "F"}}])
    ]
    cache: dict[str, Any] = {}
    m = hl7(adt("C1"))
    assert [r.route for r in routes if r.matches("in", m, cache)] == ["r0", "r2"]
    assert list(cache) == ["hl7"]
    assert [d.route for d in route_message(routes, "in", m)] == ["r0", "r2"]


def test_fhirpath_and_xpath_conditions() -> None:
    bundle = Message.new((ROOT / "samples" / "fhir_dui_bundle.json").read_bytes(), content_type=FHIR)
    assert holds({"fhirpath": {"Bundle.entry.resource.ofType(Patient).gender": "female"}}, bundle)
    assert holds({"fhirpath": {"Bundle.entry.resource.ofType(Patient).exists()": "true"}}, bundle)
    assert not holds({"fhirpath": {"Bundle.entry.resource.ofType(Patient).gender": "male"}}, bundle)
    cda = Message.new((ROOT / "tests" / "data" / "cda" / "minimal_header.xml").read_bytes(), content_type=CDA)
    assert holds({"xpath": {"/cda:ClinicalDocument/cda:code/@code": "11502-2"}}, cda)
    assert holds({"xpath": {"count(//cda:confidentialityCode)": "1"}}, cda)
    assert not holds({"xpath": {"/cda:ClinicalDocument/cda:code/@code": "11488-4"}}, cda)
    # A content test on another format selects nothing, and hostile bodies never raise.
    assert not holds({"hl7": {"PV1-2": {"present": True}}}, bundle)
    assert not holds({"fhirpath": {"Patient.id": {"present": True}}}, Message.new(b"{not json", content_type=FHIR))
    assert not holds({"xpath": {"//x": {"present": True}}}, Message.new(b"<!DOCTYPE x []><x/>", content_type=CDA))
    assert not holds({"hl7": {"PV1-2": {"present": True}}}, Message.new(b"\x00garbage", content_type=ContentType.HL7V2))


def test_the_documented_metadata_keys_of_readers_and_checks_are_known() -> None:
    """The keys modules document (a ``key`` at the start of a docstring table row) may be used in `when:`."""
    import re

    from hub.conditions import METADATA_KEYS
    from mappings.cda import hl7v2_documents
    from mappings.fhir import reader

    documented = set()
    for module in (hl7v2_documents, reader):
        documented |= set(re.findall(r"^``([a-z_]+)``\s", module.__doc__ or "", re.MULTILINE))
    assert "dest_dmp" in documented
    assert documented - set(METADATA_KEYS) == set()
    header_keys = set(read_hl7v2_metadata((ROOT / "samples" / "adt_a01.hl7").read_bytes()))
    assert header_keys - set(METADATA_KEYS) == set()


BASE = """\
listeners:
  in: {type: mllp, listen: 127.0.0.1:0}
endpoints:
  out: {type: mllp, endpoint: 127.0.0.1:1}
routes: [routes/*.yaml]
"""


def check(tmp_path: Path, route: str, files: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "routes").mkdir(exist_ok=True)
    (tmp_path / "hub.yaml").write_text(BASE)
    (tmp_path / "routes" / "r.yaml").write_text(route)
    for name, text in (files or {}).items():
        (tmp_path / "routes" / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "hub.yaml")
    return info.value.problems


def test_unknown_metadata_key_is_an_error_with_file_line_and_suggestion(tmp_path: Path) -> None:
    route = "route: r\nfrom: in\nwhen:\n  message_type: ADT^A01\n  sending_ap: GAM\nto:\n  - destination: out\n"
    [problem] = check(tmp_path, route)
    assert problem == (
        f"{tmp_path}/routes/r.yaml:5: when.sending_ap: unknown metadata key 'sending_ap'; did you mean 'sending_app'?"
    )


@pytest.mark.parametrize(
    ("when", "line", "text"),
    [
        ("  sending_app: {matches: '(['}", 4, "when.sending_app: invalid regular expression"),
        ("  sending_app: {equals: A, present: true}", 4, "when.sending_app: give exactly one of"),
        ("  hl7:\n    PV1-2: I\n    PV1_2: I", 6, "when.hl7.PV1_2: hl7: 'PV1_2' is not an HL7 path"),
        ("  fhirpath:\n    'Patient.name.(': x", 5, "when.fhirpath.Patient.name.(: fhirpath: FHIRPath syntax error"),
        ("  xpath:\n    '//cda:code[': x", 5, "when.xpath.//cda:code[: xpath: XPath syntax error"),
        ("  hl7: PV1-2", 4, "when.hl7: hl7: give {path: test} entries"),
    ],
)
def test_bad_conditions_are_reported_with_file_and_line(tmp_path: Path, when: str, line: int, text: str) -> None:
    route = f"route: r\nfrom: in\nwhen:\n{when}\nto:\n  - destination: out\n"
    [problem] = check(tmp_path, route)
    assert problem.startswith(f"{tmp_path}/routes/r.yaml:{line}: {text}"), problem


def test_mapping_rule_and_table_errors_are_reported_with_file_and_line(tmp_path: Path) -> None:
    route = """\
route: r
from: in
steps:
  - hl7v2_map:
      tables: {lab: lab.csv}
      rules:
        - translate: OBX[*]-3.1
          table: lab
          to: {OBX-3.1: snomed}
        - set: PID-3
to:
  - destination: out
"""
    got = check(tmp_path, route, {"lab.csv": "local,loinc\nGLU,2345-7\nGLU,2345-7\n"})
    rfile = f"{tmp_path}/routes/r.yaml"
    assert any(p.startswith(f"{rfile}:10: steps.0.hl7v2_map.rules.1: Value error, set: give `value`") for p in got)
    assert any(
        p.startswith(f"{rfile}:5: steps.0.hl7v2_map.tables: Value error, lab: ")
        and f"{tmp_path}/routes/lab.csv:3: key 'GLU' is already on an earlier row" in p
        for p in got
    ), got
    (tmp_path / "routes" / "lab.csv").write_text("local,loinc\nGLU,2345-7\n")
    [problem] = check(tmp_path, route.replace("        - set: PID-3\n", ""))
    want = f"{rfile}:4: steps.0.hl7v2_map: Value error, rules.0: translate: table 'lab' has no column 'snomed'"
    assert problem.startswith(want)


async def test_only_inpatient_adt_reaches_the_kitchen_over_mllp(tmp_path: Path) -> None:
    async with running_peer() as kitchen:
        route = {
            "route": "adt_to_kitchen",
            "from": "mllp_in",
            "when": {"message_type": {"matches": "^ADT\\^"}, "hl7": {"PV1-2": "I"}},
            "to": [{"destination": "dpi", "retry": FAST_RETRY}],
        }
        config = write_config(tmp_path, peer_port=kitchen.port, routes=[route])
        async with running_hub(config) as hub:
            client = await MllpClient.connect(mllp_port(hub))
            try:
                for n, cls in enumerate("OIEI"):
                    ack = await client.send(adt(f"K{n}").replace(b"PV1|1|I", f"PV1|1|{cls}".encode()))
                    assert b"|AA|" in ack
            finally:
                await client.close()
            await wait_until(lambda: len(kitchen.bodies) == 2)
            assert [b.split(b"|")[9] for b in kitchen.bodies] == [b"K1", b"K3"]
            assert hub.counters["received"] == 4


async def test_hostile_bodies_under_content_filters_never_stop_the_listener(tmp_path: Path) -> None:
    async with running_peer() as kitchen:
        route = {
            "route": "adt_to_kitchen",
            "from": "mllp_in",
            "when": {"hl7": {"PV1-2": "I", "OBX[*]-5.1": {"not_in": ["x"]}, "PID-3[*].5": "PI"}},
            "to": [{"destination": "dpi", "retry": FAST_RETRY}],
        }
        config = write_config(tmp_path, peer_port=kitchen.port, routes=[route])
        base = adt("H0").decode()
        hostile = [
            base.replace("PV1|1|I", "PV1|1|" + "~" * 5000),  # thousands of empty repetitions
            base.replace("PV1|1|I", "PV1|1|\\Xzz\\\\E\\\\F"),  # broken escapes
            base.replace("PV1|1|I", "OBX|" + "|" * 3000 + "x^" * 2000),  # many fields and components
            base.replace("PV1|1|I", "PV1|1|I\rZZZ|" + "&" * 4000),
        ]
        async with running_hub(config) as hub:
            client = await MllpClient.connect(mllp_port(hub))
            try:
                for n, text in enumerate(hostile):
                    ack = await client.send(text.replace("|H0|", f"|H{n + 1}|").encode())
                    assert b"|AA|" in ack or b"|AR|" in ack
                assert b"|AA|" in await client.send(adt("H9"))
            finally:
                await client.close()
            await wait_until(lambda: len(kitchen.bodies) == 2)  # the last inpatient ADT and the ZZZ one
            assert sorted(b.split(b"|")[9] for b in kitchen.bodies) == [b"H4", b"H9"]
