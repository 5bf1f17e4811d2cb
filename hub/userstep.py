"""The user's own Python steps: ``- python: module:function`` in a route.

A user step has the contract of the built-in steps: a pure function taking a
:class:`hub.message.Message` and returning one, refusing a message by raising
a :class:`hub.errors.MessageError` (``MappingError``, ``ValidationError``),
which rejects the delivery with its reason, stored and replayable. Settings
are declared by annotating a keyword parameter ``config`` with a pydantic
model; the route gives them under ``settings:`` and `hub check` validates them::

    # routes/python/hospital_steps/labs.py
    class CriticalLimits(BaseModel):
        model_config = ConfigDict(extra="forbid")
        analyte: str
        low: float
        high: float

    def flag_critical(message: Message, *, config: CriticalLimits) -> Message: ...

    # a route
    steps:
      - python: {function: hospital_steps.labs:flag_critical, settings: {analyte: 2823-3, low: 3.0, high: 6.0}}

Modules are imported from the folders listed in `python_path` (hub.yaml,
relative to it; default ``../routes/python``), never from the working
directory by accident. `hub check` imports each module, finds the function and
validates its settings, reporting problems as ``file:line``. Any other
exception a user step raises rejects the message naming the exception type
only (its text could quote patient data).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["UserStep", "UserStepSpec", "add_python_path", "load_user_step"]


class UserStepSpec(BaseModel):
    """`- python: ...` in a route: the function, and the settings checked against its `config` model."""

    model_config = ConfigDict(extra="forbid")
    function: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="`package.module:function`, found on `python_path`.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the step, validated against its `config` parameter's model."
    )


class UserStep(typing.NamedTuple):
    function: Callable[..., Any]
    kwargs: dict[str, Any]


def add_python_path(folders: list[Path]) -> None:
    """Make the user's step modules importable (first on sys.path, once each)."""
    for folder in reversed(folders):
        entry = str(folder.resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)


def spec_of(settings: Any) -> UserStepSpec:
    """The spec from `python: module:function` (a text) or `python: {function, settings}`."""
    if isinstance(settings, str):
        return UserStepSpec(function=settings)
    return UserStepSpec.model_validate(settings)


def load_user_step(spec: UserStepSpec) -> UserStep:
    """Import the function and validate its settings; ValueError saying what is wrong."""
    module_name, _, attr = spec.function.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way when imported: report it, never crash
        raise ValueError(f"cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"{module_name!r} has no function {attr!r}")
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:
        raise ValueError(f"{spec.function}: cannot read its type hints ({type(exc).__name__}: {exc})") from None
    params = inspect.signature(function).parameters
    model = hints.get("config")
    if "config" in params:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"{spec.function}: its `config` parameter must be annotated with a pydantic model")
        return UserStep(function, {"config": model.model_validate(spec.settings)})
    if spec.settings:
        raise ValueError(f"{spec.function} takes no settings (it has no `config` parameter)")
    return UserStep(function, {})
