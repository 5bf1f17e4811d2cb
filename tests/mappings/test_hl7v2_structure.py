"""The compiled HL7 v2 structure validator (`hl7v2_validate`) gives hl7apy's verdicts.

hl7apy (strict parse + validate) is the reference: the step no longer calls it, this test does.
Every ER7 file of the repository, mutations of each (segments removed, duplicated, swapped;
fields given bad values, extra repetitions, components, subcomponents), and, when
``ANS_HL7V2_EXAMPLES_DIR`` points to a checkout of ansforge/hl7V2-exemples, the ANS examples:
both validators must accept or refuse the same messages, and point at the same place.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from hub.content_types import ContentType
from hub.errors import ParseError, ValidationError
from hub.message import Message
from mappings.hl7v2.er7 import Er7Message
from mappings.hl7v2.structure import supported_versions, validate_structure
from mappings.hl7v2.validate import hl7v2_validate
from tests.mappings.hl7v2_differential import (
    hl7apy_error,
    locations_agree,
    mutations,
    our_verdict,
    repository_messages,
)

MESSAGES = repository_messages()
ORU = (Path(__file__).resolve().parents[2] / "samples" / "oru_r01.hl7").read_bytes()


def _compare(name: str, what: str, body: bytes) -> str | None:
    theirs, ours = hl7apy_error(body), our_verdict(body)
    if (theirs is None) != (ours is None):
        return f"{name} ({what}): hl7apy {theirs!r}, compiled {ours!r}"
    if theirs is not None and ours is not None and not locations_agree(theirs, ours, body):
        return f"{name} ({what}): hl7apy says {theirs}, compiled says {ours.location}: {ours.reason}"
    return None


def test_the_corpus_is_the_repository_s_messages() -> None:
    assert len(MESSAGES) >= 20
    assert any(our_verdict(body) is None for _, body in MESSAGES), "some shipped message must be valid"


@pytest.mark.parametrize(("name", "body"), MESSAGES, ids=[n for n, _ in MESSAGES])
def test_same_verdict_and_location_as_hl7apy(name: str, body: bytes) -> None:
    rng = random.Random(name)  # repeatable per file
    cases = [("as shipped", body), *mutations(body, rng, field_changes=8, segment_changes=10)]
    refused = [what for what, b in cases if our_verdict(b) is not None]
    assert len(refused) >= len(cases) // 4, "the mutations must break most messages"
    disagreements = [d for what, b in cases if (d := _compare(name, what, b))]
    assert not disagreements, "\n".join(disagreements)


ANS = os.environ.get("ANS_HL7V2_EXAMPLES_DIR", "")


@pytest.mark.skipif(not ANS, reason="set ANS_HL7V2_EXAMPLES_DIR to a checkout of ansforge/hl7V2-exemples")
def test_same_verdict_as_hl7apy_on_the_ans_examples() -> None:
    files = sorted(
        p
        for p in Path(ANS).rglob("*")
        if p.is_file() and (p.suffix.lower() in (".er7", ".hl7") or p.name.startswith("Message metier"))
    )
    assert files, "no .er7/.hl7 file under ANS_HL7V2_EXAMPLES_DIR"
    disagreements = []
    for path in files:
        body = path.read_bytes()
        try:
            Er7Message(body)
        except ParseError:
            continue  # not an ER7 message for either validator
        if d := _compare(str(path.relative_to(ANS)), "as published", body):
            disagreements.append(d)
    assert not disagreements, "\n".join(disagreements)


def _with_field(body: bytes, segment: bytes, field: int, value: bytes) -> bytes:
    lines = body.replace(b"\n", b"\r").split(b"\r")
    for i, line in enumerate(lines):
        if line.startswith(segment + b"|"):
            parts = line.split(b"|")
            parts += [b""] * (field + 1 - len(parts))
            parts[field] = value
            lines[i] = b"|".join(parts)
            break
    return b"\r".join(lines)


@pytest.mark.parametrize(
    ("body", "location", "code"),
    [
        (_with_field(ORU, b"PID", 8, b"F~M"), "PID^2^8", "100"),  # PID-8 repeats once at most
        (_with_field(ORU, b"PID", 5, b""), "PID^2^5", "101"),  # PID-5 is required
        (_with_field(ORU, b"PID", 7, b"20251301"), "PID^2^7^1^1^1", "102"),  # no month 13
        (_with_field(ORU, b"PID", 3, b"ID^^^A^PI" + b"^" * 20 + b"X"), "PID^2^3^1^25", "102"),  # CX has 10 components
        (_with_field(ORU, b"OBX", 1, b"12345"), "OBX^4^1^1^1^1", "102"),  # SI is at most 4 digits
        (ORU.replace(b"\rOBR|", b"\rZZZ|"), "OBR", "101"),  # the required OBR of the order group
        (ORU.replace(b"ORU^R01^ORU_R01", b"ORU^R01^NOPE_R01"), "MSH^1^9", "200"),
        (ORU.replace(b"|2.5|", b"|9.9|"), "MSH^1^12", "203"),
    ],
)
def test_refusals_name_the_location_and_the_hl7_error_code(body: bytes, location: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_structure(Er7Message(body))
    assert (caught.value.location, caught.value.code) == (location, code)
    assert "HL7 structure validation failed" in caught.value.reason
    # The reason names places, never what the message says.
    for value in (b"PAT-TROIS", b"DOMINIQUE", b"20251301", b"12345", b"000003"):
        assert value.decode() not in caught.value.reason


def test_the_step_passes_a_valid_message_through_and_refuses_a_broken_one() -> None:
    ok = Message.new(ORU, content_type=ContentType.HL7V2)
    assert hl7v2_validate(ok) is ok
    with pytest.raises(ValidationError, match="HL7 structure"):
        hl7v2_validate(Message.new(_with_field(ORU, b"PID", 8, b"F~M"), content_type=ContentType.HL7V2))


def test_every_hl7_version_of_the_reference_is_compiled_in() -> None:
    from hl7apy import SUPPORTED_LIBRARIES

    assert sorted(supported_versions()) == sorted(SUPPORTED_LIBRARIES)
