"""CPU per document of each stage of the DMP documents route, in one process (what `bench/documents.py` runs).

Method
------
The lab result of `bench/documents.py` (a 3-result ORU^R01) goes through the same code as in
`hub serve`, stage by stage, without sockets or store: the MLLP reader (MSH and patient key), the
listener checks of the bench's listener (`v2_documents`, `dmp_lot`), the shipped `lab_to_dmp`
route's steps (`ins_stamp` with a qualified identity, `v2_dmp_context`, `v2_oru_to_cda_crbio`
with its PDF copy, `cda_validate`), then the `xds` endpoint's request as `XdsOutbound.build_request`
makes it, split into its parts (metadata and ebRIM, the lot's XAdES signature, the VIHF assertion
and its signature, SOAP envelope and serialisation, MTOM), and what the DMP sandbox does with that
request (MTOM and SOAP reading, VIHF check, lot signature and metadata checks, registration).
Each stage runs `--iterations` times after 20 warm-up calls; the figure is CPU time per call
(`time.process_time`, this process only, so other work on the machine does not count), median
of `--repeats` rounds. The PDF copy is also timed alone (it is part of the CR-BIO row).

Run: `.venv/bin/python bench/document_stages.py` (`--profile STAGE` prints cProfile's top functions
of one stage).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from documents import LAB_ROUTE, ORU, XDS_METADATA, ins_for  # noqa: E402

import mappings.cda.crbio as crbio_module  # noqa: E402
from adapters.sandboxes.dmp import DmpSandbox, DmpSandboxConfig  # noqa: E402
from adapters.xds.mtom import Part, cid_href, decode_related, encode_related  # noqa: E402
from adapters.xds.outbound import XdsOutbound, XdsOutboundConfig, _secret_connection  # noqa: E402
from adapters.xds.soap import ACTION_PNR, envelope, read_envelope  # noqa: E402
from adapters.xds.vihf import build_assertion, subject_for  # noqa: E402
from hub.content_types import ContentType  # noqa: E402
from hub.devpki import make_pki  # noqa: E402
from hub.identity.insi import traits_to_json  # noqa: E402
from hub.identity.traits import Sex, StrictTraits  # noqa: E402
from hub.message import Message  # noqa: E402
from hub.pipeline import Pipeline, StepContext  # noqa: E402
from hub.registry import load_builtin  # noqa: E402
from hub.store import IdentityRecord  # noqa: E402
from mappings.cda.hl7v2_documents import check_v2_documents  # noqa: E402
from mappings.cda.report_pdf import ReportView, render_pdf  # noqa: E402
from mappings.hl7v2.reader import read_hl7v2_metadata  # noqa: E402
from mappings.xds import build_submission, provide_and_register_request  # noqa: E402
from mappings.xds.signature import sign_submission  # noqa: E402
from mappings.xds.v2_context import check_dmp_lot  # noqa: E402
from mappings.xml.safe import _shared as parse_cache  # noqa: E402

NOW = dt.datetime(2025, 3, 1, 10, 20, tzinfo=dt.UTC)


def cpu_per_call(fn: Callable[[], object], iterations: int, repeats: int) -> float:
    """Median over `repeats` rounds of the CPU seconds per call of `fn`."""
    for _ in range(20):
        fn()
    rounds = []
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(iterations):
            fn()
        rounds.append((time.process_time() - start) / iterations)
    return statistics.median(rounds)


def step_of(name: str) -> Pipeline:
    for step in LAB_ROUTE["steps"]:
        if step == name:
            return Pipeline([name])
        if isinstance(step, dict) and name in step:
            return Pipeline([(name, step[name])])
    raise KeyError(name)


def stages(folder: Path) -> tuple[list[tuple[str, Callable[[], object]]], dict[str, Any]]:
    """The stages in route order, each a no-argument callable over the outputs of the stage before."""
    pki = make_pki(folder / "pki")
    oru = ORU.format(cid="LAB0000001", ipp="BP00000").encode()
    metadata = read_hl7v2_metadata(oru)
    message = Message.new(oru, content_type=ContentType.HL7V2, metadata=metadata)
    traits = StrictTraits(
        birth_name="BENCHNOM",
        first_birth_given_name="BENCHPRENOM",
        birth_given_names="BENCHPRENOM",
        birth_date=dt.date(1979, 3, 28),
        sex=Sex.FEMALE,
        birthplace_code="51215",
    )
    record = IdentityRecord(
        patient_key=metadata["patient_key"],
        authority="CHU-X",
        local_id="BP00000",
        status="qualifiee",
        ins=ins_for(0),
        ins_oid="1.2.250.1.213.1.4.10",
        traits=traits_to_json(traits),
    )
    ctx = StepContext(identity=record, environment="test")
    stamp, context, crbio, validate = (
        step_of(n) for n in ("ins_stamp", "v2_dmp_context", "v2_oru_to_cda_crbio", "cda_validate")
    )
    stamped = stamp.apply(message, ctx)
    with_context = context.apply(stamped)
    views: list[ReportView] = []
    crbio_module.render_pdf = lambda view: (views.append(view), render_pdf(view))[1]  # the view, to time alone
    try:
        cda = crbio.apply(with_context)
    finally:
        crbio_module.render_pdf = render_pdf
    validated = validate.apply(cda)

    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    vihf = {"name_id": "810000000002", "subject_id": "InteropHub, bench", "lps_nom": "InteropHub",
            "lps_version": "bench", "lps_homologation_dmp": "HOMOLOG-BENCH"}  # fmt: skip
    out = XdsOutbound(
        "dmp",
        XdsOutboundConfig.model_validate(
            {"endpoint": "https://127.0.0.1:1/repository", "tls": tls, "metadata": XDS_METADATA, "vihf": vihf}
        ),
    )
    cfg = out.config
    assert out._signer is not None and out._lot_signer is not None and cfg.vihf is not None

    def submission() -> Any:
        return build_submission(
            validated.body, cfg.metadata, submission_id=validated.id, submission_time=NOW, metadata=validated.metadata
        )

    sub = submission()
    signed_sub = sign_submission(sub, out._lot_signer)
    cid = f"{sub.document_entry.entry_uuid.removeprefix('urn:uuid:')}@interop-hub"
    assert signed_sub.signature is not None
    sig_cid = f"{signed_sub.signature.entry_uuid.removeprefix('urn:uuid:')}@interop-hub"

    def request_body() -> Any:
        return provide_and_register_request(signed_sub, xop_href=cid_href(cid), signature_href=cid_href(sig_cid))

    def assertion() -> Any:
        lot = signed_sub.submission_set.author
        subject = subject_for(
            cfg.vihf,  # type: ignore[arg-type]
            lot.person,
            lot.specialties,
            lot.institutions[0] if lot.institutions else "",
            signed_sub.document_entry.healthcare_facility_type_code.code,
        )
        return build_assertion(
            cfg.vihf,  # type: ignore[arg-type]
            issuer=out._signer.issuer,  # type: ignore[union-attr]
            structure_id=subject.structure_id or cfg.metadata.structure.id_nat,
            resource_id=signed_sub.document_entry.patient_id,
            now=NOW,
            subject=subject,
            tls_client=True,
            secret_connection=_secret_connection(validated.metadata),
        )

    unsigned = assertion()

    def soap_xml() -> bytes:
        env = envelope(request_body(), action=ACTION_PNR, to=cfg.endpoint, security=[out._signer.sign(assertion())])  # type: ignore[union-attr]
        return etree.tostring(env, xml_declaration=True, encoding="UTF-8")

    xml = soap_xml()
    parts = [
        Part(cid, signed_sub.document_entry.mime_type, signed_sub.document),
        Part(sig_cid, signed_sub.signature.mime_type, signed_sub.signature_document),
    ]
    data, ctype = encode_related(xml, parts, action=ACTION_PNR)

    sandbox = DmpSandbox(
        "dmp",
        DmpSandboxConfig.model_validate(
            {
                "listen": "127.0.0.1:0",
                "max_documents": 1_000_000,
                "known_patients": None,
                "vihf_signer_cert_file": str(pki.client_cert),
            }
        ),
    )

    def sandbox_read() -> Any:
        multipart = decode_related(data, ctype)
        return multipart, read_envelope(multipart.root.body)

    def sandbox_check() -> None:
        multipart, soap = sandbox_read()
        sandbox._lots.clear()
        sandbox.documents.clear()
        sandbox._by_unique_id.clear()
        result = sandbox._provide_and_register(soap, multipart)
        if sandbox.last_errors or result.get("status", "").rsplit(":", 1)[-1] != "Success":
            raise RuntimeError(f"sandbox refused the bench document: {[e.code for e in sandbox.last_errors]}")

    sandbox_check()
    rows: list[tuple[str, Callable[[], object]]] = [
        ("reader (MSH, patient key)", lambda: read_hl7v2_metadata(oru)),
        ("check v2_documents", lambda: check_v2_documents(oru)),
        ("check dmp_lot", lambda: check_dmp_lot(oru)),
        ("step ins_stamp", lambda: stamp.apply(message, ctx)),
        ("step v2_dmp_context", lambda: context.apply(stamped)),
        ("step v2_oru_to_cda_crbio (with PDF)", lambda: crbio.apply(with_context)),
        ("  of which the PDF copy (render_pdf)", lambda: render_pdf(views[0])),
        # cda_validate parses a new document each time, as in the route (the XDS metadata then takes that tree
        # in the route; here, called again and again, it parses).
        ("step cda_validate", lambda: (parse_cache.clear(), validate.apply(cda))[1]),
        ("xds: metadata (build_submission)", submission),
        ("xds: lot XAdES signature", lambda: sign_submission(sub, out._lot_signer)),  # type: ignore[arg-type]
        ("xds: ebRIM request", request_body),
        ("xds: VIHF build", assertion),
        ("xds: VIHF signature", lambda: out._signer.sign(unsigned)),  # type: ignore[union-attr]
        ("xds: whole build_request", lambda: out.build_request(validated, now=NOW)),
        ("sandbox: MTOM + SOAP read", sandbox_read),
        ("sandbox: whole ITI-41 check + register", sandbox_check),
    ]
    info = {"oru": len(oru), "cda": len(cda.body), "request": len(data)}
    return rows, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", metavar="STAGE", help="cProfile one stage (a prefix of its name)")
    args = p.parse_args()
    load_builtin()
    with tempfile.TemporaryDirectory(prefix="hub-bench-stages-") as tmp:
        rows, info = stages(Path(tmp))
        if args.profile:
            name, fn = next((n, f) for n, f in rows if n.startswith(args.profile))
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.iterations):
                fn()
            prof.disable()
            print(f"# {name}, {args.iterations} calls")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
            return
        print(
            f"# Python {platform.python_version()}, {platform.machine()}; CPU time per call (process_time), "
            f"median of {args.repeats} x {args.iterations}; ORU {info['oru']} B, CDA {info['cda']} B, "
            f"ITI-41 request {info['request']} B"
        )
        for name, fn in rows:
            ms = cpu_per_call(fn, args.iterations, args.repeats) * 1000
            print(f"{name:<42} {ms:8.2f} ms")


if __name__ == "__main__":
    main()
