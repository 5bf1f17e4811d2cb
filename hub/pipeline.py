"""Routing (which destinations a message goes to) and the step chain of a route."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hub import registry
from hub.config import RouteConfig
from hub.message import Message
from hub.store import IdentityRecord, NewDelivery

if TYPE_CHECKING:
    from hub.documents import DocumentVersion

__all__ = ["Pipeline", "StepContext", "route_message"]

Step = Callable[..., Message]


@dataclasses.dataclass(frozen=True, slots=True)
class StepContext:
    """What the hub hands to steps that declared `needs` (e.g. ``identity``)."""

    identity: IdentityRecord | None = None
    identity_override: bool = False
    """An operator released this delivery from identity review: the trait check is waived for it."""
    environment: str = "development"
    documents: Mapping[str, DocumentVersion] | None = None
    """For steps that need ``documents``: setId -> the newest version the hub sent earlier for the
    patient (:mod:`hub.documents`); None when not looked up."""


def route_message(routes: list[RouteConfig], endpoint: str, metadata: Mapping[str, str]) -> list[NewDelivery]:
    """One delivery per (matching route, destination). A route's ordering key comes from the metadata."""
    out = []
    for route in routes:
        if route.matches(endpoint, metadata):
            for dest in route.to:
                key = metadata.get(dest.ordering_key) if dest.ordering_key else None
                out.append(
                    NewDelivery(
                        route=route.route,
                        destination=dest.destination,
                        ordering_key=key or None,
                        max_attempts=dest.retry.max_attempts,
                    )
                )
    return out


class Pipeline:
    """The steps of one route, applied in order. Steps are pure: they raise MessageError to refuse.

    A step is called ``step(message)``, with ``config=`` (its validated settings) when it declares a
    config model, and ``ctx=`` (a :class:`StepContext`) when it declares `needs`.
    """

    def __init__(self, steps: list[str] | list[tuple[str, dict[str, Any]]]) -> None:
        specs = [(s, {}) if isinstance(s, str) else s for s in steps]
        self.names = [name for name, _ in specs]
        self._steps: list[tuple[Step, dict[str, Any], bool]] = []  # (function, its settings, wants the context)
        self.needs_identity = False
        self.needs_documents = False
        for name, settings in specs:
            comp = registry.get("step", name)
            if comp is None:
                raise KeyError(name)
            kwargs: dict[str, Any] = {}
            if comp.config is not registry.NO_CONFIG:
                kwargs["config"] = comp.config.model_validate(settings or {})
            self.needs_identity = self.needs_identity or "identity" in comp.needs
            self.needs_documents = self.needs_documents or "documents" in comp.needs
            self._steps.append((comp.factory, kwargs, bool(comp.needs)))

    def __bool__(self) -> bool:
        return bool(self._steps)

    def apply(self, message: Message, ctx: StepContext | None = None) -> Message:
        context = ctx or StepContext()
        for step, kwargs, wants_context in self._steps:
            message = step(message, ctx=context, **kwargs) if wants_context else step(message, **kwargs)
        return message
