"""The `xpath_read` step: CDA values read with XPath into metadata; required values; load-time checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.errors import MappingError, ParseError
from hub.message import Message
from hub.pipeline import Pipeline
from tests.conftest import ROOT

registry.load_builtin()
CDA = (ROOT / "tests" / "data" / "cda" / "minimal_header.xml").read_bytes()
CODE = "/cda:ClinicalDocument/cda:code/@code"


def read(settings: dict[str, Any], body: bytes = CDA) -> dict[str, str]:
    out = Pipeline([("xpath_read", settings)]).apply(Message.new(body, content_type="application/cda+xml"))
    assert out.body == body
    return dict(out.metadata)


def test_values_become_metadata() -> None:
    got = read({"metadata": {"doc_code": CODE, "confidentiality": "//cda:confidentialityCode/@code", "nope": "//x"}})
    assert got == {"doc_code": "11502-2", "confidentiality": "N"}


def test_required_values_refuse_when_absent() -> None:
    with pytest.raises(MappingError, match="xpath_read: author: //cda:nothing finds no value"):
        read({"metadata": {"author": "//cda:nothing"}, "required": ["author"]})
    with pytest.raises(ParseError):
        read({"metadata": {"doc_code": CODE}, "required": ["doc_code"]}, b"<unclosed")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"metadata": {"doc_code": "//cda:code["}}, "XPath syntax error"),
        ({"metadata": {"Doc-Code": CODE}}, "is not a metadata key"),
        ({"metadata": {"doc_code": CODE}, "required": ["title"]}, "required keys not read: title"),
    ],
)
def test_settings_are_checked_at_load(settings: dict[str, Any], problem: str) -> None:
    comp = registry.get("step", "xpath_read")
    assert comp is not None
    with pytest.raises(PydanticValidationError, match=problem):
        comp.config.model_validate(settings)
