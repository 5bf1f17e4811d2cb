"""Hostile XML corpus against mappings.xml.parse_xml: every input is generated here.

Each hostile document must be refused with the right exception, fast, without
touching the network or the file system, and without its content leaking into
the error; each legitimate one must parse.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from hub.errors import ParseError, TooLarge
from mappings.xml import LIBXML2_MAX_DEPTH, parse_xml

# A string that must never appear in an exception raised for a hostile document.
MARKER = "zzsecretmarkerzz"


def refused(data: bytes, exc_type: type[Exception] = ParseError, **limits: int) -> Exception:
    with pytest.raises(exc_type) as info:
        parse_xml(data, **limits)
    exc = info.value
    for text in (str(exc), getattr(exc, "reason", ""), getattr(exc, "location", "")):
        assert MARKER not in text
    return exc


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(MARKER)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener: any connection attempt by the parser would queue here."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def assert_no_connection(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        conn, _ = sock.accept()
        conn.close()


def url(sock: socket.socket, path: str) -> str:
    host, port = sock.getsockname()
    return f"http://{host}:{port}/{path}"


# --------------------------------------------------------------------------- entity expansion


def test_billion_laughs_is_refused() -> None:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    doc = f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]><lolz a="&lol9;">&lol9;</lolz>'.encode()
    exc = refused(doc)
    assert exc.reason == "DOCTYPE declarations are not allowed"


def test_quadratic_blowup_is_refused() -> None:
    doc = (f'<!DOCTYPE r [<!ENTITY a "{"x" * 50_000}">]><r>{"&a;" * 50_000}</r>').encode()
    exc = refused(doc)
    assert exc.reason == "DOCTYPE declarations are not allowed"


def test_undeclared_entity_is_refused_without_echoing_its_name() -> None:
    exc = refused(f"<r>&{MARKER};</r>".encode())
    assert exc.reason == "reference to an undeclared entity"
    assert exc.location.startswith("line 1, column ")


def test_predefined_entities_and_character_references_still_work() -> None:
    root = parse_xml(b"<r a='&lt;&#x41;'>&amp;&quot;&#233;</r>")
    assert root.get("a") == "<A"
    assert root.text == '&"é'


# --------------------------------------------------------------------------- external resources


def test_external_entity_file_is_refused(secret_file: Path) -> None:
    doc = f'<!DOCTYPE r [<!ENTITY x SYSTEM "{secret_file.as_uri()}">]><r>&x;</r>'.encode()
    refused(doc)


def test_external_entity_http_is_refused_without_connecting(listener: socket.socket) -> None:
    doc = f'<!DOCTYPE r [<!ENTITY x SYSTEM "{url(listener, "x")}">]><r>&x;</r>'.encode()
    refused(doc)
    assert_no_connection(listener)


def test_external_dtd_is_refused_without_connecting(listener: socket.socket) -> None:
    doc = f'<?xml version="1.0"?><!DOCTYPE r SYSTEM "{url(listener, "r.dtd")}"><r/>'.encode()
    refused(doc)
    assert_no_connection(listener)


def test_public_dtd_is_refused(listener: socket.socket) -> None:
    doc = f'<!DOCTYPE r PUBLIC "-//X//DTD X//EN" "{url(listener, "p.dtd")}"><r/>'.encode()
    refused(doc)
    assert_no_connection(listener)


def test_parameter_entities_are_refused(secret_file: Path, listener: socket.socket) -> None:
    doc = (
        f'<!DOCTYPE r [<!ENTITY % file SYSTEM "{secret_file.as_uri()}">'
        f'<!ENTITY % remote SYSTEM "{url(listener, "evil.dtd")}">%remote;%file;]><r/>'
    ).encode()
    refused(doc)
    assert_no_connection(listener)


def test_doctype_after_prolog_comments_and_pis_is_refused() -> None:
    doc = b'<?xml version="1.0"?>\n<!-- a comment -->\n<?pi data?>\n<!DOCTYPE r []><r/>'
    assert refused(doc).location == "prolog"


def test_doctype_in_utf16_is_refused() -> None:
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        doc = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><r>&a;</r>'
        assert refused(doc.encode(encoding)).reason == "DOCTYPE declarations are not allowed"


def test_doctype_text_inside_a_body_comment_is_not_a_doctype() -> None:
    root = parse_xml(b"<r><!-- <!DOCTYPE x> --><a/></r>")
    assert [child.tag for child in root if isinstance(child.tag, str)] == ["a"]


def test_xinclude_is_left_unprocessed(secret_file: Path) -> None:
    doc = (
        '<r xmlns:xi="http://www.w3.org/2001/XInclude">'
        f'<xi:include href="{secret_file.as_uri()}" parse="text"/></r>'
    ).encode()
    root = parse_xml(doc)
    assert root[0].tag == "{http://www.w3.org/2001/XInclude}include"
    assert MARKER not in etree.tostring(root, encoding="unicode")


def test_xml_stylesheet_processing_instruction_is_inert(listener: socket.socket) -> None:
    doc = f'<?xml-stylesheet type="text/xsl" href="{url(listener, "s.xsl")}"?><r/>'.encode()
    assert parse_xml(doc).tag == "r"
    assert_no_connection(listener)


# --------------------------------------------------------------------------- size and shape limits


def test_very_deep_nesting_is_refused_fast() -> None:
    depth = 100_000
    exc = refused(b"<a>" * depth + b"</a>" * depth)
    assert exc.reason == f"elements nested deeper than {LIBXML2_MAX_DEPTH} levels"


def test_depth_limit_is_inclusive() -> None:
    def nested(depth: int) -> bytes:
        return b"<a>" * depth + b"</a>" * depth

    assert parse_xml(nested(10), max_depth=10) is not None
    exc = refused(nested(11), max_depth=10)
    assert exc.reason == "elements nested deeper than 10 levels"
    assert exc.location == "line 1"
    assert parse_xml(nested(LIBXML2_MAX_DEPTH)) is not None


def test_huge_attribute_is_refused() -> None:
    exc = refused(b'<r a="' + b"A" * (2**20 + 1) + b'"/>')
    assert exc.reason == f"attribute value longer than {2**20} characters"


def test_attribute_limit_is_inclusive() -> None:
    padding = b"<!--" + b"p" * 100 + b"-->"  # longer than the limit, so the check runs
    assert parse_xml(b'<r a="' + b"A" * 64 + b'"/>' + padding, max_attribute_chars=64) is not None
    refused(b'<r a="' + b"A" * 65 + b'"/>' + padding, max_attribute_chars=64)


def test_element_count_limit() -> None:
    assert parse_xml(b"<r>" + b"<a/>" * 99 + b"</r>", max_elements=100) is not None
    exc = refused(b"<r>" + b"<a/>" * 100 + b"</r>", max_elements=100)
    assert exc.reason == "more than 100 elements"


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(TooLarge) as info:
        parse_xml(b"<r>" + b"x" * 1000 + b"</r>", max_bytes=1000)
    assert info.value.reason == "XML document over 1000 bytes"
    assert not isinstance(info.value, ParseError)


def test_default_size_limit_is_16_mib() -> None:
    with pytest.raises(TooLarge):
        parse_xml(b" " * (16 * 2**20 + 1))


def test_text_node_over_libxml2_cap_is_refused() -> None:
    exc = refused(b"<r>" + b"A" * 11_000_000 + b"</r>")
    assert exc.reason == "text node longer than libxml2's 10 MB limit"


# --------------------------------------------------------------------------- not XML, broken XML


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \r\n\t ",
        b"garbage",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        b'{"resourceType": "Patient"}',
        b"MSH|^~\\&|APP|FAC|||20250101||ADT^A01|1|P|2.5\r",
        bytes(range(256)),
        b"\x00\x00\x00\x00",
        b"<r>\x01</r>",
        b"<r>\xff\xfe\xfd</r>",
        b'<?xml version="1.0" encoding="X-NO-SUCH"?><r/>',
        b"<r/><r/>",
        b"<a><b></a></b>",
    ],
    ids=[
        "empty",
        "whitespace",
        "text",
        "pdf",
        "json",
        "hl7v2",
        "all-bytes",
        "nuls",
        "control-char",
        "bad-utf8",
        "unknown-encoding",
        "two-roots",
        "misnested",
    ],
)
def test_non_xml_is_refused(data: bytes) -> None:
    refused(data)


def test_truncated_xml_is_refused_at_every_cut() -> None:
    doc = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<ClinicalDocument xmlns="urn:hl7-org:v3">'
        b'<id root="1.2.3" extension="x"/><title>T</title><component><structuredBody/>'
        b"</component></ClinicalDocument>"
    )
    assert parse_xml(doc) is not None
    for cut in range(1, len(doc) - 1):
        refused(doc[:cut])


def test_error_log_of_an_earlier_parse_does_not_leak_into_the_next() -> None:
    refused(b"garbage")
    assert refused(b"<a>&x;</a>").reason == "reference to an undeclared entity"


def test_reasons_never_quote_tag_names() -> None:
    exc = refused(f"<{MARKER}><b></{MARKER}x>".encode())
    assert exc.reason == "mismatched end tag"


# --------------------------------------------------------------------------- legitimate encodings


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom_parses(encoding: str) -> None:
    text = '<?xml version="1.0" encoding="UTF-16"?><r a="é">Réunion 𝄞</r>'
    data = text.encode(encoding)
    if encoding != "utf-16":  # the plain codec writes its own BOM
        data = ("\ufeff" + text).encode(encoding)
    root = parse_xml(data)
    assert root.text == "Réunion 𝄞"
    assert root.get("a") == "é"


def test_utf16_split_across_parser_chunks() -> None:
    text = "<r>" + "é" * 100_000 + "</r>"
    assert parse_xml(text.encode("utf-16")).text == "é" * 100_000


def test_utf8_bom_parses() -> None:
    root = parse_xml(b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?><r>\xc3\xa9</r>')
    assert root.text == "é"


def test_latin1_declared_encoding_parses() -> None:
    assert parse_xml(b'<?xml version="1.0" encoding="ISO-8859-1"?><r>\xe9</r>').text == "é"


def test_accepts_bytearray_and_memoryview() -> None:
    assert parse_xml(bytearray(b"<r/>")).tag == "r"
    assert parse_xml(memoryview(b"<r/>")).tag == "r"


def test_large_legitimate_document_parses() -> None:
    entry = (
        '<entry><observation classCode="OBS" moodCode="EVN"><id root="1.2.3" extension="{i}"/>'
        '<code code="2345-7" codeSystem="2.16.840.1.113883.6.1"/><value value="5.{i}" unit="mmol/L"/>'
        "</observation></entry>"
    )
    body = "".join(entry.format(i=i) for i in range(8000))
    doc = f'<ClinicalDocument xmlns="urn:hl7-org:v3"><section>{body}</section></ClinicalDocument>'.encode()
    assert len(doc) > 2**20
    root = parse_xml(doc)
    assert len(root[0]) == 8000


# --------------------------------------------------------------------------- API misuse


def test_str_input_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_xml("<r/>")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "limits",
    [{"max_depth": 0}, {"max_depth": LIBXML2_MAX_DEPTH + 1}, {"max_bytes": 0}, {"max_elements": 0}],
)
def test_out_of_range_limits_are_rejected(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        parse_xml(b"<r/>", **limits)


def test_parse_xml_shared_keeps_a_tree_per_thread_and_never_a_refusal() -> None:
    import threading

    from mappings.xml import parse_xml_shared
    from mappings.xml.safe import SHARED_MAX_BYTES

    doc = b"<a><b>shared</b></a>"
    first = parse_xml_shared(doc)
    assert parse_xml_shared(bytes(bytearray(doc))) is first  # equal bytes, another object: the same tree
    assert parse_xml_shared(doc, max_bytes=1024) is not first  # other limits, another entry
    assert parse_xml_shared(doc) is first
    other: list[object] = []
    worker = threading.Thread(target=lambda: other.append(parse_xml_shared(doc)))
    worker.start()
    worker.join()
    assert other[0] is not first and etree.tostring(other[0]) == etree.tostring(first)  # type: ignore[arg-type]
    taken = parse_xml_shared(doc, last=True)  # the last reader takes the kept tree
    assert taken is first and parse_xml_shared(doc, last=True) is not first
    big = b"<a>" + b"x" * SHARED_MAX_BYTES + b"</a>"
    assert parse_xml_shared(big) is not parse_xml_shared(big)  # too large to keep
    for _ in range(2):
        with pytest.raises(ParseError):
            parse_xml_shared(b"<a><b></a>")
    with pytest.raises(TooLarge):
        parse_xml_shared(doc, max_bytes=4)
