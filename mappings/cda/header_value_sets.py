"""Value-set bindings of the CI-SIS header, as the "structuration minimale" schematron tests them.

Each binding names header elements (an XPath from ClinicalDocument, as the schematron rule's
context), the attribute that holds the code, and the published value set it must come from
(``mappings/cda/value_sets``, shipped with source and version). As in the schematron, an element
without that attribute is not tested (its nullFlavor or absence is another rule's business), and
membership is by code, except JDV_J04 (practice setting), tested there as code + code system.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from lxml import etree

from mappings.cda.value_sets import value_set

if TYPE_CHECKING:
    from mappings.cda.header import Violation

__all__ = ["BINDINGS", "Binding", "check_value_sets"]

_NS = {"hl7": "urn:hl7-org:v3"}
_ORG = "hl7:assignedEntity/hl7:representedOrganization/hl7:standardIndustryClassCode"


class Binding(NamedTuple):
    rule: str
    path: str
    attribute: str
    value_set: str
    with_system: bool = False


# Contexts and value sets of the structuration minimale (1.2.250.1.213.1.1.1.1-2017-12-13T103531.sch):
# SMDS_CDAClinicalDocument, CI-SISAuthor, CI-SISAssignedEntity, CI-SISRelatedEntity,
# CI-SISLegalAuthenticator, CI-SISAuthenticator, CI-SISParticipant, CI-SISDocumentationOf,
# CI-SISComponentOf.
BINDINGS: tuple[Binding, ...] = (
    Binding("document-type-value-set", "hl7:code[not(@nullFlavor)]", "code", "JDV_J07_XdsTypeCode_CISIS"),
    Binding("author-value-set", "hl7:author/hl7:functionCode", "code", "JDV_J47_FunctionCode_CISIS"),
    Binding(
        "author-value-set", "hl7:author/hl7:assignedAuthor[not(@nullFlavor)]/hl7:code", "code",
        "JDV_J01_XdsAuthorSpecialty_CISIS",
    ),
    Binding(
        "author-value-set",
        "hl7:author/hl7:assignedAuthor[not(@nullFlavor)]/hl7:representedOrganization/hl7:standardIndustryClassCode",
        "code", "JDV_J04_XdsPracticeSettingCode_CISIS", True,
    ),
    Binding("informant-value-set", f"hl7:informant/{_ORG}", "code", "JDV_J04_XdsPracticeSettingCode_CISIS", True),
    Binding(
        "informant-value-set", "hl7:informant/hl7:relatedEntity[@classCode][hl7:relatedPerson]/hl7:code", "code",
        "JDV_J11_RelationPatient_CISIS",
    ),
    Binding(
        "legal-authenticator-value-set",
        "hl7:legalAuthenticator[hl7:signatureCode[@code='S']]/hl7:assignedEntity/hl7:code",
        "code", "JDV_J01_XdsAuthorSpecialty_CISIS",
    ),
    Binding(
        "legal-authenticator-value-set", f"hl7:legalAuthenticator[hl7:signatureCode[@code='S']]/{_ORG}", "code",
        "JDV_J04_XdsPracticeSettingCode_CISIS", True,
    ),
    Binding(
        "authenticator-value-set", f"hl7:authenticator[hl7:signatureCode[@code='S']]/{_ORG}", "code",
        "JDV_J04_XdsPracticeSettingCode_CISIS", True,
    ),
    Binding(
        "participant-value-set", "hl7:participant[@typeCode][hl7:associatedEntity[@classCode]]", "typeCode",
        "JDV_J144_ParticipationType_CISIS",
    ),
    Binding(
        "participant-value-set", "hl7:participant[@typeCode][hl7:associatedEntity[@classCode]]/hl7:functionCode",
        "code", "JDV_J47_FunctionCode_CISIS",
    ),
    Binding(
        "participant-value-set", "hl7:participant[@typeCode]/hl7:associatedEntity[@classCode]", "classCode",
        "JDV_J141_RoleClass_CISIS",
    ),
    Binding(
        "participant-value-set", "hl7:participant[@typeCode]/hl7:associatedEntity[@classCode]/hl7:code", "code",
        "JDV_J01_XdsAuthorSpecialty_CISIS",
    ),
    Binding(
        "documentation-of-value-set",
        "hl7:documentationOf[not(@nullFlavor)]/hl7:serviceEvent[not(@nullFlavor)]/hl7:performer[@typeCode='PRF']"
        "/hl7:assignedEntity/hl7:code",
        "code", "JDV_J01_XdsAuthorSpecialty_CISIS",
    ),
    Binding(
        "documentation-of-value-set",
        f"hl7:documentationOf[not(@nullFlavor)]/hl7:serviceEvent[not(@nullFlavor)]/hl7:performer[@typeCode='PRF']/{_ORG}",
        "code", "JDV_J04_XdsPracticeSettingCode_CISIS",
    ),
    Binding(
        "component-of-value-set", "hl7:componentOf/hl7:encompassingEncounter[not(@nullFlavor)][hl7:location]/hl7:code",
        "code", "JDV_J142_TypeRencontre_CISIS",
    ),
    Binding(
        "component-of-value-set",
        f"hl7:componentOf/hl7:encompassingEncounter[not(@nullFlavor)][hl7:location]/hl7:responsibleParty/{_ORG}",
        "code", "JDV_J04_XdsPracticeSettingCode_CISIS", True,
    ),
    Binding(
        "component-of-value-set",
        "hl7:componentOf/hl7:encompassingEncounter[not(@nullFlavor)][hl7:location]/hl7:encounterParticipant[@typeCode]",
        "typeCode", "JDV_J140_EncounterParticipationType_CISIS",
    ),
    Binding(
        "component-of-value-set",
        f"hl7:componentOf/hl7:encompassingEncounter[not(@nullFlavor)][hl7:location]/hl7:encounterParticipant/{_ORG}",
        "code", "JDV_J04_XdsPracticeSettingCode_CISIS", True,
    ),
    Binding(
        "component-of-value-set",
        "hl7:componentOf/hl7:encompassingEncounter[not(@nullFlavor)][hl7:location]/hl7:location"
        "/hl7:healthCareFacility/hl7:code",
        "code", "JDV_J02_XdsHealthcareFacilityTypeCode_CISIS",
    ),
)  # fmt: skip


# Compiled once: cda_validate runs on every document a route checks.
_COMPILED = tuple((binding, etree.XPath(binding.path, namespaces=_NS)) for binding in BINDINGS)


def _location(doc: etree._Element, el: etree._Element, attribute: str) -> str:
    """/ClinicalDocument/... without prefixes and indexes, then /@attribute (no value quoted)."""
    names = []
    node: etree._Element | None = el
    while node is not None and node is not doc:
        names.append(etree.QName(node).localname)
        node = node.getparent()
    return "/ClinicalDocument/" + "/".join(reversed(names)) + f"/@{attribute}"


def check_value_sets(doc: etree._Element) -> list[Violation]:
    """One violation per coded header attribute outside its value set."""
    from mappings.cda.header import Violation

    found = []
    for binding, xpath in _COMPILED:
        allowed = value_set(binding.value_set)
        for el in xpath(doc):
            code = el.get(binding.attribute)
            if code is None:
                continue
            ok = code in allowed
            if ok and binding.with_system and el.get("codeSystem") is not None:
                ok = el.get("codeSystem") in allowed.systems[code]
            if not ok:
                where = _location(doc, el, binding.attribute)
                found.append(Violation(binding.rule, where, f"{binding.attribute} must be in {binding.value_set}"))
    return found
