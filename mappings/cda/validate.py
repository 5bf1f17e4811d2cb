"""The `cda_validate` step: an inbound CDA R2 document checked before it goes anywhere.

Parses with the project's safe XML parser (no DTD, no entities, no network,
size and depth limits), checks the CDA R2 top-level structure (children of
ClinicalDocument: known, in order, with their cardinality;
`mappings.cda.structure`) and the CI-SIS header rules
(`mappings.cda.header.validate_cda_header`), and refuses the document with
the precise list of violations (location and rule, never a value). A valid
document goes on with its header metadata (patient INS and IPP, document
type, uniqueId, setId, version, author, confidentiality, facility) added to
the message, so routes after it can use them.

A self-presenting document (ANS "autoprésentable": an XSLT stylesheet that carries the
ClinicalDocument inside its template, so a browser shows it) is accepted as the DMP accepts
it: the one ClinicalDocument inside is what is checked and read, the bytes go on unchanged,
and the metadata say ``cda_self_presenting=Y``.

The full CDA R2 XML schema (POCD_MT000040, every level) is not applied: the
normative XSD is HL7's and no package we may depend on ships it.
"""

from __future__ import annotations

from lxml import etree
from pydantic import Field

from hub.content_types import ContentType
from hub.errors import ValidationError
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.cda.builder import HL7_NS
from mappings.cda.header import read_cda_header, validate_cda_header
from mappings.cda.structure import check_structure
from mappings.xml import parse_xml_shared

__all__ = ["CdaValidateConfig", "cda_validate"]

_MAX_LISTED = 20
_XSLT_NS = "http://www.w3.org/1999/XSL/Transform"
_CLINICAL_DOCUMENT = "{" + HL7_NS + "}ClinicalDocument"


def _unwrap(root: etree._Element) -> tuple[etree._Element, bool]:
    """(the ClinicalDocument to check, whether it came out of a self-presenting wrapper)."""
    if root.tag == _CLINICAL_DOCUMENT or root.tag != "{" + _XSLT_NS + "}stylesheet":
        return root, False
    inside = list(root.iter(_CLINICAL_DOCUMENT))
    if len(inside) != 1:
        return root, False
    return inside[0], True


class CdaValidateConfig(ComponentConfig):
    require_ins: bool = Field(
        False, description="The patient must carry an INS (documents shared to the DMP, DOMAIN.md §3.3)."
    )
    allow_test_ins: bool = Field(True, description="Accept the INS test and demonstration roots (.10, .11).")
    strict_ins_key: bool = Field(False, description="Refuse an INS whose NIR key is wrong.")
    max_bytes: int = Field(16 * 2**20, ge=1024, description="Largest document accepted.")


@register("step", "cda_validate", config=CdaValidateConfig, consumes=(ContentType.CDA,), produces=ContentType.CDA)
def cda_validate(message: Message, config: CdaValidateConfig | None = None) -> Message:
    """Refuse a CDA that breaks the CI-SIS header rules (listing every violation); add its header metadata."""
    cfg = config or CdaValidateConfig()
    # Shared: the destination reads the same bytes next (the DMP's metadata), it need not parse them again.
    root, self_presenting = _unwrap(parse_xml_shared(message.body, max_bytes=cfg.max_bytes))
    violations = check_structure(root) + validate_cda_header(
        root, require_ins=cfg.require_ins, allow_test_ins=cfg.allow_test_ins, strict_ins_key=cfg.strict_ins_key
    )
    if violations:
        listed = "; ".join(str(v) for v in violations[:_MAX_LISTED])
        more = f" (+{len(violations) - _MAX_LISTED} more)" if len(violations) > _MAX_LISTED else ""
        raise ValidationError(f"CDA header: {len(violations)} violation(s): {listed}{more}", code="207")
    metadata = read_cda_header(root)
    if self_presenting:
        metadata["cda_self_presenting"] = "Y"
    return message.derive(body=message.body, **metadata)
