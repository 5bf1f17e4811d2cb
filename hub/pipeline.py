"""Routing (which destinations a message goes to) and the step chain of a route."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from hub import registry
from hub.config import RouteConfig
from hub.message import Message
from hub.store import IdentityRecord, NewDelivery

__all__ = ["Pipeline", "StepContext", "route_message"]

Step = Callable[..., Message]


@dataclasses.dataclass(frozen=True, slots=True)
class StepContext:
    """What the hub hands to steps that declared `needs` (e.g. ``identity``)."""

    identity: IdentityRecord | None = None
    identity_override: bool = False
    """An operator released this delivery from identity review: the trait check is waived for it."""
    environment: str = "development"


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
    """The steps of one route, applied in order. Steps are pure: they raise MessageError to refuse."""

    def __init__(self, step_names: list[str]) -> None:
        self.names = list(step_names)
        self._steps: list[tuple[Step, bool]] = []
        for name in step_names:
            comp = registry.get("step", name)
            if comp is None:
                raise KeyError(name)
            self._steps.append((comp.factory, bool(comp.needs)))
        self.needs_identity = any("identity" in (registry.get("step", n).needs or ()) for n in step_names)  # type: ignore[union-attr]

    def __bool__(self) -> bool:
        return bool(self._steps)

    def apply(self, message: Message, ctx: StepContext | None = None) -> Message:
        context = ctx or StepContext()
        for step, wants_context in self._steps:
            message = step(message, context) if wants_context else step(message)
        return message
