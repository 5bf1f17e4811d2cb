"""Cost of the `hl7v2_map` step on a 3 kB ORU, one core, and of content conditions in `when:`.

Method: the ORU of tests/mappings/cases/crbio_chemistry_panel (2.7 kB, 14 OBX), its four results
given local lab codes, goes through a 12-rule mapping typical of a hospital interface: MSH-5/6 set,
local codes -> LOINC through a 500-row CSV table on every OBX (with a condition on OBX-3.3),
PID-3 reordered (PI first, others dropped), a default for PV1-2, a copy, a delete, the ten Ségur
MetaDMPMSS OBX removed, a Z segment added and filled. Each function runs for at least `--seconds`
after a warm-up of 20 calls, in this process; figures are calls per second and microseconds per
call (wall clock, time.perf_counter), and calls per CPU second of the process (time.process_time:
the per-core figure, less disturbed by other processes on a shared machine), with the peak RSS.

Run: `.venv/bin/python bench/hl7v2_map.py`.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.config import RouteConfig  # noqa: E402
from hub.content_types import ContentType  # noqa: E402
from hub.message import Message  # noqa: E402
from hub.pipeline import Pipeline, route_message  # noqa: E402
from hub.registry import load_builtin  # noqa: E402
from mappings.hl7v2.fieldmap import Hl7v2MapConfig, map_er7  # noqa: E402
from mappings.hl7v2.reader import read_hl7v2_metadata  # noqa: E402

ORU = ROOT / "tests" / "mappings" / "cases" / "crbio_chemistry_panel" / "input.hl7"
LOCAL = {"2345-7": "GLU", "2160-0": "CREA", "2823-3": "K", "2951-2": "NA"}

RULES = [
    {"set": "MSH-5", "value": "DPI-B"},
    {"set": "MSH-6", "value": "CHU-B"},
    {
        "translate": "OBX[*]-3.1",
        "table": "lab",
        "to": {"OBX-3.1": "loinc", "OBX-3.2": "label", "OBX-3.3": "system"},
        "if": {"path": "OBX-3.3", "equals": "L"},
    },
    {"reorder": "PID-3", "by": "5", "order": ["PI", "INS"], "drop_unlisted": True},
    {"set": "PV1-2", "value": "O", "if_empty": True},
    {"copy": "PID-3[1].1", "to": "PID-2"},
    {"delete": "PID-11"},
    {"remove_segment": "OBX", "if": {"path": "OBX-3.3", "equals": "MetaDMPMSS"}},
    {"add_segment": "ZPI", "after": "PID"},
    {"set": "ZPI-1", "value": "1"},
    {"set": "ZPI-2", "value": "LAB-B", "if": {"path": "MSH-3", "in": ["SGL-TEST", "SGL-PROD"]}},
    {"set": "OBX[*]-11", "value": "F", "if_empty": True},
]


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float, float]:
    """(calls per wall-clock second, µs per call, calls per CPU second of this process)."""
    for _ in range(20):
        fn()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        n += 1
    return n / elapsed, elapsed / n * 1e6, n / (time.process_time() - cpu)


def local_oru() -> bytes:
    text = ORU.read_text(encoding="utf-8")
    for loinc, local in LOCAL.items():
        text = text.replace(f"|{loinc}^", f"|{local}^")
    lines = text.splitlines()
    out = []
    for line in lines:
        if line.startswith("OBX|") and any(f"|{c}^" in line for c in LOCAL.values()):
            f = line.split("|")
            comps = f[3].split("^")
            f[3] = "^".join([comps[0], comps[1], "L"])
            line = "|".join(f)
        out.append(line)
    return "\r".join(out).encode("utf-8")


def write_table(folder: Path) -> None:
    rows = ["local,loinc,label,system"]
    rows += [f"X{n:03d},{10000 + n}-0,Analyse {n},LN" for n in range(496)]
    rows += [f"{local},{loinc},Libellé {local},LN" for loinc, local in LOCAL.items()]
    (folder / "lab.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    load_builtin()
    body = local_oru()
    meta = read_hl7v2_metadata(body)
    message = Message.new(body, content_type=ContentType.HL7V2, metadata=meta)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_table(folder)
        settings = {"tables": {"lab": "lab.csv"}, "rules": RULES}
        config = Hl7v2MapConfig.model_validate(settings, context={"route_dir": tmp})
        pipeline = Pipeline([("hl7v2_map", settings)], route="bench", route_dir=folder)
        out, _ = map_er7(body, config)
        assert b"2345-7^Libell" in out and b"MetaDMPMSS" not in out and b"\rZPI|1|LAB-B" in out
        rows = [
            ("hl7v2_map, 12 rules (map_er7: decode, edit, encode)", lambda: map_er7(body, config)),
            ("hl7v2_map as a pipeline step (+ derived Message)", lambda: pipeline.apply(message)),
        ]
        routes = [
            RouteConfig.model_validate(
                {"route": f"r{n}", "from": "mllp_in", "when": when, "to": [{"destination": "x"}]}
            )
            for n, when in enumerate(
                [
                    {"message_type": ["ADT^A01", "ADT^A04"]},
                    {"message_type": "ORU^R01", "sending_facility": {"matches": "^LABO-"}},
                    {"message_type": "ORU^R01", "hl7": {"PV1-2": "I"}},
                    {"hl7": {"OBX[*]-3.1": ["2345-7", "GLU"], "PID-3[*].5": {"present": True}}},
                ]
            )
        ]
        for route in routes:
            route.compile_conditions()
        rows += [
            (
                "route_message, 4 routes: metadata only",
                lambda: route_message(routes[:2], "mllp_in", message),
            ),
            (
                "route_message, 4 routes: 2 metadata + 2 with HL7 paths (one parse)",
                lambda: route_message(routes, "mllp_in", message),
            ),
        ]
        print(f"# bench/hl7v2_map.py on {platform.python_implementation()} {platform.python_version()}, "
              f"{platform.machine()}, input {len(body)} bytes, output {len(out)} bytes")  # fmt: skip
        print(f"{'':70s} {'wall /s':>10s} {'µs/call':>9s} {'CPU /s':>10s}")
        for label, fn in rows:
            per_sec, micros, per_cpu = rate(fn, args.seconds)
            print(f"{label:70s} {per_sec:10,.0f} {micros:9.1f} {per_cpu:10,.0f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
