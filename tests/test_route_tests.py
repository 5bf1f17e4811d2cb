"""`hub test`: the route test cases of the shipped routes and of examples/ pass, and a failure reads well."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import load_config
from hub.errors import ConfigError
from hub.routetest import run_route_tests
from tests.conftest import ROOT

HUB = Path(sys.executable).with_name("hub")
EXAMPLE = ROOT / "examples" / "hospital"


def hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HUB), *args], capture_output=True, text=True, check=False, cwd=ROOT)


@pytest.mark.parametrize("config", [ROOT / "config" / "hub.yaml", EXAMPLE / "hub.yaml"], ids=["shipped", "example"])
def test_route_tests_pass(config: Path) -> None:
    results = run_route_tests(load_config(config))
    assert len(results) >= 4
    assert [(r.name, r.failures) for r in results if not r.ok] == []


def test_hub_test_command_and_hub_check_on_the_example() -> None:
    done = hub("test", "--config", str(EXAMPLE / "hub.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("ok   ") for line in lines) == 7 and lines[-1] == "7 passed, 0 failed"
    assert hub("check", "--config", str(EXAMPLE / "hub.yaml")).returncode == 0


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "hospital")
    return tmp_path / "hospital"


def test_a_wrong_expected_output_fails_with_a_unified_diff(example: Path) -> None:
    expected = example / "routes" / "tests" / "expected" / "oru_loinc.hl7"
    expected.write_bytes(expected.read_bytes().replace(b"2093-3", b"2093-9"))
    done = hub("test", "--config", str(example / "hub.yaml"), "--only", "lab_to_dpi")
    assert done.returncode == 1
    assert "FAIL " in done.stdout and "lab_to_dpi_loinc.yaml:2: local lab codes become LOINC" in done.stdout
    assert "-OBX|1|NM|2093-9^Cholest" in done.stdout and "+OBX|1|NM|2093-3^Cholest" in done.stdout
    assert "2 passed, 1 failed" in done.stdout


def test_wrong_routes_refusals_and_path_tests_are_reported(example: Path) -> None:
    cases = example / "routes" / "tests" / "adt_to_kitchen.yaml"
    cases.write_text(
        cases.read_text()
        .replace("routes: [adt_to_pacs]", "routes: [adt_to_pacs, adt_to_kitchen]")
        .replace("file: ../../samples/adt_a01_inpatient.hl7", "hl7: {PV1-2: O}\n        reject: nothing")
    )
    results = {r.name: r.failures for r in run_route_tests(load_config(example / "hub.yaml"), only="kitchen")}
    assert results["an outpatient registration does not"] == [
        "routes: got ['adt_to_pacs'], want ['adt_to_kitchen', 'adt_to_pacs']"
    ]
    assert results["an inpatient admission reaches the kitchen unchanged"] == [
        "adt_to_kitchen: accepted, want a refusal with 'nothing'"
    ]


def test_a_malformed_case_file_is_reported_with_file_and_line(example: Path) -> None:
    (example / "routes" / "tests" / "bad.yaml").write_text("cases:\n  - name: x\n    from: mllp_in\n    inpt: a.hl7\n")
    with pytest.raises(ConfigError) as info:
        run_route_tests(load_config(example / "hub.yaml"))
    assert f"{example}/routes/tests/bad.yaml:4: cases.0.inpt: unknown key" in info.value.problems
    done = hub("check", "--config", str(example / "hub.yaml"))
    assert done.returncode == 1 and f"{example}/routes/tests/bad.yaml:4: cases.0.inpt: unknown key" in done.stderr


def test_mail_cases_run_what_the_smtp_listener_makes_of_a_mail(tmp_path: Path) -> None:
    """A mail case goes through the SMTP listener's own intake: the mail and each XDM document are routed on
    their own; a wrong expectation about them fails, and a mail the listener refuses is reported as such."""
    settings = load_config(ROOT / "config" / "hub.yaml")
    shipped = [r for r in run_route_tests(settings) if r.file.name == "mail.yaml"]
    assert len(shipped) == 3 and all(r.ok for r in shipped), [r.failures for r in shipped]

    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    shutil.copytree(ROOT / "routes", tmp_path / "routes")
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    cases = tmp_path / "routes" / "tests" / "mail.yaml"
    wrong = cases.read_text().replace("routes: [mss_to_mailboxes]\n", "routes: [mss_relay]\n", 1)
    wrong = wrong.replace("MSH-9.2: T02", "MSH-9.2: T10")
    (tmp_path / "samples" / "broken.eml").write_bytes(
        (ROOT / "samples" / "mss_document_mail.eml").read_bytes().replace(b"IHE_XDM.ZIP", b"OTHER.ZIP")
    )
    wrong += (
        "  - name: an application mail without its IHE_XDM.ZIP\n    from: smtp_mta\n"
        "    input: ../../samples/broken.eml\n"
        "    envelope: {mail_from: lab@peer.mssante.fr, rcpt_to: [dpi-integration@hub.mssante.fr]}\n"
    )
    cases.write_text(wrong)
    results = {r.name: r.failures for r in run_route_tests(load_config(config / "hub.yaml"))
               if r.file.resolve() == cases.resolve()}  # fmt: skip
    document, personal, _, broken = results.values()
    assert document == ["mss_documents_to_dpi: hl7 MSH-9.2: got ['T02'], want 'T10'"]
    assert personal == ["routes: got ['mss_to_mailboxes'], want ['mss_relay']"]
    assert len(broken) == 1 and broken[0].startswith("the listener would refuse the input:")
