"""The text inside an element, read one way by every mapping."""

from __future__ import annotations

from lxml import etree

__all__ = ["collapsed_text", "element_text"]


def element_text(el: etree._Element) -> str:
    """All the text inside ``el`` (its descendants' too), in document order."""
    # A parsed tree's text nodes are always str; lxml's stubs also allow bytes, which parsed documents never give.
    return "".join(t for t in el.itertext() if isinstance(t, str))


def collapsed_text(el: etree._Element | None) -> str:
    """`element_text` with runs of whitespace collapsed to one space and trimmed; "" without an element."""
    return "" if el is None else " ".join(element_text(el).split())
