"""The e-Parcours sandbox's ITI-65 check table (``adapters/sandboxes/EPARCOURS.md``), row by row, over HTTP."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.sandboxes.eparcours import EParcoursSandbox, EParcoursSandboxConfig
from mappings.fhir.common import dump_json
from tests.mappings.test_pdsm_profiles import bundle

TABLE = Path(__file__).resolve().parents[2] / "adapters" / "sandboxes" / "EPARCOURS.md"


def _doc(b: dict[str, Any]) -> dict[str, Any]:
    return b["entry"][1]["resource"]


def _lot(b: dict[str, Any]) -> dict[str, Any]:
    return b["entry"][0]["resource"]


def _without_extension(suffix: str) -> Any:
    def change(b: dict[str, Any]) -> None:
        _lot(b)["extension"] = [e for e in _lot(b)["extension"] if not e["url"].endswith(suffix)]

    return change


CASES = {
    "AUTHOR-CONTAINED": lambda b: _doc(b).update(author=[{"reference": "PractitionerRole/elsewhere"}]),
    "AUTHOR-REQUIRED": lambda b: _doc(b).pop("author"),
    "CATEGORY": lambda b: _doc(b).pop("category"),
    "SOURCE-PATIENT-CONTAINED": lambda b: _doc(b)["context"].update(sourcePatientInfo={"reference": "Patient/x"}),
    "AUTHENTICATOR-TARGET": lambda b: _doc(b).update(authenticator={"reference": "#source-patient"}),
    "SECURITY-LABEL": lambda b: _doc(b).pop("securityLabel"),
    "ATTACHMENT": lambda b: _doc(b)["content"][0]["attachment"].pop("hash"),
    "PERIOD": lambda b: _doc(b)["context"]["period"].pop("start"),
    "MASTER-IDENTIFIER": lambda b: _doc(b)["masterIdentifier"].pop("use"),
    "ENTRY-UUID": lambda b: _doc(b)["identifier"][0].update(value="urn:oid:1.2.3"),
    "DESIGNATION-TYPE": _without_extension("ihe-designationType"),
    "SOURCE-ID": _without_extension("ihe-sourceId"),
    "LOT-SOURCE": lambda b: _lot(b).pop("source"),
    "LIST-CODE": lambda b: _lot(b).update(mode="changes"),
    "BUNDLE-SLICES": lambda b: b["entry"][1]["request"].update(method="PUT"),
}


def table_ids() -> list[str]:
    return re.findall(r"^\| ([A-Z][A-Z-]+) \|", TABLE.read_text(encoding="utf-8"), flags=re.M)


def test_every_row_has_a_case() -> None:
    assert sorted(table_ids()) == sorted(CASES)


async def _post(box: EParcoursSandbox, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/fhir+json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(box.base_url + "/", data=dump_json(doc), headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None)


@pytest.fixture
async def box() -> Any:
    sandbox = EParcoursSandbox("eparcours", EParcoursSandboxConfig(listen="127.0.0.1:0", require_token=False))
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


async def test_the_hubs_bundle_is_accepted(box: EParcoursSandbox) -> None:
    status, answer = await _post(box, bundle("crbio", mask_ps="Y"))
    assert status == 200, answer
    assert answer["type"] == "transaction-response"
    assert len(box.resources["DocumentReference"]) == 1


@pytest.mark.parametrize("row", sorted(CASES))
async def test_row(box: EParcoursSandbox, row: str) -> None:
    doc = copy.deepcopy(bundle("crbio"))
    CASES[row](doc)
    status, answer = await _post(box, doc)
    assert status == 422, (row, answer)
    assert answer["resourceType"] == "OperationOutcome"
    assert all(i["code"] == "processing" for i in answer["issue"])
    assert box.resources.get("DocumentReference", {}) == {}
