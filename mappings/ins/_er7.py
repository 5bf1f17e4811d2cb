"""ER7 helpers shared by the PAM reader and the HL7 v2 stamper: CX/HD pieces.

Character sets, escaping and decoding live in the one HL7 v2 text layer,
:mod:`mappings.hl7v2.er7` (re-exported here for the identity modules):
identity work reads and writes names, so it decodes with the character set
MSH-18 declares and re-encodes with the same one, leaving every byte it does
not change as it was.
"""

from __future__ import annotations

from mappings.hl7v2.er7 import Delimiters, decode_er7, encode_er7, escape

__all__ = ["decode_er7", "encode_er7", "escape", "set_component"]


def set_component(repetition: str, index: int, raw_value: str, d: Delimiters) -> str:
    """Return ``repetition`` with component ``index`` (1-based) set to an already escaped value."""
    comps = repetition.split(d.component)
    if len(comps) < index:
        comps.extend([""] * (index - len(comps)))
    comps[index - 1] = raw_value
    return d.component.join(comps)
