"""The environments, as one vocabulary: where the hub runs, and which INS roots that implies.

Two enums, because they answer two questions:

* `HubEnvironment` is the ``environment`` setting of the hub and of the
  components that care (production, test, development): production refuses
  sandboxes, test identities, development certificates (``hub/production.py``).
* `Environment` is the INS environment (production, integration, test): which
  INS roots are accepted and stamped (``hub/identity/oids.py``, DOMAIN.md §9.1).

`HubEnvironment.ins_environment` is the one mapping between them: a hub in
production is in the INS production environment; test and development use
the test roots. Both are `StrEnum`: configuration files and stored values keep
their plain strings.
"""

from __future__ import annotations

import enum
from typing import Literal, TypeAlias

__all__ = ["Environment", "HubEnvironment", "HubEnvironmentName", "ins_environment"]


class Environment(enum.StrEnum):
    """Where the hub runs; decides which INS roots it accepts and which it stamps."""

    PRODUCTION = "production"
    INTEGRATION = "integration"
    TEST = "test"


class HubEnvironment(enum.StrEnum):
    """The hub's ``environment`` setting (and that of components checking identities)."""

    PRODUCTION = "production"
    TEST = "test"
    DEVELOPMENT = "development"

    @property
    def ins_environment(self) -> Environment:
        """The INS environment of this hub environment: production, or test (development too)."""
        return Environment.PRODUCTION if self is HubEnvironment.PRODUCTION else Environment.TEST


HubEnvironmentName: TypeAlias = Literal[
    HubEnvironment.PRODUCTION, HubEnvironment.TEST, HubEnvironment.DEVELOPMENT
]
"""A config field's type for `HubEnvironment`: its JSON Schema lists the values inline, as ``Literal`` does."""


def ins_environment(hub_environment: str, *, unknown: Environment = Environment.TEST) -> Environment:
    """The INS environment of a hub environment's name; ``unknown`` for a name that is not one."""
    try:
        return HubEnvironment(hub_environment).ins_environment
    except ValueError:
        return unknown
