"""The DMP masking and visibility of one document, from the message that carries it.

The Ségur volet "Transmission de documents CDA en HL7v2" (ANS
IG-hl7v2-volet-transmission-document-cda-r2, pages ``meta-dmp-mss`` and
``mapping``) says: the first XDS ``confidentialityCode`` is the CDA's, "les
autres occurrences" come from the OBX rows coded ``MetaDMPMSS``. Those rows
are read by :mod:`mappings.cda.hl7v2_documents` into message metadata
(``mask_ps``, ``invisible_patient``, ``invisible_legal_reps``, ``Y``/``N``);
:func:`visibility_codes` turns them into TRE_A07 codes
(``1.2.250.1.213.1.1.4.13``, JDV_J58), for the XDS route (extra
confidentialityCode) and the FHIR route (``DocumentReference.securityLabel``).

It fails closed: a flag that is neither ``Y`` nor ``N``, an unknown code, or a
combination the volet forbids raises :class:`hub.errors.MappingError`, so a
document that asks to be hidden is never published visible.

Forbidden combinations (each with where the volet says so):

==========================================  =============================================================
``MODIF_CONF_CODE=Y`` on a creation         page ``contexte-metier``: a masking/visibility change "sera
                                            gérée comme un remplacement de document" (a new version with
                                            RPLC); a create cannot change the masking of anything
``DESTMSSANTEPAT=Y`` + ``INVISIBLE_PATIENT``  page ``profils-messages``, INVISIBLE_PATIENT: "un document
                                            clinique masqué au patient ne doit pas être envoyé au patient
                                            par MSSanté"
==========================================  =============================================================

The ANS's own ITI-41 example to the DMP test platform carries MASQUE_PS and
INVISIBLE_PATIENT together (DRIM-M_DATA ``informatif/XDS/publication.xml``),
so that pair is *not* refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from hub.errors import MappingError

__all__ = [
    "FLAG_METADATA",
    "VISIBILITY_CODES",
    "VISIBILITY_FHIR_SYSTEM",
    "VISIBILITY_SCHEME",
    "visibility_codes",
]

VISIBILITY_SCHEME = "1.2.250.1.213.1.1.4.13"
"""TRE_A07-StatutVisibiliteDocument (JDV_J58-ConfidentialityCode-DMP)."""
VISIBILITY_FHIR_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
)
"""TRE_A07 as a FHIR system (ANS IG-FHIR-PDSM4DMP-EEDS, transaction_td3.3a/3.3b)."""

VISIBILITY_CODES = {
    "INVISIBLE_PATIENT": "Non visible par le patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "Non visible par les représentants légaux du patient",
    "MASQUE_PS": "Masqué aux professionnels de santé",
}
"""JDV_J58, TRE_A07 part, with the display names the ANS publishes."""

FLAG_METADATA = {
    "mask_ps": "MASQUE_PS",
    "invisible_patient": "INVISIBLE_PATIENT",
    "invisible_legal_reps": "INVISIBLE_REPRESENTANTS_LEGAUX",
}
"""Message metadata key (set by the HL7 v2 document reader) → TRE_A07 code."""

# The MetaDMPMSS spelling (20 characters at most, volet change-log) of the TRE_A07 code.
_ALIASES = {"INVISIBLE_REP_LEGAUX": "INVISIBLE_REPRESENTANTS_LEGAUX"}


def _flag(meta: Mapping[str, str], key: str) -> str:
    value = meta.get(key, "")
    if value not in ("", "Y", "N"):
        # HL7 table 0136: Y or N. Anything else cannot say "visible", so nothing is sent.
        raise MappingError(f"MetaDMPMSS flag {key} must be Y or N", location="OBX")
    return value


def visibility_codes(meta: Mapping[str, str], configured: Iterable[str] = ()) -> tuple[str, ...]:
    """TRE_A07 codes for a document: configured ones, ``xds_visibility``, then the MetaDMPMSS flags.

    ``meta`` is the message metadata. Raises MappingError (naming the flag or
    rule, never a value from the document) when a flag is malformed, a code
    unknown, or the combination forbidden (module docstring).
    """
    wanted = list(configured)
    for raw in re.split(r"[\s,]+", meta.get("xds_visibility", "")):
        if raw:
            wanted.append(_ALIASES.get(raw.upper(), raw.upper()))
    for key, code in FLAG_METADATA.items():
        if _flag(meta, key) == "Y":
            wanted.append(code)
    for code in wanted:
        if code not in VISIBILITY_CODES:
            raise MappingError(f"unknown DMP visibility code {code!r} (TRE_A07)")
    codes = tuple(dict.fromkeys(wanted))
    if _flag(meta, "confidentiality_update") == "Y" and meta.get("document_action", "create") == "create":
        raise MappingError(
            "MODIF_CONF_CODE=Y on a creation: a masking change is a replacement (OBX-11 C / MDM^T10)", location="OBX"
        )
    if _flag(meta, "dest_mss_patient") == "Y" and "INVISIBLE_PATIENT" in codes:
        raise MappingError("DESTMSSANTEPAT=Y with INVISIBLE_PATIENT=Y: a hidden document cannot go to the patient")
    return codes
