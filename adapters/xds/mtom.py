"""MTOM/XOP packaging: SOAP envelopes as ``multipart/related`` with binary attachments.

ITI-41 sends each document as an XOP attachment of an MTOM message (IHE
ITI TF-2x Appendix V.7 "MTOM", W3C SOAP MTOM and XOP): the SOAP envelope is
the root part (``application/xop+xml``), and the ``xdsb:Document`` element
holds an ``xop:Include href="cid:…"`` pointing at a part by its Content-ID
(RFC 2392: the ``cid:`` URL is the percent-encoded Content-ID without the
angle brackets).

Both directions live here because both sides of the hub need them: the
outbound adapter encodes requests and decodes responses (Axis2/CXF
registries answer MTOM when asked in MTOM), the DMP sandbox decodes
requests and encodes responses.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import quopri
import uuid
from collections.abc import Sequence
from email.message import Message as _HeaderHolder
from urllib.parse import quote, unquote

from lxml import etree

__all__ = [
    "MtomError",
    "Multipart",
    "Part",
    "cid_href",
    "content_type_params",
    "decode_related",
    "element_bytes",
    "encode_related",
]

XOP_INCLUDE = "{http://www.w3.org/2004/08/xop/include}Include"
_CRLF = b"\r\n"


class MtomError(ValueError):
    """A multipart/related body or an XOP reference that cannot be read (texts quote no content)."""


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Part:
    """One MIME part: Content-ID (without ``<>``), Content-Type and decoded body."""

    content_id: str
    content_type: str
    body: bytes

    def __repr__(self) -> str:
        return f"Part({self.content_id!r}, {self.content_type!r}, {len(self.body)} bytes)"


@dataclasses.dataclass(frozen=True, slots=True)
class Multipart:
    """A decoded multipart/related body: its root part and every part by Content-ID."""

    root: Part
    parts: dict[str, Part]

    def resolve(self, href: str) -> Part:
        """The part an ``xop:Include/@href`` (``cid:…``) points at; MtomError when it is not there."""
        if not href.startswith("cid:"):
            raise MtomError("xop:Include href is not a cid: URL")
        part = self.parts.get(unquote(href[4:]))
        if part is None:
            raise MtomError("xop:Include points at a missing MIME part")
        return part


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """(lower-case media type, parameters with lower-case names and unquoted values) of a Content-Type."""
    holder = _HeaderHolder()
    holder["content-type"] = value
    params = holder.get_params() or []
    return holder.get_content_type(), {str(k).lower(): str(v) for k, v in params[1:]}


def _quote_param(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_related(
    root_xml: bytes,
    attachments: Sequence[Part],
    *,
    action: str | None = None,
    boundary: str | None = None,
    root_content_id: str | None = None,
) -> tuple[bytes, str]:
    """An MTOM message: ``(body, Content-Type header value)``.

    The root part is the SOAP 1.2 envelope as ``application/xop+xml;
    type="application/soap+xml"``; ``action`` (the WS-Addressing action)
    is repeated as a Content-Type parameter as SOAP 1.2 over HTTP expects
    (RFC 3902) and as IHE examples show. Attachments go out as binary.
    """
    boundary = boundary or f"MIMEBoundary_{uuid.uuid4().hex}"
    root_cid = root_content_id or f"root.{uuid.uuid4().hex}@interop-hub"
    soap_type = "application/soap+xml"
    root_ct = f'application/xop+xml; charset=UTF-8; type="{soap_type}"'
    if action:
        root_ct += f"; action={_quote_param(action)}"
    chunks: list[bytes] = []

    def part(cid: str, content_type: str, body: bytes) -> None:
        head = (
            f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{cid}>\r\n\r\n"
        )
        chunks.extend((head.encode("ascii"), body, _CRLF))

    part(root_cid, root_ct, root_xml)
    for a in attachments:
        part(a.content_id, a.content_type, a.body)
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    header = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<{root_cid}>"; '
        f'start-info="{soap_type}"'
    )
    if action:
        header += f"; action={_quote_param(action)}"
    return b"".join(chunks), header


def cid_href(content_id: str) -> str:
    """The ``cid:`` URL of a Content-ID (RFC 2392)."""
    return "cid:" + quote(content_id, safe="@.-_~!$'()*+,;=:")


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last = ""
    for line in raw.decode("latin-1").splitlines():
        if not line:
            continue
        if line[0] in " \t" and last:  # RFC 5322 folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MtomError("malformed MIME part header")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.lower() or "binary"
    if encoding in ("binary", "8bit", "7bit"):
        return body
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error:
            raise MtomError("MIME part is not valid base64") from None
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    raise MtomError("unsupported Content-Transfer-Encoding")


def decode_related(body: bytes, content_type: str, *, max_parts: int = 64) -> Multipart:
    """Split a ``multipart/related`` body into parts and find its root (RFC 2387 ``start``, else the first).

    Delimiters are matched after CRLF, or a bare LF from lenient senders
    (RFC 2046 §5.1.1). Raises :class:`MtomError` on a missing boundary, an
    unterminated body, more than ``max_parts`` parts or a ``start`` that
    names no part.
    """
    media, params = content_type_params(content_type)
    if not media.startswith("multipart/"):
        raise MtomError("not a multipart body")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise MtomError("multipart Content-Type without a usable boundary")
    delim = b"--" + boundary.encode("latin-1")
    first = _find_delimiter(body, delim, 0)
    if first is None:
        raise MtomError("multipart boundary not found")
    pos = first[1]
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            break  # close delimiter
        eol = body.find(b"\n", pos)
        if eol < 0:
            raise MtomError("truncated multipart body")
        start = eol + 1
        nxt = _find_delimiter(body, delim, start)
        if nxt is None:
            raise MtomError("multipart body without its closing boundary")
        raw = body[start : nxt[0]]
        sep = raw.find(b"\r\n\r\n")
        head, content = (raw[:sep], raw[sep + 4 :]) if sep >= 0 else _split_lf(raw)
        headers = _parse_headers(head)
        cid = headers.get("content-id", "").strip().strip("<>").strip()
        parts.append(
            Part(
                cid,
                headers.get("content-type", "application/octet-stream"),
                _decode_body(content, headers.get("content-transfer-encoding", "")),
            )
        )
        if len(parts) > max_parts:
            raise MtomError(f"more than {max_parts} MIME parts")
        pos = nxt[1]
    if not parts:
        raise MtomError("multipart body without parts")
    by_id = {p.content_id: p for p in parts if p.content_id}
    start_id = params.get("start", "").strip().strip("<>").strip()
    if start_id:
        if start_id not in by_id:
            raise MtomError("multipart start parameter names no part")
        root = by_id[start_id]
    else:
        root = parts[0]
    return Multipart(root, by_id)


def _find_delimiter(body: bytes, delim: bytes, start: int) -> tuple[int, int] | None:
    """(start, end) of the first ``delim`` at ``start`` or later that opens the body or follows CRLF / LF.

    The span includes the line break before the delimiter (RFC 2046 §5.1.1: it belongs to the
    delimiter). A literal search: a regular expression with the line break as an alternative
    cannot skip ahead and costs about a millisecond per search on a 50 kB request.
    """
    found = body.find(delim, start)
    while found >= 0:
        if found == 0:  # only reachable when start is 0: the body opens with the delimiter
            return 0, len(delim)
        if found - 1 >= start and body[found - 1] == 0x0A:
            begin = found - 2 if found - 2 >= start and body[found - 2] == 0x0D else found - 1
            return begin, found + len(delim)
        found = body.find(delim, found + 1)
    return None


def _split_lf(raw: bytes) -> tuple[bytes, bytes]:
    sep = raw.find(b"\n\n")
    if sep < 0:
        raise MtomError("MIME part without a header/body separator")
    return raw[:sep], raw[sep + 2 :]


def element_bytes(element: etree._Element, multipart: Multipart | None) -> bytes:
    """The binary content of an ``xs:base64Binary`` element: XOP-included part, or inline base64."""
    include = element.find(XOP_INCLUDE)
    if include is not None:
        if multipart is None:
            raise MtomError("xop:Include outside an MTOM message")
        if (element.text or "").strip() or len(element) != 1:
            raise MtomError("an element with xop:Include must hold nothing else")
        return multipart.resolve(include.get("href", "")).body
    if len(element):
        raise MtomError("binary element holds child elements")
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise MtomError("binary element is not valid base64") from None
