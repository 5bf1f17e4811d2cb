"""IHE XDS.b for the DMP: the ITI-41 outbound adapter and the pieces it is made of.

* :mod:`adapters.xds.outbound` — ``XdsOutbound``, registered as outbound ``xds``;
* :mod:`adapters.xds.mtom` — MTOM/XOP ``multipart/related`` encoding and decoding;
* :mod:`adapters.xds.soap` — SOAP 1.2 envelopes, WS-Addressing, SOAP faults;
* :mod:`adapters.xds.vihf` — the VIHF SAML assertion, signed and verified.

Importing this package also registers the DMP sandbox (``adapters/sandboxes/dmp.py``,
sandbox ``dmp``), its counterpart, so that one line of ``adapters/__init__.py``
brings both.
"""

from adapters.sandboxes import dmp as _dmp_sandbox  # noqa: F401
from adapters.xds.outbound import TRANSIENT_ERROR_CODES, XdsOutbound, XdsOutboundConfig, classify_registry_response

__all__ = ["TRANSIENT_ERROR_CODES", "XdsOutbound", "XdsOutboundConfig", "classify_registry_response"]
