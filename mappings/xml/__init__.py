"""Safe XML parsing: the single entry point every XML-reading mapping and adapter uses."""

from mappings.xml.safe import (
    DEFAULT_MAX_ATTRIBUTE_CHARS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_ELEMENTS,
    LIBXML2_MAX_DEPTH,
    parse_xml,
    parse_xml_shared,
)

__all__ = [
    "DEFAULT_MAX_ATTRIBUTE_CHARS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ELEMENTS",
    "LIBXML2_MAX_DEPTH",
    "parse_xml",
    "parse_xml_shared",
]
