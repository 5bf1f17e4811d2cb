"""The one way the hub turns untrusted bytes into an lxml tree.

Every XML payload the hub reads (CDA documents, XDS responses, SOAP
envelopes) comes from outside and goes through :func:`parse_xml`, which
closes the classic XML attack surface:

* **No DTD processing at all.** A document that declares a DOCTYPE is
  refused, which rules out entity expansion (billion laughs, quadratic
  blowup), external entities (``file://``, ``http://``), external DTDs and
  parameter entities. CDA R2 documents never carry a DOCTYPE: their grammar
  is a W3C XML Schema (CDA.xsd), so nothing legitimate is lost.
* **No network, no file access.** ``no_network`` is on and a resolver refuses
  every URL libxml2 would try to load, as a second wall behind the DOCTYPE
  refusal.
* **No XInclude.** lxml only processes XInclude when asked
  (``tree.xinclude()``); this module never asks, so an ``xi:include``
  element stays an inert element.
* **Bounded work.** ``huge_tree`` stays off (libxml2 then caps text nodes at
  10 MB and nesting at 256 levels), and the caller's limits are enforced
  while parsing, so a hostile document is abandoned after at most one chunk
  past the limit: total size, element depth, element count, attribute length.
  The 10 MB text cap also bounds a CDA level 1 body: its base64 ``text`` is
  one text node, so an embedded file over about 7.5 MB is refused. When the
  input is too small to break the element or attribute limit and the depth
  limit is libxml2's own, it is parsed in one call instead (no Python work per
  element); whatever that refuses is parsed again the chunked way, so every
  refusal reads the same.

Refusals raise :class:`hub.errors.TooLarge` (input size) or
:class:`hub.errors.ParseError` (everything else). Their reasons and locations
never quote the document: libxml2's own messages can echo tag names and
entity names, so they are replaced by a fixed text chosen from the error code.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, TypedDict

from lxml import etree

if TYPE_CHECKING:  # a name of lxml's type stubs only
    from lxml.etree._docloader import _InputDocument

from hub.errors import ParseError, TooLarge

__all__ = [
    "DEFAULT_MAX_ATTRIBUTE_CHARS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ELEMENTS",
    "LIBXML2_MAX_DEPTH",
    "parse_xml",
    "parse_xml_shared",
]

DEFAULT_MAX_BYTES = 16 * 2**20
DEFAULT_MAX_DEPTH = 256
DEFAULT_MAX_ATTRIBUTE_CHARS = 2**20
DEFAULT_MAX_ELEMENTS = 1_000_000

# libxml2 refuses deeper documents by itself unless XML_PARSE_HUGE is set,
# which this module never sets; a larger max_depth could never be reached.
LIBXML2_MAX_DEPTH = 256

# Bytes fed to libxml2 at a time: the limits below are checked between
# chunks, so this bounds the work done past a limit.
_CHUNK_BYTES = 64 * 1024

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF16_NO_BOM = (b"<\x00?\x00", b"\x00<\x00?")
_XML_SPACE = b" \t\r\n"

_ERROR_NAMES = {v: k for k, v in vars(etree.ErrorTypes).items() if isinstance(v, int)}

# Fixed reasons for the libxml2 errors a hostile or broken document triggers
# most often; any other code gets a generic reason naming the code.
_REASONS = {
    "ERR_DOCUMENT_EMPTY": "no XML root element found",
    "ERR_DOCUMENT_END": "content after the root element",
    "ERR_TAG_NAME_MISMATCH": "mismatched end tag",
    "ERR_TAG_NOT_FINISHED": "truncated XML: element not closed",
    "ERR_GT_REQUIRED": "truncated XML: tag not closed",
    "ERR_LTSLASH_REQUIRED": "truncated XML: end tag expected",
    "ERR_UNDECLARED_ENTITY": "reference to an undeclared entity",
    "WAR_UNDECLARED_ENTITY": "reference to an undeclared entity",
    "ERR_INVALID_CHAR": "character not allowed in XML",
    "ERR_INVALID_ENCODING": "bytes invalid in the declared encoding",
    "ERR_UNSUPPORTED_ENCODING": "unsupported character encoding",
    "ERR_DOCUMENT_START": "not an XML document",
    "ERR_EXT_ENTITY_STANDALONE": "external entity refused",
    "ERR_ENTITY_LOOP": "entity reference loop",
    "ERR_ENTITY_AMPLIFICATION": "entity expansion limit exceeded",
}


class _DenyResolver(etree.Resolver):
    """Answers every load request with nothing and remembers that one was made."""

    def __init__(self) -> None:
        super().__init__()
        self.attempted = False

    def resolve(self, system_url: str | None, public_id: str | None, context: object, /) -> _InputDocument:
        self.attempted = True
        return self.resolve_string("", context)


def _check_input(
    data: bytes | bytearray | memoryview, max_bytes: int, max_depth: int, max_attribute_chars: int, max_elements: int
) -> bytes:
    """The input as bytes once the limits are sane and it is small enough, not empty and declares no DOCTYPE."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes; decode nothing before parsing")
    if not 1 <= max_depth <= LIBXML2_MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {LIBXML2_MAX_DEPTH}")
    if max_bytes < 1 or max_attribute_chars < 1 or max_elements < 1:
        raise ValueError("XML limits must be positive")
    data = bytes(data)
    if len(data) > max_bytes:
        raise TooLarge(f"XML document over {max_bytes} bytes")
    if not data.strip(_XML_SPACE):
        raise ParseError("empty XML document")
    if _declares_doctype(data):
        raise ParseError("DOCTYPE declarations are not allowed", location="prolog")
    return data


def _check_attribute_lengths(element: etree._Element, max_attribute_chars: int) -> None:
    for value in element.attrib.values():
        if len(value) > max_attribute_chars:
            raise ParseError(
                f"attribute value longer than {max_attribute_chars} characters",
                location=_line(element),
            )


def parse_xml(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_attribute_chars: int = DEFAULT_MAX_ATTRIBUTE_CHARS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> etree._Element:
    """Parse untrusted XML bytes into their root element, refusing anything unsafe.

    ``data`` must be bytes: the encoding comes from the BOM or the XML
    declaration (UTF-8 by default; UTF-16 needs a BOM), never from the caller.

    Limits (all inclusive): ``max_bytes`` of input, ``max_depth`` levels of
    element nesting (the root is level 1; at most :data:`LIBXML2_MAX_DEPTH`),
    ``max_attribute_chars`` characters in any one attribute value and
    ``max_elements`` elements in the whole document.

    Raises :class:`hub.errors.TooLarge` when the input is over ``max_bytes``
    and :class:`hub.errors.ParseError` when it is not well-formed XML,
    declares a DOCTYPE, tries to load an external resource or breaks a limit.
    ``ValueError`` means a limit argument itself is out of range.
    """
    data = _check_input(data, max_bytes, max_depth, max_attribute_chars, max_elements)
    # An element takes at least 4 bytes ("<a/>") and an attribute value at most one character per
    # byte, so below these sizes only the depth can break a limit, and at the default depth libxml2
    # refuses deeper documents by itself: one libxml2 parse with no Python per element is enough.
    if max_depth == LIBXML2_MAX_DEPTH and len(data) <= 4 * max_elements and len(data) <= max_attribute_chars:
        root = _parse_whole(data)
        if root is not None:
            return root
    return _parse_in_chunks(data, max_depth, max_attribute_chars, max_elements)


#: Documents up to this size stay parsed for :func:`parse_xml_shared` (a CDA of a few tens of kB is a few
#: hundred kB of tree; larger ones are parsed every time rather than kept).
SHARED_MAX_BYTES = 256 * 1024
#: Trees kept: the reader comes right after the check, and takes the tree (``last``). Keeping trees
#: longer (8, and read without taking) measured no better in the running hub: the steps then parsed
#: into fresh memory while older trees stayed allocated, and lost what the second reader saved.
_SHARED_ENTRIES = 2
_shared: OrderedDict[tuple[int, bytes, int], etree._Element] = OrderedDict()
_shared_lock = threading.Lock()


def parse_xml_shared(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, last: bool = False) -> etree._Element:
    """:func:`parse_xml` for readers that never change the tree: the same bytes give the same tree.

    Why: a route checks a document (``cda_validate``) and its destination then reads it again
    (``build_submission`` for the DMP) in the same turn of the event loop; parsing a 22 kB CDA twice
    was ~0.15 ms of ~10 ms of the hub's CPU a document (``bench/documents.py``). The last two trees
    are kept, each for the thread that parsed it (lxml trees are not shared between threads), for
    documents up to :data:`SHARED_MAX_BYTES`; the key is the bytes themselves, so a hit is the parse
    of the very same input, refusals are never kept (they raise every time), and other limits than
    ``max_bytes`` go through :func:`parse_xml`. A caller that modifies the tree must use
    :func:`parse_xml`. ``last``: the caller is the last reader, the tree is no longer kept (it is
    freed when the caller drops it, as a tree of :func:`parse_xml` would be).
    """
    if type(data) is not bytes or len(data) > SHARED_MAX_BYTES:
        return parse_xml(data, max_bytes=max_bytes)
    key = (threading.get_ident(), data, max_bytes)
    with _shared_lock:
        root = _shared.pop(key, None) if last else _shared.get(key)
        if root is not None:
            if not last:
                _shared.move_to_end(key)
            return root
    root = parse_xml(data, max_bytes=max_bytes)
    if last:
        return root
    with _shared_lock:
        _shared[key] = root
        while len(_shared) > _SHARED_ENTRIES:
            _shared.popitem(last=False)
    return root


#: Both parsers: no entities, no DTD (neither loaded nor validated), no network, no default attributes,
#: libxml2's own size limits kept (huge_tree off), no recovery from malformed input.
class _SafeOptions(TypedDict):
    resolve_entities: bool
    load_dtd: bool
    dtd_validation: bool
    attribute_defaults: bool
    no_network: bool
    huge_tree: bool
    collect_ids: bool
    recover: bool


_SAFE_OPTIONS = _SafeOptions(
    resolve_entities=False,
    load_dtd=False,
    dtd_validation=False,
    attribute_defaults=False,
    no_network=True,
    huge_tree=False,
    collect_ids=False,
    recover=False,
)


class _WholeParser(threading.local):
    """One XMLParser and its resolver per thread (lxml parsers are not shared between threads)."""

    def __init__(self) -> None:
        self.resolver = _DenyResolver()
        self.parser = etree.XMLParser(**_SAFE_OPTIONS)
        self.parser.resolvers.add(self.resolver)


_whole = _WholeParser()


def _parse_whole(data: bytes) -> etree._Element | None:
    """The root of ``data`` parsed in one call, or None when it is refused for any reason.

    A refusal is left to :func:`_parse_in_chunks`, which parses again and gives the one reason
    and location the module documents, so the fast path never changes what a refusal says.
    """
    state = _whole
    state.resolver.attempted = False
    try:
        root = etree.fromstring(data, state.parser)
    except etree.XMLSyntaxError:
        return None
    if state.resolver.attempted or root is None:
        return None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        return None
    return root


def _parse_in_chunks(data: bytes, max_depth: int, max_attribute_chars: int, max_elements: int) -> etree._Element:
    """The push parser with every limit checked between chunks (the reference path of :func:`parse_xml`)."""
    resolver = _DenyResolver()
    parser = etree.XMLPullParser(events=("start", "end"), **_SAFE_OPTIONS)
    parser.resolvers.add(resolver)
    # An attribute value holds at most one character per input byte (char
    # references take more bytes than the character they stand for), so a
    # document no longer than the limit cannot hold a longer attribute.
    check_attributes = len(data) > max_attribute_chars
    depth = 0
    elements = 0
    doctype_checked = False
    # The push parser can report a bare "no element found" whose log is the
    # thread's global one; clearing it first keeps older parses out of it.
    etree.clear_error_log()
    try:
        for offset in range(0, len(data), _CHUNK_BYTES):
            parser.feed(data[offset : offset + _CHUNK_BYTES])
            for event, element in parser.read_events():
                if event == "end":
                    depth -= 1
                    continue
                depth += 1
                elements += 1
                if not doctype_checked:
                    # The prolog has been read once the root starts: the
                    # authoritative check for encodings the byte scan skips.
                    doctype_checked = True
                    _refuse_dtd(element)
                if depth > max_depth:
                    raise ParseError(f"elements nested deeper than {max_depth} levels", location=_line(element))
                if elements > max_elements:
                    raise ParseError(f"more than {max_elements} elements", location=_line(element))
                if check_attributes:
                    _check_attribute_lengths(element, max_attribute_chars)
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        raise _translate(exc) from None
    if resolver.attempted:
        raise ParseError("external resource reference refused")
    _refuse_dtd(root)
    return root


def _declares_doctype(data: bytes) -> bool:
    """Whether the prolog declares a DOCTYPE, found before libxml2 reads it.

    Only the prolog is scanned (XML 1.0 §2.8: XMLDecl? Misc* (doctypedecl
    Misc*)?), so the text "<!DOCTYPE" inside a comment in the body is not
    mistaken for one. ASCII-compatible encodings are scanned as bytes and
    UTF-16 after decoding; anything else is caught after the root starts.
    """
    if data.startswith(_UTF16_BOMS) or data.startswith(_UTF16_NO_BOM):
        try:
            data = data.decode("utf-16" if data.startswith(_UTF16_BOMS) else _utf16_name(data)).encode()
        except UnicodeDecodeError:
            return False  # libxml2 will refuse the encoding itself
    i = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    n = len(data)
    while i < n:
        if data[i] in _XML_SPACE:
            i += 1
        elif data.startswith(b"<?", i):
            end = data.find(b"?>", i + 2)
            if end < 0:
                return False
            i = end + 2
        elif data.startswith(b"<!--", i):
            end = data.find(b"-->", i + 4)
            if end < 0:
                return False
            i = end + 3
        else:
            return data.startswith(b"<!DOCTYPE", i)
    return False


def _utf16_name(data: bytes) -> str:
    return "utf-16-le" if data.startswith(b"<\x00") else "utf-16-be"


def _refuse_dtd(element: etree._Element) -> None:
    docinfo = element.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ParseError("DOCTYPE declarations are not allowed", location="prolog")


def _line(element: etree._Element) -> str:
    return f"line {element.sourceline}" if element.sourceline else ""


def _translate(exc: etree.XMLSyntaxError) -> ParseError:
    """A ParseError whose text comes from the error code, never from libxml2's message."""
    code, msg, line, column = exc.code, exc.msg or "", *(exc.position or (0, 0))
    # The push parser sometimes reports a bare "no element found" at close()
    # and keeps the real first error in its log (cleared before parsing).
    first = next((e for e in exc.error_log if e.level >= etree.ErrorLevels.ERROR), None)
    if first is not None and (code == etree.ErrorTypes.ERR_INTERNAL_ERROR or not line):
        code, msg, line, column = first.type, first.message or "", first.line, first.column
    name = _ERROR_NAMES.get(code, "")
    reason = _REASONS.get(name)
    if reason is None and name == "ERR_RESOURCE_LIMIT":
        # One code covers several limits; the leading words of libxml2's
        # message are fixed text (no document content), so they pick ours.
        if msg.startswith("Excessive depth"):
            reason = f"elements nested deeper than {LIBXML2_MAX_DEPTH} levels"
        elif "Text node too long" in msg:
            reason = "text node longer than libxml2's 10 MB limit"
        elif "amplification" in msg:
            reason = "entity expansion limit exceeded"
        else:
            reason = "document exceeds a parser resource limit"
    if reason is None:
        reason = f"not well-formed XML ({name or 'libxml2 error'} {code})"
    location = f"line {line}, column {column}" if line else ""
    return ParseError(reason, location=location)
