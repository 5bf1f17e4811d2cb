"""Routing (which destinations a message goes to) and the step chain of a route."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hub import registry
from hub.config import RouteConfig
from hub.message import Message
from hub.store import NewDelivery

__all__ = ["Pipeline", "route_message"]

Step = Callable[[Message], Message]


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
        self._steps: list[Step] = []
        for name in step_names:
            comp = registry.get("step", name)
            if comp is None:
                raise KeyError(name)
            self._steps.append(comp.factory)

    def __bool__(self) -> bool:
        return bool(self._steps)

    def apply(self, message: Message) -> Message:
        for step in self._steps:
            message = step(message)
        return message
