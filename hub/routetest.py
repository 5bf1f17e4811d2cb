"""Route tests (`hub test`): test cases kept beside the routes, run without sockets or a store.

A case file (``routes/tests/*.yaml`` by default, `route_tests` in hub.yaml) holds
cases; each gives an input message, the listener it comes from, the routes it
must reach, and what each route's steps must make of it::

    cases:
      - name: local glucose code becomes LOINC
        from: mllp_in
        input: ../../samples/oru_local.hl7        # relative to this file
        routes: [lab_to_dpi]                       # exactly these routes match
        outputs:
          lab_to_dpi:
            file: expected/oru_loinc.hl7           # the whole output, compared segment by segment
            hl7: {OBX[1]-3.1: 2345-7, MSH-5: DPI}  # tests on paths, as in `when:`
            metadata: {receiving_app: DPI}
      - name: unknown code is refused
        from: mllp_in
        input: ../../samples/oru_unknown.hl7
        outputs:
          lab_to_dpi: {reject: "code not in table"}

The message is read as the listener would (the reader of its content type
gives the routing metadata, then the listener's `checks` add theirs), routed with the routes' own `when:`, then each
reached route's steps run as the delivery worker runs them. A failure reads as a
unified diff (expected / got) or as the path and the values found.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.conditions import CONTENT_LANGUAGES, value_test
from hub.config import Settings
from hub.config import _problems as config_problems
from hub.errors import ConfigError, IdentityHold, MessageError
from hub.message import CONTENT_HL7V2, Message
from hub.pipeline import Pipeline, StepContext, route_message
from hub.store import IdentityRecord
from hub.yamlsource import Located, load_located

__all__ = ["CaseResult", "RouteTestCase", "RouteTestFile", "run_route_tests"]

_CONTENT_BY_SUFFIX = {".hl7": CONTENT_HL7V2, ".er7": CONTENT_HL7V2, ".json": "application/fhir+json",
                      ".xml": "application/cda+xml", ".eml": "message/rfc822"}  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ExpectedOutput(_Model):
    file: str | None = Field(None, description="File holding the whole expected output (relative to the case file).")
    reject: str | None = Field(None, description="The steps must refuse the message with a reason holding this text.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Tests on the output metadata, as in `when:`.")
    hl7: dict[str, Any] = Field(default_factory=dict, description="Tests on HL7 paths of the output.")
    fhirpath: dict[str, Any] = Field(default_factory=dict, description="Tests on FHIRPath values of the output.")
    xpath: dict[str, Any] = Field(default_factory=dict, description="Tests on XPath values of the output.")


class IdentityCase(_Model):
    """The identity registry's record of the input's patient, as steps that need it will see it."""

    status: Literal["provisoire", "recuperee", "validee", "qualifiee"] = Field(description="RNIV status.")
    ins: str | None = Field(None, description="The INS (NIR or NIA), when known.")
    ins_oid: str | None = Field(None, description="Its OID (production, NIA, test or demonstration).")
    traits: dict[str, str] = Field(
        default_factory=dict,
        description="Strict traits as the registry keeps them: birth_name, first_birth_given_name, "
        "birth_given_names, birth_date (YYYY-MM-DD), sex (M/F/U), birthplace_code.",
    )


class MailEnvelope(_Model):
    """What MAIL FROM and RCPT TO would have said (RFC 5321 §3.3)."""

    mail_from: str = Field("", description="The envelope sender; empty: the null sender (DSNs, MDNs).")
    rcpt_to: list[str] = Field(min_length=1, description="The envelope recipients.")


class RouteTestCase(_Model):
    name: str = Field(description="What the case shows.")
    from_: str = Field(alias="from", description="Listener the input comes in on.")
    input: str = Field(description="File of the input message, relative to the case file.")
    content_type: str | None = Field(
        None, description="Content type of the input; default from the file suffix (.hl7, .json, .xml)."
    )
    metadata: dict[str, str] = Field(default_factory=dict, description="Metadata the listener would add.")
    envelope: MailEnvelope | None = Field(
        None, description="For a mail listener (smtp_mta, smtp_submission): the SMTP envelope of the input."
    )
    identity: IdentityCase | None = Field(
        None, description="The registry's record of the patient (patient_key from the input); unset: unknown."
    )
    routes: list[str] | None = Field(None, description="Exactly the routes the message must reach; unset: not checked.")
    outputs: dict[str, ExpectedOutput] = Field(
        default_factory=dict, description="By route name: what its steps must make of the message."
    )


class RouteTestFile(_Model):
    cases: list[RouteTestCase] = Field(min_length=1, description="The cases of this file.")


@dataclasses.dataclass
class CaseResult:
    file: Path
    line: int
    name: str
    failures: list[str]

    @property
    def ok(self) -> bool:
        return not self.failures


def _lines(body: bytes, content_type: str) -> list[str]:
    text = body.decode("utf-8", errors="replace")
    if content_type == CONTENT_HL7V2:
        return [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    return text.splitlines()


def _check_output(case_dir: Path, out: Message, want: ExpectedOutput) -> list[str]:
    failures = []
    if want.file is not None:
        expected = (case_dir / want.file).read_bytes()
        a, b = _lines(expected, out.content_type), _lines(out.body, out.content_type)
        if a != b:
            diff = difflib.unified_diff(a, b, fromfile=f"expected {want.file}", tofile="got", lineterm="")
            failures.append("output differs:\n" + "\n".join(diff))
    for key, spec in want.metadata.items():
        have = out.metadata.get(key)
        if not value_test(spec).test(() if have is None else (have,)):
            failures.append(f"metadata {key}: got {have!r}, want {spec!r}")
    for language in CONTENT_LANGUAGES:
        for expr, spec in getattr(want, language).items():
            comp = registry.get("selector", language)
            assert comp is not None
            values = comp.factory(str(expr))(out, {})
            if not value_test(spec).test(values):
                failures.append(f"{language} {expr}: got {values!r}, want {spec!r}")
    return failures


def _run_case(settings: Settings, case: RouteTestCase, case_dir: Path) -> list[str]:
    failures: list[str] = []
    if case.from_ not in settings.hub.listeners:
        return [f"from: unknown listener {case.from_!r}"]
    source = case_dir / case.input
    try:
        messages = _listener_messages(settings, case, source)
    except MessageError as exc:
        return [f"the listener would refuse the input: {exc.reason}"]
    # Every message the listener makes (a mail: the mail, its documents, its MDN) is routed on its own.
    reaching: dict[str, list[Message]] = {}
    for message in messages:
        for route in sorted({d.route for d in route_message(settings.routes, case.from_, message)}):
            reaching.setdefault(route, []).append(message)
    reached = sorted(reaching)
    if case.routes is not None and reached != sorted(case.routes):
        failures.append(f"routes: got {reached}, want {sorted(case.routes)}")
    by_name = {r.route: r for r in settings.routes}
    for route_name, want in case.outputs.items():
        route = by_name.get(route_name)
        if route is None:
            failures.append(f"outputs.{route_name}: no such route")
            continue
        if route_name not in reached:
            failures.append(f"outputs.{route_name}: the route is not reached")
            continue
        pipeline = Pipeline(route.step_specs(), route=route.route, route_dir=settings.route_files[route.route].parent)
        for message in reaching[route_name]:
            failures += _run_route(settings, case, case_dir, pipeline, message, route_name, want)
    return failures


def _listener_messages(settings: Settings, case: RouteTestCase, source: Path) -> list[Message]:
    """What the listener makes of the input: its intake (a mail listener), or one message read as the listener
    reads it (the reader's metadata, then its `checks:`). MessageError: the listener would refuse it."""
    body = source.read_bytes()
    content_type = case.content_type or _CONTENT_BY_SUFFIX.get(source.suffix.lower(), CONTENT_HL7V2)
    listener = settings.listener_config(case.from_)
    intake = registry.get("intake", settings.hub.listeners[case.from_].type)
    if intake is not None:
        envelope = case.envelope.model_dump() if case.envelope else {}
        made: list[Message] = intake.factory(listener, body, envelope)
        extra = {**case.metadata, "endpoint": case.from_}
        return [dataclasses.replace(m, metadata={**m.metadata, **extra}) for m in made]
    metadata = {**case.metadata, "endpoint": case.from_}
    reader = registry.get("reader", content_type)
    if reader is not None:
        metadata.update(reader.factory(body))
    for name in getattr(listener, "checks", []):
        check = registry.get("check", name)
        if check is not None:
            metadata.update(check.factory(body))
    return [Message.new(body, content_type=content_type, metadata=metadata)]


def _run_route(
    settings: Settings, case: RouteTestCase, case_dir: Path, pipeline: Pipeline, message: Message, route_name: str,
    want: ExpectedOutput,
) -> list[str]:  # fmt: skip
    """One route's steps on one message, against what the case expects of them."""
    try:
        out = pipeline.apply(message, _context(settings, case, message))
    except IdentityHold as exc:
        return [f"{route_name}: held for identity ({exc.reason})"]
    except MessageError as exc:
        if want.reject is None or want.reject not in exc.reason:
            wanted = f", want a reason with {want.reject!r}" if want.reject else ""
            return [f"{route_name}: refused ({exc.reason}){wanted}"]
        return []
    if want.reject is not None:
        return [f"{route_name}: accepted, want a refusal with {want.reject!r}"]
    return [f"{route_name}: {f}" for f in _check_output(case_dir, out, want)]


def _context(settings: Settings, case: RouteTestCase, message: Message) -> StepContext:
    record = None
    if case.identity is not None:
        key = message.metadata.get("patient_key", "")
        local_id, _, authority = key.partition("@")
        record = IdentityRecord(
            patient_key=key,
            authority=authority,
            local_id=local_id,
            status=case.identity.status,
            ins=case.identity.ins,
            ins_oid=case.identity.ins_oid,
            traits=case.identity.traits,
        )
    return StepContext(identity=record, environment=settings.hub.environment)


def case_files(settings: Settings) -> list[Path]:
    files: list[Path] = []
    for pattern in settings.hub.route_tests:
        files += [Path(m) for m in sorted(glob.glob(str(settings.path.parent / pattern)))]
    return files


def load_case_files(settings: Settings) -> list[tuple[Path, Located, RouteTestFile]]:
    """Every case file of the config, parsed; ConfigError listing each malformed one as file:line."""
    out = []
    problems: list[str] = []
    for file in case_files(settings):
        try:
            doc = load_located(file)
            out.append((file, doc, RouteTestFile.model_validate(doc.data)))
        except ConfigError as exc:
            problems += exc.problems
        except PydanticValidationError as exc:
            problems += config_problems(doc, exc)
    if problems:
        raise ConfigError(problems)
    return out


def run_route_tests(settings: Settings, *, only: str | None = None) -> list[CaseResult]:
    """Run every case file of the config (those whose name holds `only`); ConfigError on a malformed file."""
    results = []
    for file, doc, parsed in load_case_files(settings):
        for n, case in enumerate(parsed.cases):
            if only and only not in case.name and only not in file.stem:
                continue
            line = int(doc.where(("cases", n)).rsplit(":", 1)[1])
            try:
                failures = _run_case(settings, case, file.parent)
            except OSError as exc:
                failures = [f"cannot read a file of the case ({exc.strerror}: {exc.filename})"]
            results.append(CaseResult(file, line, case.name, failures))
    return results
