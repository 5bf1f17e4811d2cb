"""Maintenance tool: a published NOS XML or ANS FSH file → the JSON this package ships (see the package docstring)."""

from __future__ import annotations

import json
import sys

from mappings.xds.jdv import from_fsh_value_set, from_nos_xml


def main(argv: list[str]) -> None:
    path, jdv_name, where = argv[:3]
    with open(path, "rb") as fh:
        raw = fh.read()
    if path.endswith(".fsh"):
        data = from_fsh_value_set(raw.decode("utf-8"), jdv_name, where)
    else:
        data = from_nos_xml(raw, jdv_name, where)
    print(json.dumps(data, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
