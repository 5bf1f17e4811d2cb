"""Our ITI-41 against the structure of the ANS request to the DMP test platform, metadata point by point.

The reference points below were read from ansforge/DRIM-M_DATA ``informatif/XDS/publication.xml`` (an
imaging KOS published with its lot signature and a VIHF); only its structure is kept here, as facts (no
value of it, and not the file). Our request is built by the XDS adapter from our own synthetic letter.
The points we do not produce are listed in ``NOT_OURS`` with the reason, so that a point silently lost
(as the lot signature and the masking codes once were) fails this test.
"""

from __future__ import annotations

from pathlib import Path

from adapters.xds.mtom import decode_related
from mappings.xds.compare import missing_points, points_of
from mappings.xml import parse_xml
from tests.adapters.test_xds import cda_message, outbound, vihf_config
from tests.tlskit import make_pki

_VIHF = ("VIHF_Version", "Secteur_Activite", "Ressource_URN", "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
         "Identifiant_Structure", "LPS_ID", "LPS_Nom", "LPS_ID_HOMOLOGATION_DMP", "LPS_Version",
         "urn:oasis:names:tc:xacml:2.0:resource:resource-id", "Authentification_Mode",
         "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", "urn:oasis:names:tc:xacml:2.0:subject:role")  # fmt: skip
_ENTRY_SLOTS = (
    "creationTime", "submissionTime", "languageCode", "legalAuthenticator", "serviceStartTime", "serviceStopTime",
    "sourcePatientId", "hash", "size", "urn:ihe:iti:xds:2013:referenceIdList",
)  # fmt: skip
REFERENCE = {
    "SubmissionSet slot submissionTime",
    "SubmissionSet author authorPerson",
    "SubmissionSet author authorInstitution",
    "SubmissionSet contentTypeCode [1.2.250.1.213.2.2]",
    "SubmissionSet identifier XDSSubmissionSet.patientId",
    "SubmissionSet identifier XDSSubmissionSet.sourceId",
    "SubmissionSet identifier XDSSubmissionSet.uniqueId",
    *(f"DocumentEntry slot {s}" for s in (*_ENTRY_SLOTS, "sourcePatientInfo")),
    "DocumentEntry author authorPerson",
    "DocumentEntry author authorInstitution",
    "DocumentEntry classCode [1.2.250.1.213.1.1.4.1]",
    "DocumentEntry typeCode [1.2.250.1.213.1.1.4.12]",
    "DocumentEntry confidentialityCode [2.16.840.1.113883.5.25]",
    "DocumentEntry formatCode [1.2.840.10008.2.6.1]",
    "DocumentEntry healthcareFacilityTypeCode [1.2.250.1.71.4.2.4]",
    "DocumentEntry practiceSettingCode [1.2.250.1.213.1.1.4.9]",
    "DocumentEntry eventCodeList [2.16.840.1.113883.6.96]",
    "DocumentEntry eventCodeList [1.2.840.10008.2.16.4]",
    "DocumentEntry identifier XDSDocumentEntry.patientId",
    "DocumentEntry identifier XDSDocumentEntry.uniqueId",
    "DocumentEntry mimeType application/dicom",
    *(f"Signature slot {s}" for s in _ENTRY_SLOTS),
    "Signature author authorPerson",
    "Signature author authorInstitution",
    "Signature classCode [URN] = urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1",
    "Signature typeCode [ASTM] = E1762",
    "Signature formatCode [URN] = http://www.w3.org/2000/09/xmldsig#",
    "Signature confidentialityCode [2.16.840.1.113883.5.25]",
    "Signature confidentialityCode [1.2.250.1.213.1.1.4.13]",
    "Signature healthcareFacilityTypeCode [1.2.250.1.71.4.2.4]",
    "Signature practiceSettingCode [1.2.250.1.213.1.1.4.9]",
    "Signature eventCodeList [1.2.840.10065.1.12]",
    "Signature identifier XDSDocumentEntry.patientId",
    "Signature identifier XDSDocumentEntry.uniqueId",
    "association HasMember SubmissionSet -> DocumentEntry",
    "association HasMember SubmissionSet -> Signature",
    "association signs Signature -> SubmissionSet",
    *(f"VIHF attribute {name}" for name in _VIHF),
    "VIHF AuthnContextClassRef urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient",
    "VIHF Subject/NameID",
}
# Reference points that are not ours, and why.
NOT_OURS = {
    # submissionTime is a SubmissionSet attribute (ITI TF-3 §4.2.3.3), not a DocumentEntry one.
    "DocumentEntry slot submissionTime": "",
    "Signature slot submissionTime": "",
    # Imaging (KOS) only: accession / study ids, anatomic region and modality, DICOM format and media type.
    "DocumentEntry slot urn:ihe:iti:xds:2013:referenceIdList": "",
    "Signature slot urn:ihe:iti:xds:2013:referenceIdList": "",
    "DocumentEntry eventCodeList [2.16.840.1.113883.6.96]": "",
    "DocumentEntry eventCodeList [1.2.840.10008.2.16.4]": "",
    "DocumentEntry formatCode [1.2.840.10008.2.6.1]": "DocumentEntry formatCode [1.3.6.1.4.1.19376.1.2.3]",
    "DocumentEntry typeCode [1.2.250.1.213.1.1.4.12]": "DocumentEntry typeCode [2.16.840.1.113883.6.1]",
    "DocumentEntry mimeType application/dicom": "DocumentEntry mimeType text/xml",
}


def our_points(tmp_path: Path) -> set[str]:
    pki = make_pki(tmp_path / "pki")
    out = outbound("https://dmp.test/repository", pki, vihf=vihf_config(lps_id="INTEROP-HUB"))
    body, ctype, _ = out.build_request(cda_message(metadata={"mask_ps": "Y"}))
    return points_of(parse_xml(decode_related(body, ctype).root.body))


def test_every_metadata_point_of_the_ans_request_is_in_ours(tmp_path: Path) -> None:
    expected = {NOT_OURS.get(p, p) for p in REFERENCE} - {""}
    ours = our_points(tmp_path)
    assert missing_points(ours, expected) == []
    assert len(expected) >= 60


def test_the_comparison_sees_a_lost_point(tmp_path: Path) -> None:
    expected = {NOT_OURS.get(p, p) for p in REFERENCE} - {""}
    ours = our_points(tmp_path)
    # Without the lot signature, or without the masking code: the two faults this comparison was written for.
    unsigned = {p for p in ours if not p.startswith("Signature") and " signs " not in p}
    lost = missing_points(unsigned, expected)
    assert "association signs Signature -> SubmissionSet" in lost and "Signature typeCode [ASTM] = E1762" in lost
    unmasked = ours - {"Signature confidentialityCode [1.2.250.1.213.1.1.4.13]"}
    assert missing_points(unmasked, expected) == ["Signature confidentialityCode [1.2.250.1.213.1.1.4.13]"]
