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


def test_the_cda_r2_top_level_structure_is_checked() -> None:
    body = synthetic_cda()
    # languageCode moved before code: out of CDA R2 order; an unknown element; a second custodian.
    reordered = body.replace(b'<languageCode code="fr-FR"/>', b"").replace(
        b"<code ", b'<languageCode code="fr-FR"/><code ', 1
    )
    with pytest.raises(MessageError) as info:
        run(reordered)
    assert "/ClinicalDocument/code: element out of the order CDA R2 fixes" in info.value.reason
    stray = body.replace(b"<custodian>", b"<surprise/><custodian>", 1)
    with pytest.raises(MessageError, match=r"/ClinicalDocument/surprise: element not allowed"):
        run(stray)
    start, end = body.index(b"<custodian>"), body.index(b"</custodian>") + len(b"</custodian>")
    twice = body[:end] + body[start:end] + body[end:]
    with pytest.raises(MessageError, match=r"/ClinicalDocument/custodian: allowed at most 1"):
        run(twice)


def test_every_cda_the_hub_produces_has_the_cda_r2_structure() -> None:
    from pathlib import Path

    from mappings.cda.structure import check_structure
    from mappings.xml import parse_xml

    cases = Path(__file__).resolve().parent / "mappings" / "cases"
    produced = sorted(cases.glob("*/expected.xml"))
    assert len(produced) >= 6
    for path in produced:
        assert check_structure(parse_xml(path.read_bytes())) == [], path.parent.name
    assert check_structure(parse_xml(synthetic_cda())) == []


def self_presenting(cda: bytes) -> bytes:
    """A document wrapped as ANS's "autoprésentable" examples are: an XSLT holding the ClinicalDocument."""
    inner = cda.split(b"?>", 1)[1] if cda.startswith(b"<?xml") else cda
    return (
        b'<?xml version="1.0" encoding="UTF-8"?><?xml-stylesheet type="text/xsl" href="#"?>'
        b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        b'<xsl:template match="/">' + inner + b"</xsl:template></xsl:stylesheet>"
    )


def test_a_self_presenting_document_is_checked_inside_and_goes_on_unchanged() -> None:
    wrapped = self_presenting(synthetic_cda())
    out = run(wrapped)
    assert out.body == wrapped
    assert out.metadata["cda_self_presenting"] == "Y" and out.metadata["type_code"] == "11502-2"
    broken = self_presenting(synthetic_cda().replace(b'<realmCode code="FR"/>', b""))
    with pytest.raises(MessageError, match="realmCode"):
        run(broken)
    twice = wrapped.replace(b"</xsl:template>", synthetic_cda().split(b"?>", 1)[1] + b"</xsl:template>")
    with pytest.raises(MessageError, match="root element"):
        run(twice)


def test_a_three_digit_time_zone_offset_is_accepted_and_a_type_outside_jdv_j07_is_not() -> None:
    # The CDA XSD's ts pattern allows 1 to 4 offset digits (ANS BIO-TROD examples write "+100").
    body = synthetic_cda()
    stamp = body.split(b'<effectiveTime value="', 1)[1].split(b'"', 1)[0]
    assert run(body.replace(stamp, stamp[:14] + b"+100", 1)).metadata["effective_time"].endswith("+100")
    with pytest.raises(MessageError, match="JDV_J07"):
        run(body.replace(b'code="11502-2"', b'code="99999-9"', 1))
