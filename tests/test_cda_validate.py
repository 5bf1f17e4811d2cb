"""The `cda_validate` step as a route runs it: precise violations, header metadata, hostile input refused."""

from __future__ import annotations

import pytest

from hub.errors import MessageError
from hub.message import Message
from hub.pipeline import Pipeline
from tests.unit.test_xds_metadata import synthetic_cda

CDA = "application/cda+xml"


def run(body: bytes, **settings: object) -> Message:
    return Pipeline([("cda_validate", dict(settings))]).apply(Message.new(body, content_type=CDA))


def test_a_valid_document_goes_on_with_its_header_metadata() -> None:
    out = run(synthetic_cda())
    assert out.metadata["type_code"] == "11502-2"
    assert out.metadata["ins_oid"] == "1.2.250.1.213.1.4.10" and out.metadata["ins"]
    assert out.body == synthetic_cda()


def test_every_violation_is_listed_with_its_location_and_no_value() -> None:
    body = synthetic_cda().replace(b'<realmCode code="FR"/>', b"").replace(b"fr-FR", b"francais")
    with pytest.raises(MessageError) as info:
        run(body)
    reason = info.value.reason
    assert reason.startswith("CDA header: 2 violation(s): ")
    assert "/ClinicalDocument/realmCode" in reason and "/ClinicalDocument/languageCode" in reason
    assert "francais" not in reason


def test_production_settings_refuse_the_test_ins_root_and_hostile_xml_is_refused() -> None:
    with pytest.raises(MessageError, match="violation"):
        run(synthetic_cda(), allow_test_ins=False)
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><ClinicalDocument>&a;</ClinicalDocument>'
    with pytest.raises(MessageError, match=r"DOCTYPE|DTD"):
        run(bomb)
