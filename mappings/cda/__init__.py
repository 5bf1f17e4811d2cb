"""CDA R2 helpers for the French CI-SIS header: metadata reader and header validator."""

from mappings.cda.header import (
    Violation,
    read_cda_header,
    validate_cda_header,
)

__all__ = [
    "Violation",
    "read_cda_header",
    "validate_cda_header",
]

from mappings.cda import validate as _validate  # noqa: F401  (registers the cda_validate step)
