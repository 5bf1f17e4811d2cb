"""FHIR R4 adapters: the intake served on the hub's HTTP port, the e-Parcours client, and its sandbox.

Importing the package registers inbound ``fhir``, outbound ``fhir`` and
sandbox ``eparcours``.
"""

from adapters.fhir.inbound import FhirInbound, FhirInboundConfig
from adapters.fhir.outbound import FhirOutbound, FhirOutboundConfig, OAuth2Config
from adapters.sandboxes.eparcours import EParcoursSandbox, EParcoursSandboxConfig

__all__ = [
    "EParcoursSandbox",
    "EParcoursSandboxConfig",
    "FhirInbound",
    "FhirInboundConfig",
    "FhirOutbound",
    "FhirOutboundConfig",
    "OAuth2Config",
]
