"""Maintenance tool: a NOS value-set XML file → the JSON this package ships (see the package docstring)."""

from __future__ import annotations

import json
import sys

from mappings.xds.jdv import from_nos_xml


def main(argv: list[str]) -> None:
    path, jdv_name, where = argv[:3]
    with open(path, "rb") as fh:
        print(json.dumps(from_nos_xml(fh.read(), jdv_name, where), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
