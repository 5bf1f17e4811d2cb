"""Per-message cost of what sits on the ingest path and of each pipeline step, one core.

Method: each function runs on the shipped or test sample for at least `--seconds` (after a
warm-up of 20 calls) in this process; the figure is calls per second and microseconds per
call in CPU time of this process (time.process_time: the load of other work on the machine
does not count). The MLLP hot path runs the "MLLP path" rows; the listener
checks (`checks: [v2_documents, dmp_lot, crbio_input]`) run before the ACK in a worker thread; the steps run in the
delivery workers, off the ACK path, only on routes that list them.

Run: `.venv/bin/python bench/steps.py`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.content_types import ContentType  # noqa: E402
from hub.identity.insi import traits_to_json  # noqa: E402
from hub.identity.traits import Sex, StrictTraits  # noqa: E402
from hub.message import Message  # noqa: E402
from hub.pipeline import Pipeline, StepContext  # noqa: E402
from hub.registry import load_builtin  # noqa: E402
from hub.store import IdentityRecord  # noqa: E402
from mappings.cda.crbio import check_crbio_input  # noqa: E402
from mappings.cda.hl7v2_documents import check_v2_documents  # noqa: E402
from mappings.hl7v2 import build_ack, check_header, read_header  # noqa: E402
from mappings.hl7v2.reader import read_hl7v2_metadata  # noqa: E402

SAMPLES = ROOT / "samples"
CASES = ROOT / "tests" / "mappings" / "cases"
CRBIO = {
    "document_id_root": "1.2.250.1.999.7.1",
    "patient_id_roots": {"CHU-X": "1.2.250.1.999.7.2", "LABO-TEST": "2.999.2.1"},
    "author": {"id": "810000000001", "family": "BIOLOGISTE"},
    "custodian": {"id": "1999000001", "name": "Laboratoire"},
    "practice_setting": {"code": "AMBULATOIRE", "display_name": "Ambulatoire", "code_system": "1.2.250.1.213.1.1.4.9"},
    "healthcare_facility": {"code": "SA25", "display_name": "LBM", "code_system": "1.2.250.1.71.4.2.4"},
}


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Calls per CPU second and CPU µs per call (time.process_time: other load on the machine does not count)."""
    for _ in range(20):
        fn()
    n, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        fn()
        n += 1
    return n / elapsed, elapsed / n * 1e6


def oru_of_size(oru: bytes, size: int) -> bytes:
    """`oru` with its OBX results repeated (new set ids) until it is at least `size` bytes."""
    lines = [line for line in oru.replace(b"\n", b"\r").split(b"\r") if line]
    results = [line for line in lines if line.startswith(b"OBX|")]
    out, n = list(lines), len(results)
    while len(b"\r".join(out)) < size:
        n += 1
        out.append(b"OBX|" + str(n).encode() + b"|" + results[n % len(results)][len(b"OBX|") :].split(b"|", 1)[1])
    return b"\r".join(out) + b"\r"


def hl7apy_strict(body: bytes) -> object:
    """What `hl7v2_validate` did before its definitions were compiled in: hl7apy's strict parse and validate."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    text = body.decode("utf-8").replace("\r\n", "\r").replace("\n", "\r")
    return parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    load_builtin()
    adt = (SAMPLES / "adt_a01.hl7").read_bytes()
    oru = (CASES / "crbio_chemistry_panel" / "input.hl7").read_bytes()
    oru_msg = Message.new(oru, content_type=ContentType.HL7V2, metadata=read_hl7v2_metadata(oru))
    traits = StrictTraits(
        birth_name="TESTCHIMIE",
        first_birth_given_name="ALICE",
        birth_given_names="ALICE MARIE",
        birth_date=dt.date(1985, 7, 12),
        sex=Sex.FEMALE,
        birthplace_code="75112",
    )
    record = IdentityRecord(
        patient_key="IPP0001@LABO-TEST",
        authority="LABO-TEST",
        local_id="IPP0001",
        status="qualifiee",
        ins="285077511234511",
        ins_oid="1.2.250.1.213.1.4.10",
        traits=traits_to_json(traits),
    )
    ctx = StepContext(identity=record, environment="test")
    small_oru = (SAMPLES / "oru_r01.hl7").read_bytes()
    small_msg = Message.new(small_oru, content_type=ContentType.HL7V2, metadata=read_hl7v2_metadata(small_oru))
    validate, stamp = Pipeline(["hl7v2_validate"]), Pipeline(["ins_stamp"])
    crbio, cda_check = Pipeline([("v2_oru_to_cda_crbio", CRBIO)]), Pipeline(["cda_validate"])
    cda = crbio.apply(oru_msg)
    oru_3k = oru_of_size((SAMPLES / "oru_r01.hl7").read_bytes(), 3000)  # valid per HL7 v2.5
    oru_3k_msg = Message.new(oru_3k, content_type=ContentType.HL7V2, metadata=read_hl7v2_metadata(oru_3k))
    validate.apply(oru_3k_msg)  # the row measures acceptance, the usual case

    def header(body: bytes = adt) -> None:
        er7, h = read_header(body)
        check_header(er7, h)

    # The same ADT as a Windows-era sender writes it: MSH-18 8859/1, accented names, in ISO 8859-1.
    adt_latin1 = adt.replace(b"UNICODE UTF-8", b"8859/1").replace(b"PAT-TROIS", "NOËL-HÉLÈNE".encode("latin-1"))
    doc_oru = (CASES / "document_oru_embedded_cda" / "input.hl7").read_bytes()

    _, h = read_header(adt)
    rows: list[tuple[str, Callable[[], object]]] = [
        ("MLLP path: read MSH + patient key (ER7 reader), ADT", header),
        ("MLLP path: the same, Latin-1 ADT (MSH-18 8859/1)", lambda: header(adt_latin1)),
        ("MLLP path: build the ACK", lambda: build_ack(h, "AA")),
        ("MLLP path: Message envelope",
         lambda: Message.new(adt, content_type=ContentType.HL7V2, metadata=h.metadata())),
        ("MLLP check v2_documents, ORU of results", lambda: check_v2_documents(oru)),
        ("MLLP check v2_documents, ORU carrying a CDA", lambda: check_v2_documents(doc_oru)),
        ("MLLP check crbio_input, ORU of results (4 results)", lambda: check_crbio_input(oru)),
        ("MLLP check crbio_input, ORU carrying a CDA (passes)", lambda: check_crbio_input(doc_oru)),
        ("step hl7v2_validate (compiled definitions), 2-result ORU", lambda: validate.apply(small_msg)),
        (f"step hl7v2_validate (compiled definitions), {len(oru_3k)} B ORU", lambda: validate.apply(oru_3k_msg)),
        (f"  reference: hl7apy strict parse+validate, {len(oru_3k)} B ORU", lambda: hl7apy_strict(oru_3k)),
        ("step ins_stamp, ORU (HL7 v2)", lambda: stamp.apply(oru_msg, ctx)),
        ("step v2_oru_to_cda_crbio, 4 results", lambda: crbio.apply(oru_msg)),
        ("step cda_validate, CR-BIO CDA", lambda: cda_check.apply(cda)),
        ("step ins_stamp, CR-BIO CDA", lambda: stamp.apply(cda, ctx)),
    ]
    print(
        f"# {platform.python_version()}, one core of {platform.processor() or platform.machine()}; "
        f"{args.seconds:g} s per row; ADT {len(adt)} B, ORUs {len(small_oru)} / {len(oru)} / {len(doc_oru)} B, "
        f"CDA {len(cda.body)} B"
    )
    for name, fn in rows:
        per_s, us = rate(fn, args.seconds)
        print(f"{name:<55} {per_s:>10,.0f} /s {us:>10,.1f} µs")


if __name__ == "__main__":
    main()
