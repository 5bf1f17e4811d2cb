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
typeCode                      JDV_J66-TypeCode-DMP (S18 OBR-4: the DMP's subset of J07)   mappings.xds.jdv
formatCode                    JDV_J60-FormatCode-DMP                                      mappings.xds.jdv
confidentialityCode           JDV_J58-ConfidentialityCode-DMP                             mappings.xds.jdv
healthcareFacilityTypeCode    JDV_J61-HealthcareFacilityTypeCode-DMP                      mappings.xds.jdv
practiceSettingCode           JDV_J04-XdsPracticeSettingCode-CISIS                        mappings.cda.value_sets
contentTypeCode               JDV_J59-ContentTypeCode-DMP                                 mappings.xds.jdv
typeCode → classCode          ASS_X04-CorrespondanceType-Classe-CISIS                     mappings.xds.jdv
============================  ==========================================================  =========================
"""

from __future__ import annotations

from typing import Literal

from hub.errors import MappingError
from mappings.cda.value_sets import value_set
from mappings.xds.jdv import load as load_jdv
from mappings.xds.jdv import load_map

__all__ = [
    "TYPE_CLASS_TABLE",
    "CodedField",
    "class_display",
    "class_for_type",
    "class_setting_error",
    "is_member",
    "lot_class",
    "require_member",
    "value_set_name",
]

CodedField = Literal[
    "classCode",
    "typeCode",
    "formatCode",
    "confidentialityCode",
    "healthcareFacilityTypeCode",
    "practiceSettingCode",
    "contentTypeCode",
]

TYPE_CLASS_TABLE = "ASS_X04-CorrespondanceType-Classe-CISIS"
_DMP_SETS: dict[str, str] = {
    "classCode": "JDV_J57-ClassCode-DMP",
    "typeCode": "JDV_J66-TypeCode-DMP",
    "formatCode": "JDV_J60-FormatCode-DMP",
    "confidentialityCode": "JDV_J58-ConfidentialityCode-DMP",
    "healthcareFacilityTypeCode": "JDV_J61-HealthcareFacilityTypeCode-DMP",
    "contentTypeCode": "JDV_J59-ContentTypeCode-DMP",
}
_CISIS_SETS: dict[str, str] = {
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


def require_member(field: CodedField, code: str, scheme: str, location: str) -> None:
    """Refuse (MappingError naming the field) a code the DMP would refuse: not in the field's value set."""
    if not is_member(field, code, scheme):
        raise MappingError(f"{field}: {code[:64]} ({scheme[:64]}) is not in {value_set_name(field)}", location=location)


def lot_class(
    type_code: str, type_scheme: str, configured: tuple[str, str, str] | None, location: str
) -> tuple[str, str, str]:
    """The lot's classCode (code, system, display): ASS_X04's class for the type, else the configured one.

    A configured class must be the one ASS_X04 gives (when it has a row for the type); the result must
    be a DMP class (JDV_J57: ASS_X04 is the CI-SIS table, its technical-document class 99 is not one).
    """
    expected = class_for_type(type_code, type_scheme)
    if expected is None and configured is None:
        raise MappingError(
            f"classCode: ASS_X04 has no class for typeCode {type_code[:64]} and none is configured", location=location
        )
    if expected is not None and configured is not None and configured[:2] != expected:
        raise MappingError(
            f"classCode: {configured[0][:64]} is configured for typeCode {type_code[:64]}, ASS_X04 gives {expected[0]}",
            location=location,
        )
    if configured is None:
        assert expected is not None
        configured = (expected[0], expected[1], class_display(*expected) or expected[0])
    require_member("classCode", configured[0], configured[1], location)
    return configured


def class_setting_error(type_code: str, class_code: str, class_scheme: str) -> str | None:
    """Why a class configured for a type (keyed by code alone) cannot give a DMP lot, or None."""
    if not is_member("classCode", class_code, class_scheme):
        return f"{class_code} ({class_scheme}) is not in {value_set_name('classCode')}"
    expected = class_for_type(type_code)
    if expected is not None and expected != (class_code, class_scheme):
        return f"{class_code} is not the class ASS_X04-CorrespondanceType-Classe-CISIS gives this type ({expected[0]})"
    return None
