"""IHE_XDM.ZIP: what the hub writes reads back; hostile archives are refused without echoing their names."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import stat
import zipfile

import pytest

from adapters.sandboxes.mssante_peer import synthetic_cda
from mappings.xdm import XdmError, XdmMetadataConfig, XdmSubmission, ZipLimits, build_xdm, read_xdm, unpack_zip
from mappings.xdm.metadata import read_metadata
from mappings.xds.ebrim import DE, SS
from mappings.xml import parse_xml
from tests.smtp.smtpkit import zip_of

WHEN = dt.datetime(2025, 1, 2, 9, 30, tzinfo=dt.UTC)
SECRET = "PAT-TROIS"  # a name that must never appear in a refusal


def xdm_of(cda: bytes, uri: str = "DOC00001.XML") -> bytes:
    """A minimal XDM archive around one document, whose METADATA.XML names it with ``uri``."""
    built = build_xdm([cda], submission_id="01a20000-0000-7000-8000-000000000001", submission_time=WHEN)
    with zipfile.ZipFile(io.BytesIO(built)) as zf:
        metadata = zf.read("IHE_XDM/SUBSET01/METADATA.XML").replace(b"DOC00001.XML", uri.encode())
    return zip_of([("IHE_XDM/SUBSET01/METADATA.XML", metadata), ("IHE_XDM/SUBSET01/DOC00001.XML", cda)])


def test_what_the_hub_writes_reads_back_with_its_metadata() -> None:
    cda = synthetic_cda()
    data = build_xdm(
        [XdmSubmission(cda, "DOC00001.XML", ("INVISIBLE_PATIENT",))],
        XdmMetadataConfig(source_id="1.2.250.1.999.1"),
        submission_id="01a20000-0000-7000-8000-000000000001",
        submission_time=WHEN,
        recipients=["dr.prescripteur@peer.mssante.fr"],
        sender="labo@hub.mssante.fr",
    )
    # Reproducible: a retried delivery attaches the very same archive.
    assert data == build_xdm(
        [XdmSubmission(cda, "DOC00001.XML", ("INVISIBLE_PATIENT",))],
        XdmMetadataConfig(source_id="1.2.250.1.999.1"),
        submission_id="01a20000-0000-7000-8000-000000000001",
        submission_time=WHEN,
        recipients=["dr.prescripteur@peer.mssante.fr"],
        sender="labo@hub.mssante.fr",
    )
    archive = read_xdm(data)
    assert archive.names == (
        "IHE_XDM/SUBSET01/DOC00001.XML",
        "IHE_XDM/SUBSET01/METADATA.XML",
        "INDEX.HTM",
        "README.TXT",
    )
    assert archive.has_index and archive.has_readme
    (doc,) = archive.documents
    assert doc.is_cda and doc.data == cda and doc.subset == "SUBSET01"
    assert doc.meta.patient_id == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"  # DOMAIN.md §9.2
    assert doc.meta.unique_id == "1.2.250.1.999.7.1^DOC-PEER-0001"
    assert doc.meta.hash == hashlib.sha1(cda).hexdigest() and doc.meta.size == str(len(cda))
    assert doc.meta.type_code == "11502-2"
    assert ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13") in doc.meta.confidentiality
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        root = parse_xml(zf.read("IHE_XDM/SUBSET01/METADATA.XML"))
    ns = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}
    package = root.find(".//rim:RegistryPackage", ns)
    assert package is not None
    ids = {e.get("identificationScheme"): e.get("value") for e in package.findall("rim:ExternalIdentifier", ns)}
    assert ids[SS.PATIENT_ID] == doc.meta.patient_id and ids[SS.SOURCE_ID] == "1.2.250.1.999.1"
    recipients = root.findall(".//rim:Slot[@name='intendedRecipient']/rim:ValueList/rim:Value", ns)
    assert [v.text for v in recipients] == ["||^^Internet^dr.prescripteur@peer.mssante.fr"]
    (entry,) = read_metadata(root)
    assert entry.uri == "DOC00001.XML" and entry.mime_type == "text/xml"
    assert root.find(f".//rim:Classification[@classificationScheme='{DE.TYPE_CODE}']", ns) is not None


def test_uri_relative_to_ihe_xdm_as_the_ans_sample_writes_it() -> None:
    cda = synthetic_cda()
    archive = read_xdm(xdm_of(cda, uri="SUBSET01/DOC00001.XML"))
    assert archive.documents[0].data == cda


@pytest.mark.parametrize(
    ("uri", "why"),
    [("../DOC00001.XML", "plain relative path"), ("/etc/passwd", "plain relative path"), ("MISSING.XML", "names no")],
)
def test_metadata_uri_must_name_a_file_of_the_archive(uri: str, why: str) -> None:
    with pytest.raises(XdmError, match=why):
        read_xdm(xdm_of(synthetic_cda(), uri=uri))


def test_document_must_match_its_hash() -> None:
    cda = synthetic_cda()
    tampered = cda.replace(b"5,2", b"9,9")
    data = xdm_of(cda)
    files = unpack_zip(data, ZipLimits())
    files["IHE_XDM/SUBSET01/DOC00001.XML"] = tampered
    with pytest.raises(XdmError, match="hash"):
        read_xdm(zip_of(list(files.items())))


def test_an_archive_without_metadata_is_not_xdm() -> None:
    with pytest.raises(XdmError, match=r"METADATA\.XML"):
        read_xdm(zip_of([("IHE_XDM/SUBSET01/DOC00001.XML", synthetic_cda())]))


def _symlink_zip() -> bytes:
    info = zipfile.ZipInfo(f"IHE_XDM/SUBSET01/{SECRET}.XML")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def _encrypted_zip() -> bytes:
    data = bytearray(zip_of([(f"{SECRET}.XML", b"<x/>")], compression=zipfile.ZIP_STORED))
    # Set the "encrypted" flag bit in the local header (offset 6) and the central directory (offset 8).
    data[6] |= 1
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 8] |= 1
    return bytes(data)


HOSTILE = {
    "zip bomb": (lambda: zip_of([("IHE_XDM/SUBSET01/BOMB.XML", b"\0" * (20 * 2**20))]), "ratio"),
    "dot-dot path": (lambda: zip_of([(f"IHE_XDM/../../{SECRET}.XML", b"<x/>")]), "'..'"),
    "absolute path": (lambda: zip_of([(f"/tmp/{SECRET}.XML", b"<x/>")]), "absolute"),
    "drive path": (lambda: zip_of([(f"C:/{SECRET}.XML", b"<x/>")]), "absolute"),
    "backslash": (lambda: zip_of([(f"IHE_XDM\\..\\{SECRET}.XML", b"<x/>")]), "backslash"),
    "10,000 entries": (lambda: zip_of([(f"F{i:05d}.TXT", b"") for i in range(10_000)]), "more than 1000 entries"),
    "nested zip": (lambda: zip_of([("IHE_XDM/SUBSET01/INNER.BIN", zip_of([("a.xml", b"<x/>")]))]), "nested"),
    "nested gzip by name": (lambda: zip_of([(f"{SECRET}.XML.GZ", b"hello")]), "nested"),
    "symlink": (_symlink_zip, "symbolic link"),
    "duplicate names": (lambda: zip_of([(f"{SECRET}.XML", b"<a/>"), (f"{SECRET.lower()}.xml", b"<b/>")]), "same name"),
    "encrypted": (_encrypted_zip, "encrypted"),
    "not a zip": (lambda: b"PK\x03\x04 this is not really a zip", "not a readable ZIP"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_without_quoting_them(case: str) -> None:
    make, why = HOSTILE[case]
    data = make()
    with pytest.raises(XdmError) as info:
        unpack_zip(data, ZipLimits())
    assert why in info.value.reason
    assert SECRET not in info.value.reason and SECRET.lower() not in info.value.reason


def test_limits_are_options() -> None:
    data = zip_of([("A.XML", b"a" * 4096), ("B.XML", b"b" * 4096)], compression=zipfile.ZIP_STORED)
    assert set(unpack_zip(data, ZipLimits())) == {"A.XML", "B.XML"}
    with pytest.raises(XdmError, match="more than 1 entries"):
        unpack_zip(data, ZipLimits(max_entries=1))
    with pytest.raises(XdmError, match="uncompressed in total"):
        unpack_zip(data, ZipLimits(max_total_bytes=6000))
    with pytest.raises(XdmError, match="larger than"):
        unpack_zip(data, ZipLimits(max_archive_bytes=1024))
