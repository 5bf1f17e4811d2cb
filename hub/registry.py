"""Explicit registry of components: inbound and outbound adapters, pipeline steps, sandboxes, readers.

A *reader* is registered under a content type: a pure function that reads
the routing metadata of a body of that type (raising MessageError when the
body is unusable). Replay uses it to re-read a corrected message. A *text*
codec is registered under a content type too: an object with
``decode(body) -> (charset, text)`` and ``encode(text) -> bytes`` that knows
where that format declares its character set (HL7 v2: MSH-18); the admin API
shows and edits payloads through it. A *check* is a pure function
``check(body) -> metadata`` a listener runs before acknowledging (its
``checks`` setting): it raises MessageError to refuse the message, and the
metadata it returns is added to the message before routing.

An *identity feed* reader is registered under a content type too:
``read(body, *, policy, message_id) -> list[IdentityUpdate]`` turns an
identity message (HL7 v2: a PAM FR ADT) into the identity registry's updates,
raising MessageError when it cannot feed one (the ``identity_registry``
destination, ``hub/identity_sink.py``).

A *field search* is registered under a name (``hl7``): ``parse(text)`` turns
the text of an admin content search into a condition on one field of its format
(``PID-5.1=DUPONT``: ``.value``, ``.position``, ``.matches(text)``), or None.

A *selector* is registered under a path language of route filters (``hl7``,
``fhirpath``, ``xpath``): ``factory(expression)`` compiles an expression
(ValueError when it is not one) into ``select(message, cache) -> list[str]``,
the values it finds in a body (none for a body of another content type).

A *command* is registered under its ``hub`` sub-command (``send``, or
``identity insi`` under ``hub identity``): ``factory(parser)`` adds its
arguments to the argparse parser made for it and sets ``fn``, the function the
command runs (``fn(args) -> exit code``). CLI clients of a wire protocol live
with their adapter this way.

An *intake* is registered under a listener type whose listener turns one input
into several messages (an SMTP listener: the mail, each document of its XDM
archive, an acknowledgement): ``factory(config, body, envelope) -> list[Message]``
does what the listener does with `body` (the listener's config, the envelope as
a mapping such as ``mail_from`` / ``rcpt_to``), without I/O; a refusal raises
MessageError with the listener's reason. ``hub test`` runs it for that listener.

Components register themselves with a decorator when their module is
imported; ``adapters/__init__.py`` and ``mappings/__init__.py`` are plain
lists of imports (no directory scanning), so a broken component fails at
start-up and the full list is greppable. The hub never imports those packages:
:func:`load_builtin` imports the packages named in the ``interop_hub.components``
entry-point group (``pyproject.toml``), so the hub reaches adapters and
mappings only through this module.

Each component declares a pydantic config model with ``extra="forbid"`` and
a description on every field: the models are the reference documentation
(``hub describe NAME`` prints their JSON Schema).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from hub.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_CONFIG",
    "Component",
    "ComponentConfig",
    "Kind",
    "get",
    "load_builtin",
    "names",
    "register",
]

Kind = Literal[
    "inbound",
    "outbound",
    "step",
    "sandbox",
    "reader",
    "text",
    "check",
    "outcome_hook",
    "selector",
    "traits",
    "identity_feed",
    "field_search",
    "command",
    "intake",
]
T = TypeVar("T")

#: The entry-point group naming the packages whose import registers components (``pyproject.toml``).
ENTRY_POINT_GROUP = "interop_hub.components"


class ComponentConfig(BaseModel):
    """Base of every component config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class _NoConfig(ComponentConfig):
    pass


#: The config model of components that take no settings.
NO_CONFIG: type[BaseModel] = _NoConfig


@dataclasses.dataclass(frozen=True)
class Component:
    kind: Kind
    name: str
    factory: Any
    config: type[BaseModel]
    summary: str
    consumes: tuple[str, ...] = ()
    produces: str | None = None
    needs: tuple[str, ...] = ()


_components: dict[tuple[str, str], Component] = {}


def register(
    kind: Kind,
    name: str,
    *,
    config: type[BaseModel] = _NoConfig,
    consumes: tuple[str, ...] = (),
    produces: str | None = None,
    needs: tuple[str, ...] = (),
) -> Callable[[T], T]:
    """Register a component under (kind, name).

    Steps declare the content types they take and give. `needs` names hub
    services: a step that needs ``identity`` is called ``step(message, ctx)``
    with a :class:`hub.pipeline.StepContext` holding the patient's registry
    record; an outbound adapter that needs ``services`` is built as
    ``factory(name, config, services=...)``.
    """

    def deco(obj: T) -> T:
        key = (kind, name)
        if key in _components and _components[key].factory is not obj:
            raise RuntimeError(f"component {kind}/{name} registered twice")
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        _components[key] = Component(kind, name, obj, config, doc[0] if doc else "", consumes, produces, needs)
        return obj

    return deco


def get(kind: Kind, name: str) -> Component | None:
    return _components.get((kind, name))


def names(kind: Kind) -> list[str]:
    return sorted(n for k, n in _components if k == kind)


def load_builtin() -> None:
    """Import every component so that it registers: the hub's own, then each package of the entry-point group.

    The group names this project's ``adapters`` and ``mappings``; an installed third-party package adds
    its connectors by naming its own package there.
    """
    global _loaded
    if _loaded:
        return
    from hub import identity_sink  # noqa: F401  (the hub's own destination: identity feeds into the registry)

    packages = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    if not packages:
        raise ConfigError(f"no component package installed (entry points {ENTRY_POINT_GROUP}): run `make install`")
    for package in packages:
        package.load()
    _loaded = True


_loaded = False
