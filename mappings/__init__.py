"""Built-in pipeline steps (pure functions Message -> Message). Importing a module registers it."""

from mappings.hl7v2 import reader as _hl7v2_reader  # noqa: F401
from mappings.hl7v2 import validate as _hl7v2_validate  # noqa: F401
from mappings.ins import steps as _ins_steps  # noqa: F401
