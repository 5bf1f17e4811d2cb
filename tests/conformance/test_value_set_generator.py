"""The ART-DECOR value set that ``make conformance`` writes for the structuration minimale, from an SVS file."""

from __future__ import annotations

from lxml import etree

from tests.conformance.ans import artdecor_value_set

SVS = b"""<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="1.2.250.1.213.1.1.5.471" displayName="JDV_J07_XdsTypeCode_CISIS.tabs" dateMaj="20240927120000"
            effectiveDate="2013-01-23T00:00:00+01:00">
    <ConceptList>
      <Concept code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="CR d'examens biologiques"/>
      <Concept code="ATTEST-RESID" codeSystem="1.2.250.1.213.1.1.4.12" displayName="Attestation de r\xc3\xa9sidence"/>
    </ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>"""


def test_concepts_are_where_the_schematron_reads_them() -> None:
    root = etree.fromstring(artdecor_value_set(SVS))
    # The schematron's own paths: /*/valueSet/conceptList/concept and //valueSet[1]/conceptList/concept.
    assert root.xpath("/*/valueSet/conceptList/concept/@code") == ["11502-2", "ATTEST-RESID"]
    assert root.xpath("//valueSet[1]/conceptList/concept[@code='11502-2']/@codeSystem") == ["2.16.840.1.113883.6.1"]
    value_set = root.find("valueSet")
    assert (value_set.get("id"), value_set.get("name")) == ("1.2.250.1.213.1.1.5.471", "JDV_J07_XdsTypeCode_CISIS")
    assert root.xpath("//concept[2]/@displayName") == ["Attestation de r\u00e9sidence"]


def test_not_an_svs_file_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="SVS"):
        artdecor_value_set(b"<other/>")
