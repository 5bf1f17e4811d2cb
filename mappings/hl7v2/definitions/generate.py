"""Compile the HL7 v2 message definitions the `hl7v2_validate` step checks against.

Run by a maintainer, never at run time: ``python -m mappings.hl7v2.definitions.generate``
(hl7apy installed, as the test extra installs it). It reads hl7apy's reference tables for
every HL7 v2 version hl7apy supports and writes one compact JSON file per version beside this
script (``v2_5.json.gz`` ...), with the hl7apy version it came from. The files hold facts
from the HL7 v2 standard (message structures, groups, segment fields, data type components,
cardinalities, data types), not code.

Layout of a version file::

    {"hl7apy": "1.3.5", "version": "2.5",
     "messages": {"ORU_R01": [[child, min, max, is_group], ...]},
     "groups":   {"ORU_R01_PATIENT_RESULT": [[child, min, max, is_group], ...]},
     "segments": {"PID": [[datatype, min, max] | null, ...]},  # field n at index n-1
     "composites": {"CX": [[datatype, min, max] | null, ...]}, # component n at index n-1
     "primitives": {"ST": ["text", 199], "NM": ["NM", 16], "DTM": ["DTM", null]}}

``max`` is -1 for "unbounded"; a field or component whose type is decided by another field
(OBX-5) has the datatype ``"varies"``.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def file_name(version: str) -> str:
    """The data file of one HL7 version (``2.5.1`` -> ``v2_5_1.json.gz``)."""
    return "v" + version.replace(".", "_") + ".json.gz"


def _children(ref: Any) -> list[list[Any]]:
    return [[c[0], c[2][0], c[2][1], c[3] == "GRP"] for c in ref[1]]


def _primitive(cls: type) -> list[Any]:
    name = cls.__name__
    if name in ("NM", "SI"):
        return [name, cls().max_length]
    if name in ("DT", "TM", "DTM"):
        return [name, None]
    probe = cls("x") if name != "TN" else cls("12")
    return ["TN" if name == "TN" else "text", probe.max_length]


def _positional(prefix: str, children: Any, lookup: dict[str, Any]) -> list[list[Any] | None]:
    """Children by position (``PID_3`` at index 2); a gap is filled as hl7apy fills it, from the
    version's table of that name (the child is then optional), or null when no such element exists."""
    by_position: dict[int, list[Any]] = {}
    for child in children:
        owner, _, position = child[0].rpartition("_")
        if owner != prefix or not position.isdigit():
            raise ValueError(f"{prefix}: unexpected child {child[0]}")
        by_position[int(position)] = [child[1][2], child[2][0], child[2][1]]
    out: list[list[Any] | None] = []
    for position in range(1, max(by_position, default=0) + 1):
        entry = by_position.get(position)
        if entry is None and f"{prefix}_{position}" in lookup:
            entry = [lookup[f"{prefix}_{position}"][2], 0, 1]
        out.append(entry)
    return out


def compile_version(version: str) -> dict[str, Any]:
    """The definitions of one HL7 v2 version, read from hl7apy's reference tables."""
    lib = importlib.import_module(importlib.import_module("hl7apy").SUPPORTED_LIBRARIES[version])
    segments: dict[str, list[list[Any] | None]] = {}
    malformed: list[str] = []
    for name, ref in lib.SEGMENTS.items():
        try:
            segments[name] = _positional(name, ref[1], lib.FIELDS)
        except (IndexError, TypeError, ValueError):
            malformed.append(name)  # a broken entry of hl7apy's tables (2.1 ORO): refused when met
    composites = {name: _positional(name, struct, lib.DATATYPES) for name, struct in lib.DATATYPES_STRUCTS.items()}
    return {
        "hl7apy": importlib.metadata.version("hl7apy"),
        "version": version,
        "messages": {name: _children(ref) for name, ref in lib.MESSAGES.items()},
        "groups": {name: _children(ref) for name, ref in lib.GROUPS.items()},
        "segments": segments,
        "composites": composites,
        "malformed_segments": sorted(malformed),
        "primitives": {name: _primitive(cls) for name, cls in lib.get_base_datatypes().items()},
    }


def main() -> None:
    versions = sorted(importlib.import_module("hl7apy").SUPPORTED_LIBRARIES)
    for version in versions:
        data = json.dumps(compile_version(version), separators=(",", ":"), sort_keys=True).encode()
        # mtime=0: the same hl7apy gives byte-identical files (reviewable diffs, reproducible builds).
        (HERE / file_name(version)).write_bytes(gzip.compress(data, mtime=0))
        print(f"{file_name(version)}: {len(data)} bytes of JSON")


if __name__ == "__main__":
    main()
