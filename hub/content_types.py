"""The content types a `Message` carries, as one vocabulary.

`ContentType` is a `StrEnum`: a member *is* its string, so it is stored,
compared and serialised exactly as the plain string always was
(``ContentType.CDA == "application/cda+xml"``). Steps declare what they
consume and produce with these members, and ``hub check`` matches them along
a route. A user step may still use a type of its own (any string).
"""

from __future__ import annotations

import enum

__all__ = ["ContentType"]


class ContentType(enum.StrEnum):
    """The MIME-like type of a message body inside the hub."""

    HL7V2 = "x-application/hl7-v2+er7"
    """HL7 v2 ER7 text (the MSH-18 charset; segments separated by CR)."""
    FHIR = "application/fhir+json"
    """A FHIR R4 resource or Bundle, JSON."""
    CDA = "application/cda+xml"
    """A CDA R2 document (CI-SIS), XML."""
    CDA_DELETION = "application/x-cda-deletion-request"
    """A request to delete a CDA document already shared (HL7 v2 MDM with a deletion order); no CDA body."""
    MAIL = "message/rfc822"
    """An Internet message (MSSanté mail, MDN, DSN), as received or sent."""
