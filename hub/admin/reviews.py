"""What an identity review shows: the registry's value beside the message's, trait by trait, masked per role.

The message's traits are read by the component registered as ``traits`` for
its content type (``mappings.ins``: HL7 v2 PID, CDA recordTarget, FHIR
Patient); the registry's are those the identity registry holds. A viewer sees
which traits differ, never their values; an operator sees the values (an
access recorded in the audit trail, like a payload view).
"""

from __future__ import annotations

from collections.abc import Mapping

from hub import registry
from hub.message import Message

__all__ = ["TRAIT_LABELS", "compare", "message_traits"]

#: The strict traits in the order the RNIV lists them, with the labels the console shows.
TRAIT_LABELS = {
    "birth_name": "birth name",
    "first_birth_given_name": "first birth given name",
    "birth_given_names": "birth given names",
    "birth_date": "birth date",
    "sex": "sex",
    "birthplace_code": "birthplace (INSEE code)",
}
MASK = "•••"


def message_traits(message: Message) -> dict[str, str] | None:
    """The traits the message states, or None when no reader knows its content type or it cannot be read."""
    component = registry.get("traits", message.content_type)
    if component is None:
        return None
    try:
        return dict(component.factory(message))
    except Exception:  # a message the reader cannot parse shows no values; the review reason still says why
        return None


def _key(value: str) -> str:
    return " ".join(value.upper().replace("-", " ").replace("'", " ").split())


def compare(
    registry_traits: Mapping[str, str], message: Mapping[str, str] | None, *, reveal: bool, reason: str
) -> list[dict[str, object]]:
    """One row per trait either side states: {trait, label, registry, message, differs}; values masked unless reveal.

    `differs` comes from the review's reason (the step's own comparison, which knows the RNIV's rules) and,
    for traits it does not name, from a plain comparison of the two texts.
    """
    named = {t.strip() for t in reason.partition(":")[2].split(",") if t.strip()}
    rows = []
    for trait, label in TRAIT_LABELS.items():
        theirs, ours = registry_traits.get(trait, ""), (message or {}).get(trait, "")
        if not theirs and not ours:
            continue
        differs = trait in named or bool(theirs and ours and _key(theirs) != _key(ours))
        rows.append({
            "trait": trait, "label": label, "differs": differs,
            "registry": theirs if reveal or not theirs else MASK, "message": ours if reveal or not ours else MASK,
        })  # fmt: skip
    return rows
