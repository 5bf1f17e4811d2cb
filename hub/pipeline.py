"""Routing (which destinations a message goes to) and the step chain of a route."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import registry
from hub.config import RouteConfig
from hub.environments import HubEnvironment
from hub.errors import MappingError, MessageError
from hub.message import Message
from hub.store import IdentityRecord, NewDelivery
from hub.userstep import load_user_step, spec_of

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
    environment: str = HubEnvironment.DEVELOPMENT
    documents: Mapping[str, DocumentVersion] | None = None
    """For steps that need ``documents``: setId -> the newest version the hub sent of it, for the sets
    a step asked about (:mod:`hub.documents`); None until a step asks."""


def route_message(routes: list[RouteConfig], endpoint: str, message: Message) -> list[NewDelivery]:
    """One delivery per (matching route, destination). A route's ordering key comes from the metadata.

    Runs once per message at ingest, before the commit: content conditions (`when: {hl7: ...}`) share
    one parse of the body across every route.
    """
    out = []
    metadata = message.metadata
    cache: dict[str, Any] = {}
    for route in routes:
        if route.matches(endpoint, message, cache):
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

    def __init__(
        self,
        steps: list[str] | list[tuple[str, dict[str, Any]]],
        *,
        route: str = "",
        route_dir: Path | None = None,
    ) -> None:
        """`route` names the route in refusal reasons; `route_dir` is where relative files in settings
        (lookup tables) are found: the route file's folder."""
        self.route = route
        specs = [(s, {}) if isinstance(s, str) else s for s in steps]
        self.names = [name for name, _ in specs]
        self._steps: list[tuple[Step, dict[str, Any], bool]] = []  # (function, its settings, wants the context)
        self._labels: list[str] = []
        self.needs_identity = False
        self.builtin_only = True
        """Every step is a built-in one (no ``python`` user step): pure CPU work, no I/O (see hub/documents.py)."""
        self.cpu_secs: float | None = None
        """CPU time of a recent run of the whole chain, raised at once by a slow run, decaying slowly (None: never
        run); set by :func:`hub.documents.apply_steps`."""
        for name, settings in specs:
            if name == "python":
                self.builtin_only = False
                user = load_user_step(spec_of(settings))
                self._steps.append((_guarded(user.function), user.kwargs, False))
                self._labels.append(f"route {route}, step python" if route else "step python")
                continue
            comp = registry.get("step", name)
            if comp is None:
                raise KeyError(name)
            kwargs: dict[str, Any] = {}
            if comp.config is not registry.NO_CONFIG:
                context = {"route_dir": str(route_dir or ".")}
                kwargs["config"] = comp.config.model_validate(settings or {}, context=context)
            self.needs_identity = self.needs_identity or "identity" in comp.needs
            self._steps.append((comp.factory, kwargs, bool(comp.needs)))
            self._labels.append(f"route {route}, step {name}" if route else f"step {name}")

    def __bool__(self) -> bool:
        return bool(self._steps)

    def apply(self, message: Message, ctx: StepContext | None = None) -> Message:
        context = ctx or StepContext()
        for (step, kwargs, wants_context), label in zip(self._steps, self._labels, strict=True):
            try:
                message = step(message, ctx=context, **kwargs) if wants_context else step(message, **kwargs)
            except MessageError as exc:
                if not self.route:
                    raise
                # The reason names the route and the step, so that the operator knows what to fix.
                raise type(exc)(f"{label}: {exc.reason}", code=exc.code, location=exc.location) from None
        return message


def _guarded(function: Step) -> Step:
    """A user step whose unexpected exceptions refuse the message (by type only: the text may quote data)."""

    def step(message: Message, **kwargs: Any) -> Message:
        try:
            out = function(message, **kwargs)
        except MessageError:
            raise
        except Exception as exc:
            raise MappingError(f"{function.__module__}.{function.__qualname__} raised {type(exc).__name__}") from None
        if not isinstance(out, Message):
            raise MappingError(f"{function.__module__}.{function.__qualname__} returned no Message")
        return out

    return step
