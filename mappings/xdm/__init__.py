"""IHE XDM archives (IHE_XDM.ZIP) as MSSanté carries them: read safely, write reproducibly.

Pure functions over bytes, no I/O, no logging (DOMAIN.md §6, IHE ITI TF-1 §16
and ITI TF-3 §4.2):

* :func:`read_xdm` — unpack an untrusted archive under :class:`ZipLimits`
  (:mod:`mappings.xdm.archive` lists what is refused), find each
  ``IHE_XDM/<subset>/METADATA.XML``, read its DocumentEntries and resolve
  each ``URI`` slot to a file of the archive, checking ``hash`` and ``size``
  when given. Raises :class:`XdmError` (a :class:`hub.errors.MessageError`)
  with a reason that never quotes the archive.
* :func:`build_xdm` — the archive the hub sends: ``INDEX.HTM`` and
  ``README.TXT`` at the root, the documents and ``METADATA.XML`` under
  ``IHE_XDM/SUBSET01/`` (the conventional subset name, DOMAIN.md §6).

Layout written (IHE ITI TF-1 §16, "XDM media content"; the file names are
8.3 upper case, which every XDM reader accepts)::

    INDEX.HTM
    README.TXT
    IHE_XDM/SUBSET01/METADATA.XML
    IHE_XDM/SUBSET01/DOC00001.XML
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import html
from collections.abc import Sequence

from hub.errors import MessageError
from mappings.xdm.archive import XdmError, ZipLimits, unpack_zip, write_zip
from mappings.xdm.metadata import (
    DocumentMeta,
    XdmCode,
    XdmMetadataConfig,
    XdmSubmission,
    build_metadata,
    read_metadata,
)
from mappings.xml import parse_xml

__all__ = [
    "DEFAULT_SUBSET",
    "XDM_ATTACHMENT_NAME",
    "DocumentMeta",
    "XdmArchive",
    "XdmCode",
    "XdmDocument",
    "XdmError",
    "XdmMetadataConfig",
    "XdmSubmission",
    "ZipLimits",
    "build_xdm",
    "read_xdm",
    "unpack_zip",
    "write_zip",
]

XDM_ATTACHMENT_NAME = "IHE_XDM.ZIP"
DEFAULT_SUBSET = "SUBSET01"
MAX_METADATA_BYTES = 8 * 2**20


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class XdmDocument:
    """One document of an archive: where it is, its bytes and its METADATA.XML entry."""

    path: str
    subset: str
    data: bytes
    meta: DocumentMeta

    @property
    def is_cda(self) -> bool:
        """A CDA R2 document (XDS mimeType text/xml, ITI TF-3 §4.2.3.2.14)."""
        return self.meta.mime_type.lower() in ("text/xml", "application/xml", "application/hl7-v3+xml")

    def __repr__(self) -> str:
        return f"XdmDocument(subset={self.subset!r}, bytes={len(self.data)}, mime_type={self.meta.mime_type!r})"


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class XdmArchive:
    """What :func:`read_xdm` found: every file name, the documents, and the optional root files."""

    names: tuple[str, ...]
    documents: tuple[XdmDocument, ...]
    has_index: bool
    has_readme: bool

    def __repr__(self) -> str:
        return f"XdmArchive(files={len(self.names)}, documents={len(self.documents)})"


def _check_uri(uri: str) -> None:
    if not uri:
        raise XdmError("a DocumentEntry has no URI slot")
    if "\\" in uri or uri.startswith("/") or ":" in uri or any(p in ("", ".", "..") for p in uri.split("/")):
        # A URI slot is a relative path inside the archive (ITI TF-3 §4.2.3.2.24), never a scheme or '..'.
        raise XdmError("a DocumentEntry URI is not a plain relative path")


def read_xdm(
    data: bytes, limits: ZipLimits | None = None, *, max_metadata_bytes: int = MAX_METADATA_BYTES
) -> XdmArchive:
    """Unpack and read an untrusted IHE_XDM.ZIP; raise XdmError when unsafe or not an XDM archive."""
    files = unpack_zip(data, limits or ZipLimits())
    by_key = {name.casefold(): name for name in files}
    subsets = [
        name
        for name in files
        if len(parts := name.split("/")) == 3 and parts[0].upper() == "IHE_XDM" and parts[2].upper() == "METADATA.XML"
    ]
    if not subsets:
        raise XdmError("no IHE_XDM/<subset>/METADATA.XML in the archive")
    documents: list[XdmDocument] = []
    for meta_path in sorted(subsets):
        subset_dir = meta_path.rsplit("/", 1)[0]
        try:
            root = parse_xml(files[meta_path], max_bytes=max_metadata_bytes)
        except MessageError as exc:
            raise XdmError(f"METADATA.XML refused: {exc.reason}") from None
        for meta in read_metadata(root):
            _check_uri(meta.uri)
            # The URI is relative to the subset folder; some senders write it relative to IHE_XDM/ (the ANS
            # DRIM-M sample writes "SS000001/KOS_1_1.DCM") or to the root: accept the three, in that order.
            path = next(
                (
                    by_key[c.casefold()]
                    for c in (f"{subset_dir}/{meta.uri}", f"IHE_XDM/{meta.uri}", meta.uri)
                    if c.casefold() in by_key
                ),
                None,
            )
            if path is None or path == meta_path:
                raise XdmError("a DocumentEntry URI names no document of the archive")
            body = files[path]
            if meta.hash and hashlib.sha1(body).hexdigest() != meta.hash:
                raise XdmError("a document does not match the hash in METADATA.XML")
            if meta.size.isdigit() and int(meta.size) != len(body):
                raise XdmError("a document does not match the size in METADATA.XML")
            documents.append(XdmDocument(path, subset_dir.split("/")[1], body, meta))
    return XdmArchive(
        names=tuple(sorted(files)),
        documents=tuple(documents),
        has_index="index.htm" in by_key,
        has_readme="readme.txt" in by_key,
    )


def _index_htm(files: Sequence[tuple[str, str]], sender: str) -> bytes:
    links = "\n".join(f'    <li><a href="{html.escape(path)}">{html.escape(title)}</a></li>' for path, title in files)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"/><title>IHE XDM</title></head><body>\n'
        f"  <p>Documents de santé envoyés par {html.escape(sender or 'la plateforme')} (IHE XDM).</p>\n"
        f'  <ul>\n{links}\n    <li><a href="README.TXT">README.TXT</a></li>\n  </ul>\n</body></html>\n'
    ).encode()


def _readme(sender: str, when: dt.datetime) -> bytes:
    return (
        "IHE XDM media (IHE ITI TF-1 section 16), written by interop-hub.\r\n"
        f"Sender: {sender or 'unknown'}\r\n"
        f"Created: {when.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}\r\n"
        "Content: IHE_XDM/SUBSET01/METADATA.XML (XDS metadata) and the CDA R2 documents it lists.\r\n"
    ).encode()


def build_xdm(
    documents: Sequence[bytes | XdmSubmission],
    config: XdmMetadataConfig | None = None,
    *,
    submission_id: str,
    submission_time: dt.datetime,
    recipients: Sequence[str] = (),
    sender: str = "",
    titles: Sequence[str] = (),
) -> bytes:
    """The IHE_XDM.ZIP of CDA documents (see the module docstring for the layout).

    Reproducible: the same documents, submission id and time give the same
    bytes. Raises :class:`XdmError` when a document is not a usable CDA.
    """
    subs = [
        d if isinstance(d, XdmSubmission) else XdmSubmission(d, f"DOC{i:05d}.XML")
        for i, d in enumerate(documents, start=1)
    ]
    metadata = build_metadata(
        subs,
        config or XdmMetadataConfig(),
        submission_id=submission_id,
        submission_time=submission_time,
        recipients=recipients,
    )
    folder = f"IHE_XDM/{DEFAULT_SUBSET}"
    listed = [(f"{folder}/{s.file_name}", titles[i] if i < len(titles) else s.file_name) for i, s in enumerate(subs)]
    files = [
        ("INDEX.HTM", _index_htm(listed, sender)),
        ("README.TXT", _readme(sender, submission_time)),
        (f"{folder}/METADATA.XML", metadata),
        *((f"{folder}/{s.file_name}", s.data) for s in subs),
    ]
    return write_zip(files, when=submission_time)
