"""The hospital's own lab step: flag critical values, which a declarative mapping cannot compute.

A user step is a pure function Message -> Message with a pydantic settings model
(see hub/userstep.py). It reads and writes HL7 v2 through the hub's text layer
(encoding characters from MSH-1/2, MSH-18 charset, escapes), and refuses a
message by raising MappingError with a reason that names a path, never a value.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hub.errors import MappingError
from hub.message import Message
from mappings.hl7v2.er7 import Er7Message, encode_er7
from mappings.hl7v2.paths import Er7Edit, Hl7Path

OBX_CODE, OBX_VALUE, OBX_FLAG = Hl7Path.parse("OBX-3.1"), Hl7Path.parse("OBX-5"), Hl7Path.parse("OBX-8")


class CriticalLimits(BaseModel):
    """Critical (panic) limits of one analyte, in the unit the lab sends."""

    model_config = ConfigDict(extra="forbid")
    analyte: str = Field(description="OBX-3.1 code of the analyte (after translation: LOINC).")
    low: float = Field(description="Below this: OBX-8 = LL.")
    high: float = Field(description="Above this: OBX-8 = HH.")


def flag_critical(message: Message, *, config: CriticalLimits) -> Message:
    """Set OBX-8 to LL or HH (HL7 table 0078) on results of `analyte` beyond the critical limits."""
    edit = Er7Edit(Er7Message(message.body))  # decoded in its MSH-18 character set
    changed = False
    for i in edit.occurrences("OBX"):
        if edit.values(OBX_CODE, ("OBX", i)) != [config.analyte]:
            continue
        raw = edit.values(OBX_VALUE, ("OBX", i))[0].replace(",", ".")
        try:
            value = float(raw)
        except ValueError:
            raise MappingError(f"OBX-5 of {config.analyte} is not a number", location="OBX^5") from None
        flag = "LL" if value < config.low else "HH" if value > config.high else ""
        if flag:
            edit.put(i, OBX_FLAG, flag)
            changed = True
    if not changed:
        return message
    return message.derive(body=encode_er7(edit.text(), edit.codec), critical_result="true")
