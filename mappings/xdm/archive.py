"""Open an untrusted ZIP archive safely, and write the IHE XDM archive (IHE_XDM.ZIP) the hub sends.

An IHE_XDM.ZIP comes from another operator of the MSSanté trust space, which
does not make it safe: :func:`unpack_zip` refuses, before and while
extracting, everything that has hurt ZIP readers in practice. Every limit is
an explicit option (:class:`ZipLimits`) and every refusal is an
:class:`XdmError` whose reason is the hub's own text, never an entry name
(names are chosen by the sender and may hold patient data):

* **Bombs.** The archive size, the number of entries, each entry's and the
  total uncompressed size are capped, from the central directory *and* while
  inflating (a lying header cannot get past the count of bytes actually
  produced). A compression ratio above ``max_ratio`` is refused for any entry
  (and for the whole archive) larger than ``ratio_floor_bytes``: tiny files
  compress well, bombs are big. Overlapping entries (one compressed stream
  referenced many times) are stopped by the total cap, since each entry counts
  its own output.
* **Paths.** Absolute paths (``/x``, ``C:x``), ``..`` and ``.`` components,
  empty components, backslashes (a Windows separator the ZIP format forbids,
  APPNOTE §4.4.17), NUL and control characters, over-long names and deep
  trees are refused: nothing is ever written to disk, but a refused name is a
  sign of a hostile archive and must not reach a later tool that would write.
* **Links and special files.** Unix symlinks, devices and FIFOs (mode bits in
  ``external_attr``) are refused.
* **Duplicates.** Two entries whose names differ only by case or Unicode
  normalisation are refused: they would overwrite each other on extraction.
* **Nested archives.** An entry that is itself an archive (by extension or by
  magic number: ZIP, gzip, bzip2, xz, zstd, 7z, RAR, tar) is refused.
* **Other ZIP features.** Encrypted entries and compression methods other
  than stored and deflate are refused; a CRC mismatch is an error.

:func:`write_zip` builds the archive the hub sends: deflated, with fixed
timestamps (the same input gives the same bytes, so a retried delivery sends
an identical attachment).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
import stat
import unicodedata
import zipfile
from collections.abc import Iterable

from pydantic import Field

from hub.errors import MessageError
from hub.registry import ComponentConfig

__all__ = ["XdmError", "ZipLimits", "unpack_zip", "write_zip"]

_CHUNK = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Magic numbers of archive formats (and compressed streams) an XDM never nests.
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",  # ZIP local file header
    b"PK\x05\x06",  # empty ZIP
    b"PK\x07\x08",  # spanned ZIP
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"\x28\xb5\x2f\xfd",  # zstd
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR
)
_ARCHIVE_SUFFIXES = (
    ".zip", ".gz", ".tgz", ".tar", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".7z", ".rar", ".jar", ".cab", ".lz",
    ".lzma", ".z",
)  # fmt: skip
_TAR_MAGIC_OFFSET = 257  # POSIX ustar: "ustar" at offset 257 of the first header


class XdmError(MessageError):
    """An archive (or its XDM content) the hub refuses; the reason never quotes the archive."""

    code = "207"


class ZipLimits(ComponentConfig):
    """Limits applied to an untrusted ZIP archive (every one is checked before and while extracting)."""

    max_archive_bytes: int = Field(32 * 2**20, ge=1024, description="Largest archive accepted, compressed.")
    max_total_bytes: int = Field(64 * 2**20, ge=1024, description="Largest total of the entries' uncompressed sizes.")
    max_entry_bytes: int = Field(32 * 2**20, ge=1024, description="Largest uncompressed size of one entry.")
    max_entries: int = Field(1000, ge=1, le=100_000, description="Most entries (files and folders) accepted.")
    max_ratio: int = Field(
        100, ge=2, description="Highest uncompressed/compressed ratio accepted for an entry or the archive."
    )
    ratio_floor_bytes: int = Field(
        1 * 2**20,
        ge=0,
        description="The ratio is only checked for entries (and archives) larger than this, uncompressed.",
    )
    max_path_chars: int = Field(255, ge=16, le=4096, description="Longest entry name accepted.")
    max_path_depth: int = Field(8, ge=1, le=64, description="Most folder levels in an entry name.")


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    info: zipfile.ZipInfo
    name: str
    is_dir: bool


def _refuse(reason: str) -> XdmError:
    return XdmError(f"archive refused: {reason}")


def _check_name(info: zipfile.ZipInfo, limits: ZipLimits) -> str:
    """The entry name if it is a plain relative path; raise XdmError otherwise (without the name)."""
    # zipfile cuts a name at its first NUL (ZipInfo.__init__); the original keeps it.
    raw = info.orig_filename
    name = info.filename
    if not raw or _CONTROL.search(raw) or _CONTROL.search(name):
        raise _refuse("an entry name is empty or holds control characters")
    if "\\" in raw:
        raise _refuse("an entry name uses backslashes (APPNOTE 4.4.17: '/' only)")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise _refuse("an entry has an absolute path")
    if len(raw) > limits.max_path_chars:
        raise _refuse(f"an entry name is longer than {limits.max_path_chars} characters")
    parts = raw.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _refuse("an entry path has an empty, '.' or '..' component")
    if len(parts) > limits.max_path_depth:
        raise _refuse(f"an entry path is deeper than {limits.max_path_depth} levels")
    return raw


def _check_kind(info: zipfile.ZipInfo) -> bool:
    """True for a folder; raise XdmError for a link, a special file, encryption or an odd method."""
    if info.flag_bits & 0x1:
        raise _refuse("an entry is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _refuse("an entry uses a compression method other than stored or deflate")
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.create_system == 3 and mode:  # Unix attributes (APPNOTE 4.4.2.2)
        if kind == stat.S_IFLNK:
            raise _refuse("an entry is a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse("an entry is a special file (device, FIFO or socket)")
    is_dir = info.filename.endswith("/") or kind == stat.S_IFDIR
    if is_dir and info.file_size:
        raise _refuse("a folder entry carries data")
    return is_dir


def _is_archive(name: str, head: bytes) -> bool:
    if name.lower().endswith(_ARCHIVE_SUFFIXES):
        return True
    if head.startswith(_ARCHIVE_MAGIC):
        return True
    return head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar"


def _over_ratio(size: int, compressed: int, limits: ZipLimits) -> bool:
    return size > limits.ratio_floor_bytes and size > limits.max_ratio * max(compressed, 1)


def _check_entries(zf: zipfile.ZipFile, limits: ZipLimits) -> list[_Checked]:
    """The archive's entries, each checked from the central directory (name, kind, sizes, ratio) before inflating."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise _refuse(f"more than {limits.max_entries} entries")
    checked: list[_Checked] = []
    seen: set[str] = set()
    declared = compressed = 0
    for info in infos:
        name = _check_name(info, limits)
        is_dir = _check_kind(info)
        key = unicodedata.normalize("NFC", name.rstrip("/")).casefold()
        if key in seen:
            raise _refuse("two entries have the same name (ignoring case)")
        seen.add(key)
        if info.file_size > limits.max_entry_bytes:
            raise _refuse(f"an entry is larger than {limits.max_entry_bytes} bytes uncompressed")
        if _over_ratio(info.file_size, info.compress_size, limits):
            raise _refuse(f"an entry's compression ratio is above {limits.max_ratio}")
        declared += info.file_size
        compressed += info.compress_size
        if declared > limits.max_total_bytes:
            raise _refuse(f"more than {limits.max_total_bytes} bytes uncompressed in total")
        checked.append(_Checked(info, name, is_dir))
    if _over_ratio(declared, compressed, limits):
        raise _refuse(f"the archive's compression ratio is above {limits.max_ratio}")
    return checked


def _inflate(zf: zipfile.ZipFile, entry: _Checked, limits: ZipLimits, total: int) -> tuple[bytes, int]:
    """One entry's bytes, inflated under its own and the running total's limits; returns them and the new total."""
    buf = bytearray()
    try:
        with zf.open(entry.info) as stream:
            while chunk := stream.read(_CHUNK):
                buf += chunk
                total += len(chunk)
                # The central directory may lie: count what inflating really produces.
                if len(buf) > min(entry.info.file_size, limits.max_entry_bytes):
                    raise _refuse("an entry inflates beyond its declared size")
                if total > limits.max_total_bytes:
                    raise _refuse(f"more than {limits.max_total_bytes} bytes uncompressed in total")
                if len(buf) == len(chunk) and _is_archive(entry.name, bytes(buf[:512])):
                    raise _refuse("an entry is itself an archive (nested archives are not accepted)")
    except XdmError:
        raise
    except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError, OSError, RuntimeError):
        # CRC mismatch, truncated stream, bad local header, encryption flagged late...
        raise _refuse("an entry cannot be read (corrupt or truncated)") from None
    if not buf and _is_archive(entry.name, b""):
        raise _refuse("an entry is itself an archive (nested archives are not accepted)")
    return bytes(buf), total


def unpack_zip(data: bytes, limits: ZipLimits) -> dict[str, bytes]:
    """The files of an untrusted ZIP archive by name (folders left out); raise XdmError when unsafe.

    Nothing touches the disk: entries are inflated in memory, each under its
    own limit and under the running total. See the module docstring for what
    is refused.
    """
    if len(data) > limits.max_archive_bytes:
        raise _refuse(f"larger than {limits.max_archive_bytes} bytes")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, NotImplementedError, EOFError, OSError):
        raise _refuse("not a readable ZIP archive") from None
    with zf:
        checked = _check_entries(zf, limits)
        out: dict[str, bytes] = {}
        total = 0
        for entry in checked:
            if not entry.is_dir:
                out[entry.name], total = _inflate(zf, entry, limits, total)
        return out


def write_zip(files: Iterable[tuple[str, bytes]], *, when: dt.datetime) -> bytes:
    """A deflated ZIP of ``(name, data)`` pairs, every entry dated ``when`` (reproducible bytes)."""
    stamp = when.timetuple()[:6]
    if stamp[0] < 1980:  # the ZIP DOS date cannot go earlier
        stamp = (1980, 1, 1, 0, 0, 0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3
            zf.writestr(info, data)
    return buf.getvalue()
