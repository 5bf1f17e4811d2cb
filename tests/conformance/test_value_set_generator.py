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


def test_facts_read_from_an_svs_and_an_art_decor_file_agree() -> None:
    from tests.conformance.ans import value_set_facts

    from_svs = value_set_facts(SVS, "svs")
    from_artdecor = value_set_facts(artdecor_value_set(SVS), "art-decor")
    assert from_svs["concepts"] == from_artdecor["concepts"]
    assert (from_svs["id"], from_svs["name"], from_svs["version"]) == (
        "1.2.250.1.213.1.1.5.471",
        "JDV_J07_XdsTypeCode_CISIS",
        "20240927120000",
    )
    assert from_artdecor["version"] == "20240927120000" and from_svs["source"] == "svs"


def test_the_shipped_value_sets_load() -> None:
    from mappings.cda.header_value_sets import BINDINGS
    from mappings.cda.value_sets import value_set

    for binding in BINDINGS:
        shipped = value_set(binding.value_set)
        assert shipped.codes and shipped.version and "ANS" in shipped.source
    assert "11502-2" in value_set("JDV_J07_XdsTypeCode_CISIS")
    assert value_set("JDV_J04_XdsPracticeSettingCode_CISIS").systems["AMBULATOIRE"] == {"1.2.250.1.213.1.1.4.9"}
