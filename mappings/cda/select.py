"""XPath 1.0 (lxml) over a CDA (or any XML) body: the ``xpath`` selector of route filters and the
`xpath_read` step (values into metadata).

Namespace prefixes available in expressions: ``cda`` and ``hl7`` (urn:hl7-org:v3),
``sdtc`` (urn:hl7-org:sdtc), ``xsi``. The body is parsed with the safe XML parser
(no DTD, no entities, no network, size limits).
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree
from pydantic import Field, field_validator, model_validator

from hub.conditions import Selector
from hub.content_types import ContentType
from hub.errors import MappingError, MessageError, ParseError
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.xml import parse_xml
from mappings.xml.text import element_text

__all__ = ["NAMESPACES", "XpathReadConfig", "xpath_read", "xpath_selector"]

NAMESPACES = {
    "cda": "urn:hl7-org:v3",
    "hl7": "urn:hl7-org:v3",
    "sdtc": "urn:hl7-org:sdtc",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
_XML_TYPES = (ContentType.CDA, "application/xml", "text/xml")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, etree._Element):
        return element_text(value)
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


class XpathReadConfig(ComponentConfig):
    metadata: dict[str, str] = Field(
        min_length=1,
        description="Metadata key -> XPath (prefixes cda, hl7, sdtc, xsi); the key gets the first value found.",
    )
    required: list[str] = Field(
        default_factory=list, description="Keys whose XPath must find a non-empty value, else the message is refused."
    )

    @field_validator("metadata")
    @classmethod
    def _compile(cls, v: dict[str, str]) -> dict[str, str]:
        for key, expression in v.items():
            if not _KEY.match(key):
                raise ValueError(f"{key!r} is not a metadata key (lower case, digits, _)")
            xpath_selector(expression)
        return v

    @model_validator(mode="after")
    def _required_are_read(self) -> XpathReadConfig:
        missing = [k for k in self.required if k not in self.metadata]
        if missing:
            raise ValueError(f"required keys not read: {', '.join(missing)}")
        return self


_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@register("step", "xpath_read", config=XpathReadConfig, consumes=_XML_TYPES, produces=None)
def xpath_read(message: Message, *, config: XpathReadConfig) -> Message:
    """Read values of an XML (CDA) body with XPath into the message metadata; the body is unchanged."""
    cache: dict[str, Any] = {}
    found: dict[str, str] = {}
    for key, expression in config.metadata.items():
        values = [v for v in xpath_selector(expression)(message, cache) if v]
        if values:
            found[key] = values[0]
        elif key in config.required:
            if cache.get("xml") is None:
                raise ParseError("the body is not well-formed XML", code="100")
            raise MappingError(f"xpath_read: {key}: {expression} finds no value")
    return message.derive(body=message.body, **found)
