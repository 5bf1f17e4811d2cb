"""Code tables for building French CDA documents from HL7 v2 (data only, no I/O).

Every table says where its codes come from. Display names are the French
labels of the CI-SIS value sets (ANS TestContenuCDA-3-0 ``jeuxDeValeurs``) or of
the ANS CR-BIO examples, because the human-readable narrative and ``displayName``
attributes of a CI-SIS document are in French.

Lookups that can fail return ``None``; the caller turns that into a
:class:`hub.errors.MappingError` naming the HL7 field, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "ACT_CODE_OID",
    "CONFIDENTIALITY",
    "CONFIDENTIALITY_OID",
    "CRBIO_CHAPTERS",
    "GENDER_OID",
    "INTERPRETATION_OID",
    "LOINC_OID",
    "PRACTICE_SETTING_OID",
    "PROFESSION_OID",
    "RPPS_OID",
    "SECTOR_OID",
    "SNOMED_OID",
    "SPECIMEN_TYPE_OID",
    "STRUCTURE_OID",
    "TRE_A05_OID",
    "Coded",
    "encounter_code",
    "gender",
    "interpretation",
    "specimen_type_display",
    "to_ucum",
    "v2_coding_system_oid",
]


class Coded(NamedTuple):
    """A code, its French display name and the OID of its code system."""

    code: str
    display_name: str
    code_system: str


LOINC_OID = "2.16.840.1.113883.6.1"
SNOMED_OID = "2.16.840.1.113883.6.96"
CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"
GENDER_OID = "2.16.840.1.113883.5.1"
ACT_CODE_OID = "2.16.840.1.113883.5.4"
INTERPRETATION_OID = "2.16.840.1.113883.5.83"
# HL7 v2 table 0487 (specimen type) as the ANS CR-BIO examples identify it
# (JDV_HL7_SpecimenType-CISIS, e.g. BIO-CR-BIO_2024.01_Microbiologie_V1.xml).
SPECIMEN_TYPE_OID = "2.16.840.1.113883.18.311"
RPPS_OID = "1.2.250.1.71.4.2.1"  # DOMAIN.md §3.1: national PS identifier (idNat_PS)
STRUCTURE_OID = "1.2.250.1.71.4.2.2"  # DOMAIN.md §3.1: national structure identifier (idNat_Struct)
PROFESSION_OID = "1.2.250.1.213.1.1.4.5"  # TRE_G15 profession/savoir-faire (DOMAIN.md §3.1)
PRACTICE_SETTING_OID = "1.2.250.1.213.1.1.4.9"  # TRE_A01 cadre d'exercice (DOMAIN.md §5.1)
SECTOR_OID = "1.2.250.1.71.4.2.4"  # TRE_R02 secteur d'activité (DOMAIN.md §5.1)
TRE_A05_OID = "1.2.250.1.213.1.1.4.12"  # TRE_A05 types de documents complémentaires (DOMAIN.md §5.1)

# HL7 Confidentiality as the CI-SIS header uses it (DOMAIN.md §3.1).
CONFIDENTIALITY: Mapping[str, Coded] = MappingProxyType(
    {
        "N": Coded("N", "Normal", CONFIDENTIALITY_OID),
        "R": Coded("R", "Restreint", CONFIDENTIALITY_OID),
        "V": Coded("V", "Très restreint", CONFIDENTIALITY_OID),
    }
)

# JDV_J143_AdministrativeGender_CISIS: F, M and UN ("Inconnu"). PAM FR PID-8 is
# F | M | U (DOMAIN.md §2.4); U and anything else map to UN.
_GENDERS = {"F": Coded("F", "Féminin", GENDER_OID), "M": Coded("M", "Masculin", GENDER_OID)}
_GENDER_UNKNOWN = Coded("UN", "Inconnu", GENDER_OID)


def gender(pid8: str) -> Coded:
    """administrativeGenderCode for a PID-8 value."""
    return _GENDERS.get(pid8.strip().upper(), _GENDER_UNKNOWN)


# PV1-2 patient class -> HL7 ActCode of the encompassingEncounter (CDA R2 ActEncounterCode).
_ENCOUNTERS = {
    "I": Coded("IMP", "Hospitalisation", ACT_CODE_OID),
    "O": Coded("AMB", "Ambulatoire", ACT_CODE_OID),
    "R": Coded("AMB", "Ambulatoire", ACT_CODE_OID),
    "E": Coded("EMER", "Urgence", ACT_CODE_OID),
}


def encounter_code(pv1_2: str) -> Coded | None:
    """encompassingEncounter/code for PV1-2, or None when the class has no CDA equivalent."""
    return _ENCOUNTERS.get(pv1_2.strip().upper())


# HL7 v2 table 0078 (abnormal flags, OBX-8) -> HL7 ObservationInterpretation,
# restricted to JDV_HL7_ObservationInterpretation_CISIS (2.16.840.1.113883.1.11.78), whose
# French labels these are. v2 flags outside that value set (MS, VS, QCF, TOX...) are refused.
_INTERPRETATIONS = {
    "<": "Inférieur à la limite de détection",
    ">": "Supérieur à la limite maximale de mesure",
    "A": "Anormal",
    "AA": "Très anormal, alerte",
    "B": "Amélioration",
    "D": "Diminution significative par rapport au résultat antérieur",
    "DET": "Détecté",
    "H": "Anormalement haut",
    "HH": "Très anormalement haut, alerte",
    "I": "Intermédiaire",
    "IND": "Indéterminé",
    "L": "Anormalement bas",
    "LL": "Très anormalement bas, alerte",
    "N": "Normal",
    "ND": "Non détecté",
    "NEG": "Négatif",
    "NR": "Non réactif",
    "POS": "Positif",
    "R": "Résistant",
    "RR": "Réactif",
    "S": "Sensible",
    "SDD": "Sensible à forte dose",
    "U": "Augmentation significative par rapport au résultat antérieur",
    "W": "Dégradation",
    "WR": "Faiblement réactif",
}


def interpretation(flag: str) -> Coded | None:
    """interpretationCode for one OBX-8 repetition, or None when outside the CI-SIS value set."""
    display = _INTERPRETATIONS.get(flag.strip())
    return None if display is None else Coded(flag.strip(), display, INTERPRETATION_OID)


# Table 0487 specimen types most often seen on French lab feeds (labels of the CI-SIS
# examples and value set); other codes keep the sender's text, or no displayName.
_SPECIMEN_TYPES = {
    "BLD": "Sang",
    "BLDA": "Sang artériel",
    "BLDC": "Sang capillaire",
    "BLDV": "Sang veineux",
    "CSF": "Liquide céphalo-rachidien",
    "PLAS": "Plasma",
    "SER": "Sérum",
    "SPT": "Crachat",
    "STL": "Selles",
    "THRT": "Gorge",
    "UR": "Urine",
    "URNS": "Urine, miction",
}


def specimen_type_display(code: str) -> str | None:
    """French label of a table 0487 specimen type, if known."""
    return _SPECIMEN_TYPES.get(code.strip().upper())


# OBR-24 diagnostic service section (HL7 table 0074) -> CR-BIO chapter (IHE PALM laboratory
# specialty, LOINC). Codes and labels as in the ANS CR-BIO examples (18719-5 Biochimie,
# 18723-7 Hématologie, 18725-2 Microbiologie, 18727-8 Sérologie); a route adds others in config.
CRBIO_CHAPTERS: Mapping[str, Coded] = MappingProxyType(
    {
        "CH": Coded("18719-5", "Biochimie", LOINC_OID),
        "HM": Coded("18723-7", "Hématologie", LOINC_OID),
        "MB": Coded("18725-2", "Microbiologie", LOINC_OID),
        "BCT": Coded("18725-2", "Microbiologie", LOINC_OID),
        "MCB": Coded("18725-2", "Microbiologie", LOINC_OID),
        "VR": Coded("18725-2", "Microbiologie", LOINC_OID),
        "PAR": Coded("18725-2", "Microbiologie", LOINC_OID),
        "MYC": Coded("18725-2", "Microbiologie", LOINC_OID),
        "SR": Coded("18727-8", "Sérologie", LOINC_OID),
        "IMM": Coded("18727-8", "Sérologie", LOINC_OID),
    }
)

# Name of coding system (HL7 table 0396) -> OID, for the systems a French lab or document
# feed uses in OBX-3 / OBX-5 / OBR-4 (the volet names LN and TRE_A05 for document types).
_CODING_SYSTEMS = {
    "LN": LOINC_OID,
    "LOINC": LOINC_OID,
    LOINC_OID: LOINC_OID,
    "SCT": SNOMED_OID,
    "SNOMED-CT": SNOMED_OID,
    "SNM": SNOMED_OID,
    SNOMED_OID: SNOMED_OID,
    "TRE_A05": TRE_A05_OID,
    "TRE_A05-TYPEDOCCOMPLEMENTAIRE": TRE_A05_OID,
    TRE_A05_OID: TRE_A05_OID,
}


def v2_coding_system_oid(name: str) -> str | None:
    """OID of an HL7 v2 coding system name (CWE-3), or None when unknown."""
    return _CODING_SYSTEMS.get(name.strip().upper())


# ---------------------------------------------------------------------------------------- UCUM
# CDA PQ units are UCUM (CDA R2 datatypes; IHE PALM requires UCUM for numeric results).
# Units French labs send in OBX-6 without declaring UCUM, by exact spelling first: "G/L"
# means giga per litre (10*9/L) in French haematology, "g/L" grams per litre.
_UNITS_EXACT = {
    "G/L": "10*9/L",
    "G/l": "10*9/L",
    "T/L": "10*12/L",
    "T/l": "10*12/L",
}
# Then case-insensitively (after µ/μ -> u). Values are UCUM case-sensitive codes.
_UNITS_FOLDED = {
    "%": "%",
    "1": "1",
    "g/l": "g/L",
    "mg/l": "mg/L",
    "ug/l": "ug/L",
    "ng/l": "ng/L",
    "g/dl": "g/dL",
    "mg/dl": "mg/dL",
    "ug/dl": "ug/dL",
    "ng/ml": "ng/mL",
    "ug/ml": "ug/mL",
    "pg/ml": "pg/mL",
    "mol/l": "mol/L",
    "mmol/l": "mmol/L",
    "umol/l": "umol/L",
    "nmol/l": "nmol/L",
    "pmol/l": "pmol/L",
    "meq/l": "meq/L",
    "mosm/kg": "mosm/kg",
    "u/l": "U/L",
    "ku/l": "kU/L",
    "ui/l": "[IU]/L",
    "iu/l": "[IU]/L",
    "[iu]/l": "[IU]/L",
    "mui/l": "m[IU]/L",
    "miu/l": "m[IU]/L",
    "m[iu]/l": "m[IU]/L",
    "ui/ml": "[IU]/mL",
    "mui/ml": "m[IU]/mL",
    "uui/ml": "u[IU]/mL",
    "uiu/ml": "u[IU]/mL",
    "u[iu]/ml": "u[IU]/mL",
    "10*9/l": "10*9/L",
    "10^9/l": "10*9/L",
    "10e9/l": "10*9/L",
    "giga/l": "10*9/L",
    "10*12/l": "10*12/L",
    "10^12/l": "10*12/L",
    "10e12/l": "10*12/L",
    "tera/l": "10*12/L",
    "10*6/l": "10*6/L",
    "/mm3": "/mm3",
    "/ul": "/uL",
    "fl": "fL",
    "pg": "pg",
    "s": "s",
    "sec": "s",
    "min": "min",
    "h": "h",
    "mm/h": "mm/h",
    "mm/1h": "mm/h",
    "ml/min": "mL/min",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "ml/min/1,73m2": "mL/min/{1.73_m2}",
    "ml/min/1.73 m2": "mL/min/{1.73_m2}",
    "ml/min/1,73 m2": "mL/min/{1.73_m2}",
    "g/24h": "g/(24.h)",
    "mg/24h": "mg/(24.h)",
    "mmol/24h": "mmol/(24.h)",
    "mg/mmol": "mg/mmol",
    "mmhg": "mm[Hg]",
    "kpa": "kPa",
    "ratio": "{ratio}",
    "inr": "{INR}",
    "°c": "Cel",
}
# Units declared UCUM by the sender (CWE-3 = UCUM) are trusted after this syntax check:
# printable ASCII, no space (UCUM §2: "Units cannot contain white space").
_UCUM_SYNTAX = re.compile(r"[!-~]{1,40}")
_MICRO = str.maketrans({"µ": "u", "μ": "u"})


def to_ucum(unit: str, coding_system: str = "") -> str | None:
    """The UCUM code for an OBX-6 unit, or None when it cannot be mapped safely.

    An empty unit is the UCUM unity ``1`` (a ratio or index). A unit the
    sender declares as UCUM is kept when it is syntactically plausible; any
    other spelling must be in the tables above.
    """
    text = unit.strip()
    if not text:
        return "1"
    if coding_system.strip().upper() == "UCUM":
        return text if _UCUM_SYNTAX.fullmatch(text) else None
    if text in _UNITS_EXACT:
        return _UNITS_EXACT[text]
    folded = text.translate(_MICRO)
    return _UNITS_FOLDED.get(folded.lower()) or _UNITS_FOLDED.get(folded.replace("²", "2").replace("³", "3").lower())
