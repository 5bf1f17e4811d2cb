"""The ``xpath`` selector of route filters: XPath 1.0 (lxml) over a CDA (or any XML) body.

Namespace prefixes available in expressions: ``cda`` and ``hl7`` (urn:hl7-org:v3),
``sdtc`` (urn:hl7-org:sdtc), ``xsi``. The body is parsed with the safe XML parser
(no DTD, no entities, no network, size limits).
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from hub.conditions import Selector
from hub.errors import MessageError
from hub.message import Message
from hub.registry import register
from mappings.xml import parse_xml

__all__ = ["NAMESPACES", "xpath_selector"]

NAMESPACES = {
    "cda": "urn:hl7-org:v3",
    "hl7": "urn:hl7-org:v3",
    "sdtc": "urn:hl7-org:sdtc",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
_XML_TYPES = ("application/cda+xml", "application/xml", "text/xml")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, etree._Element):
        return "".join(value.itertext())
    return str(value)


@register("selector", "xpath")
def xpath_selector(expression: str) -> Selector:
    """XPath, e.g. `/cda:ClinicalDocument/cda:code/@code`: its values in an XML (CDA) body."""
    try:
        compiled = etree.XPath(expression, namespaces=NAMESPACES)
    except etree.XPathSyntaxError as exc:
        raise ValueError(f"XPath syntax error ({exc})") from None

    def select(message: Message, cache: dict[str, Any]) -> list[str]:
        if message.content_type not in _XML_TYPES:
            return []
        if "xml" not in cache:
            try:
                cache["xml"] = parse_xml(message.body)
            except MessageError:
                cache["xml"] = None
        root = cache["xml"]
        if root is None:
            return []
        try:
            result = compiled(root)
        except etree.XPathError:
            return []
        return [_text(v) for v in result] if isinstance(result, list) else [_text(result)]

    return select
