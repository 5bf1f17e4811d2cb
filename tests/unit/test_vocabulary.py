"""One vocabulary: the enums' values are pinned (stored data must not change), and no raw literal comes back.

The second half reads the source with `ast`, not with a text search: it looks
for a vocabulary value written as a plain string *where the vocabulary
applies* — compared with a ``status``/``state``/``content_type``/``environment``,
passed as such a keyword, assigned to such a name, or listed in a
``Literal[...]`` made only of one vocabulary's values. A string that merely
spells the same word elsewhere (an RFC 3464 DSN action ``failed``, a counter
named ``rejected``, SQL text) is not that vocabulary and is left alone.
"""

from __future__ import annotations

import ast
import enum
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.content_types import ContentType
from hub.environments import Environment, HubEnvironment, ins_environment
from hub.identity import IdentityStatus
from hub.message import CONTENT_HL7V2
from hub.statuses import BLOCKING_STATUSES, FINAL_STATUSES, HELD_STATUSES, DeliveryStatus, MessageStatus, ReviewState

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "adapters", "mappings")


def test_stored_values_are_pinned() -> None:
    # These strings are in databases, audit records, API responses and configuration files: never change one.
    assert {m.name: m.value for m in DeliveryStatus} == {
        "PENDING": "pending", "IN_FLIGHT": "in_flight", "AWAITING_IDENTITY": "awaiting_identity",
        "IDENTITY_REVIEW": "identity_review", "DELIVERED": "delivered", "DEAD": "dead", "DISCARDED": "discarded",
    }  # fmt: skip
    assert {m.name: m.value for m in MessageStatus} == {
        "PENDING": "pending", "AWAITING_IDENTITY": "awaiting_identity", "IDENTITY_REVIEW": "identity_review",
        "DELIVERED": "delivered", "FAILED": "failed", "REJECTED": "rejected", "UNROUTED": "unrouted",
    }  # fmt: skip
    assert {m.name: m.value for m in ReviewState} == {"OPEN": "open", "RELEASED": "released", "DISCARDED": "discarded"}
    assert {m.name: m.value for m in IdentityStatus} == {
        "PROVISOIRE": "provisoire", "RECUPEREE": "recuperee", "VALIDEE": "validee", "QUALIFIEE": "qualifiee",
    }  # fmt: skip
    assert {m.name: m.value for m in ContentType} == {
        "HL7V2": "x-application/hl7-v2+er7", "FHIR": "application/fhir+json", "CDA": "application/cda+xml",
        "CDA_DELETION": "application/x-cda-deletion-request", "MAIL": "message/rfc822",
    }  # fmt: skip
    assert {m.name: m.value for m in Environment} == {
        "PRODUCTION": "production", "INTEGRATION": "integration", "TEST": "test",
    }  # fmt: skip
    assert {m.name: m.value for m in HubEnvironment} == {
        "PRODUCTION": "production", "TEST": "test", "DEVELOPMENT": "development",
    }  # fmt: skip
    assert CONTENT_HL7V2 is ContentType.HL7V2


def test_groups_of_statuses() -> None:
    assert set(HELD_STATUSES) == {"awaiting_identity", "identity_review"}
    assert set(BLOCKING_STATUSES) == {"pending", "in_flight", "awaiting_identity", "identity_review"}
    assert set(FINAL_STATUSES) == {"delivered", "dead", "discarded"}


def test_members_are_their_strings() -> None:
    # StrEnum: what is written to SQL parameters, JSON and f-strings is the value, never "DeliveryStatus.DEAD".
    import json

    assert json.dumps({"s": DeliveryStatus.DEAD}) == '{"s": "dead"}'
    assert f"{ContentType.CDA}" == str(ContentType.CDA) == "application/cda+xml"
    assert DeliveryStatus("dead") is DeliveryStatus.DEAD and DeliveryStatus.DEAD == "dead"


def test_hub_environment_maps_to_ins_environment() -> None:
    assert HubEnvironment.PRODUCTION.ins_environment is Environment.PRODUCTION
    assert HubEnvironment.TEST.ins_environment is Environment.TEST
    assert HubEnvironment.DEVELOPMENT.ins_environment is Environment.TEST
    assert ins_environment("production") is Environment.PRODUCTION
    assert ins_environment("integration") is Environment.TEST
    assert ins_environment("staging", unknown=Environment.PRODUCTION) is Environment.PRODUCTION


# -- no raw literal where a vocabulary exists ----------------------------------------------------------------------

#: (vocabulary, the names that hold a value of it, its values)
VOCABULARIES: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = (
    (
        "hub.statuses",
        frozenset({"status", "statuses", "state", "states"}),
        frozenset(m.value for e in (DeliveryStatus, MessageStatus, ReviewState) for m in e),
    ),
    (
        "hub.identity.IdentityStatus",
        frozenset({"status", "identity_status"}),
        frozenset(m.value for m in IdentityStatus),
    ),
    ("hub.content_types", frozenset({"content_type", "consumes", "produces"}), frozenset(m.value for m in ContentType)),
    (
        "hub.environments",
        frozenset({"environment", "env"}),
        frozenset(m.value for m in (*Environment, *HubEnvironment)),
    ),
)
#: The modules that define the vocabularies.
DEFINITIONS = {"hub/statuses.py", "hub/content_types.py", "hub/environments.py", "hub/identity/rniv.py"}


def _name(node: ast.AST) -> str | None:
    """The name an expression stands for: ``status``, ``d.status``, ``row["status"]``, ``args.status``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value  # meta.get("identity_status")
    return None


def _strings(node: ast.AST | None) -> Iterator[ast.Constant]:
    """The string constants a value is made of: itself, a tuple/list/set of them, either branch of ``a if c else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for item in node.elts:
            yield from _strings(item)
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def _elements(node: ast.expr) -> list[ast.expr]:
    return list(node.elts) if isinstance(node, ast.Tuple) else [node]


def _held_values(node: ast.AST) -> Iterator[tuple[ast.Constant, str | None]]:
    """(constant, the name that holds it) for a comparison, a keyword argument or an assignment."""
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        for side in sides:
            for other in sides:
                if other is not side:
                    yield from ((c, _name(side)) for c in _strings(other))
    elif isinstance(node, ast.keyword):
        yield from ((c, node.arg) for c in _strings(node.value))
    elif isinstance(node, ast.Assign):
        for target in node.targets:
            yield from ((c, _name(target)) for c in _strings(node.value))
    elif isinstance(node, ast.AnnAssign):
        yield from ((c, _name(node.target)) for c in _strings(node.value))


def _listed_values(node: ast.AST) -> list[ast.Constant]:
    """The items of a tuple/list/set/Literal made only of string constants (at least two)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        elts = list(node.elts)
    elif isinstance(node, ast.Subscript) and _name(node.value) == "Literal":
        elts = _elements(node.slice)
    else:
        return []
    items = [c for c in elts if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return items if len(items) > 1 and len(items) == len(elts) else []


def raw_literals(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: 'value' (vocabulary)`` for each vocabulary value written as a plain string where it applies."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        for constant, holder in _held_values(node):
            for vocabulary, names, values in VOCABULARIES:
                if holder in names and constant.value in values:
                    found.add(f"{filename}:{constant.lineno}: {constant.value!r} ({vocabulary})")
        # A collection (or a Literal) made only of one vocabulary's values is a list of its members.
        items = _listed_values(node)
        listed = (v for v, _names, values in VOCABULARIES if items and all(c.value in values for c in items))
        vocabulary = next(listed, None)
        if vocabulary:
            found.update(f"{filename}:{c.lineno}: {c.value!r} ({vocabulary})" for c in items)
    return sorted(found)


def _sources() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() not in DEFINITIONS:
                yield path


def test_no_raw_vocabulary_literal_in_the_source() -> None:
    found = [hit for path in _sources() for hit in raw_literals(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "use the enum, not its string:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        'if d.status == "dead": pass',
        'if row["status"] in ("pending", "in_flight"): pass',
        'store.find_deliveries(status="dead")',
        'status = "delivered" if ok else "pending"',
        'x: Literal["open", "released", "discarded"]',
        '_ORDER = ("failed", "identity_review", "pending")',
        'parser.add_argument("--state", choices=["open", "released", "discarded"])',
        'if record.status != "qualifiee": pass',
        'if meta.get("identity_status") != "qualifiee": pass',
        'Message.new(b"", content_type="application/fhir+json")',
        'if config.environment == "production": pass',
    ],
)
def test_the_check_finds_a_raw_literal(snippet: str) -> None:
    assert raw_literals(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "if d.status == DeliveryStatus.DEAD: pass",
        'if f.action == "failed": pass',  # an RFC 3464 DSN action, not a message status
        'self.hourly.add(route, destination, "dead")',  # a counter's name
        'db.execute("UPDATE deliveries SET status = \'dead\'")',
        'x: Literal["open", "closed"]',
        '__slots__ = ("accepted", "duplicates", "received", "refused", "rejected")',
        'headers = {"Content-Type": "application/fhir+json"}',
    ],
)
def test_the_check_leaves_other_strings_alone(snippet: str) -> None:
    assert not raw_literals(snippet), snippet


def test_every_vocabulary_is_a_str_enum() -> None:
    for vocabulary in (DeliveryStatus, MessageStatus, ReviewState, IdentityStatus, ContentType, Environment):
        assert issubclass(vocabulary, enum.StrEnum)
