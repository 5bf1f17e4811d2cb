"""The value sets a DMP lot's coded metadata must stay inside, and the typeCode → classCode table.

The DMP refuses a lot whose codes are outside its value sets, or whose
classCode is not the one ASS_X04 gives its typeCode (the DMP sandbox's
rows CLASS-CODE, TYPE-CODE, TYPE-CLASS, FACILITY-*, PRACTICE-SETTING-*,
CONTENT-TYPE-*, adapters/sandboxes/DMP.md). The hub checks the same
published data before building a lot, so that such a message is refused
with the field named instead of being sent. Membership is by code and
code system (DOMAIN.md §5.4).

============================  ==========================================================  =========================
field                         value set (S18 mapping, ANS HL7v2→DMP)                      shipped in
============================  ==========================================================  =========================
classCode                     JDV_J57-ClassCode-DMP                                       mappings.xds.jdv
typeCode                      JDV_J07-XdsTypeCode-CISIS                                   mappings.cda.value_sets
healthcareFacilityTypeCode    JDV_J61-HealthcareFacilityTypeCode-DMP                      mappings.xds.jdv
practiceSettingCode           JDV_J04-XdsPracticeSettingCode-CISIS                        mappings.cda.value_sets
contentTypeCode               JDV_J59-ContentTypeCode-DMP                                 mappings.xds.jdv
typeCode → classCode          ASS_X04-CorrespondanceType-Classe-CISIS                     mappings.xds.jdv
============================  ==========================================================  =========================
"""

from __future__ import annotations

from typing import Literal

from mappings.cda.value_sets import value_set
from mappings.xds.jdv import load as load_jdv
from mappings.xds.jdv import load_map

__all__ = ["TYPE_CLASS_TABLE", "CodedField", "class_display", "class_for_type", "is_member", "value_set_name"]

CodedField = Literal["classCode", "typeCode", "healthcareFacilityTypeCode", "practiceSettingCode", "contentTypeCode"]

TYPE_CLASS_TABLE = "ASS_X04-CorrespondanceType-Classe-CISIS"
_DMP_SETS: dict[str, str] = {
    "classCode": "JDV_J57-ClassCode-DMP",
    "healthcareFacilityTypeCode": "JDV_J61-HealthcareFacilityTypeCode-DMP",
    "contentTypeCode": "JDV_J59-ContentTypeCode-DMP",
}
_CISIS_SETS: dict[str, str] = {
    "typeCode": "JDV_J07_XdsTypeCode_CISIS",
    "practiceSettingCode": "JDV_J04_XdsPracticeSettingCode_CISIS",
}


def value_set_name(field: CodedField) -> str:
    """The name of the value set ``field`` must take its codes from."""
    return _DMP_SETS.get(field) or _CISIS_SETS[field]


def is_member(field: CodedField, code: str, scheme: str) -> bool:
    """Whether (code, code system) is in the value set of that XDS field."""
    if field in _DMP_SETS:
        return (code, scheme) in load_jdv(_DMP_SETS[field])
    vs = value_set(_CISIS_SETS[field])
    return code in vs and scheme in vs.systems[code]


def class_for_type(code: str, scheme: str | None = None) -> tuple[str, str] | None:
    """The (classCode, code system) ASS_X04 gives a typeCode, or None when the shipped table has no row.

    Without ``scheme`` (a configuration keyed by type code alone) the row is looked up by code.
    """
    table = load_map(TYPE_CLASS_TABLE)
    if scheme is not None:
        return table.target(code, scheme)
    return next((target for (source, _), target in table.rows.items() if source == code), None)


def class_display(code: str, scheme: str) -> str:
    """The JDV_J57 display name of a classCode ("" when it is not in JDV_J57)."""
    return load_jdv(_DMP_SETS["classCode"]).display(code, scheme)
