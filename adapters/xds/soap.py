"""SOAP 1.2 envelopes with WS-Addressing headers, and SOAP faults, for the IHE web services.

IHE ITI TF-2x Appendix V fixes the shape: SOAP 1.2, WS-Addressing 1.0
(``wsa:Action`` and ``wsa:To`` with ``mustUnderstand``, ``wsa:MessageID``,
``wsa:ReplyTo`` anonymous; the response carries ``wsa:RelatesTo``), and for
XUA/VIHF a ``wsse:Security`` header holding the SAML assertion (ITI TF-2b
§3.40, DOMAIN.md §5.2). Every envelope is built with lxml element APIs and
every received one is parsed with :func:`mappings.xml.parse_xml`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable

from lxml import etree

from hub.errors import MessageError
from mappings.xml import parse_xml

__all__ = [
    "ACTION_PNR",
    "ACTION_PNR_RESPONSE",
    "ACTION_STORED_QUERY",
    "ACTION_STORED_QUERY_RESPONSE",
    "SOAP12",
    "WSA",
    "WSSE",
    "SoapError",
    "SoapFault",
    "SoapMessage",
    "envelope",
    "fault_envelope",
    "read_envelope",
]

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"

ACTION_PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_PNR_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
ACTION_STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_STORED_QUERY_RESPONSE = "urn:ihe:iti:2007:RegistryStoredQueryResponse"

_S = "{" + SOAP12 + "}"
_A = "{" + WSA + "}"


class SoapError(ValueError):
    """Bytes that are not a SOAP 1.2 envelope (the text names the problem, never the content)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.2 Fault: code (``Sender``/``Receiver``…), subcode QNames as ``prefix:local``, reason text.

    ``reason`` is the peer's free text: keep it out of exception messages,
    it may quote the request.
    """

    code: str
    subcodes: tuple[str, ...]
    reason: str

    def summary(self) -> str:
        """Code and subcodes only (``Sender/wsse:InvalidSecurity``): safe for logs and exception texts."""
        return "/".join((self.code, *self.subcodes))


@dataclasses.dataclass(frozen=True, slots=True)
class SoapMessage:
    """A parsed envelope: its header and first body child, with the WS-Addressing values read out."""

    header: etree._Element | None
    body: etree._Element | None
    action: str
    message_id: str
    relates_to: str
    fault: SoapFault | None


def _qname_text(el: etree._Element, value: str) -> str:
    """A QName text value as ``prefix:local`` with the prefix normalised from its namespace when known."""
    prefix, _, local = value.strip().rpartition(":")
    ns = el.nsmap.get(prefix or None, "")
    known = {SOAP12: "", WSSE: "wsse:", WSA: "wsa:"}
    if ns in known:
        return known[ns] + local
    return value.strip()


def envelope(
    body: etree._Element,
    *,
    action: str,
    to: str | None = None,
    message_id: str | None = None,
    relates_to: str | None = None,
    security: Iterable[etree._Element] = (),
) -> etree._Element:
    """A SOAP 1.2 envelope around ``body`` with the WS-Addressing headers of IHE ITI TF-2x V.3.

    Requests get MessageID, ReplyTo (anonymous), To and Action; responses
    pass ``relates_to`` (``""`` when the request's MessageID is unknown).
    ``security`` elements (a signed SAML assertion) go into one
    ``wsse:Security`` header with ``mustUnderstand``.
    """
    env = etree.Element(_S + "Envelope", nsmap={"soap": SOAP12, "wsa": WSA})
    header = etree.SubElement(env, _S + "Header")
    a = etree.SubElement(header, _A + "Action")
    a.set(_S + "mustUnderstand", "true")
    a.text = action
    etree.SubElement(header, _A + "MessageID").text = message_id or f"urn:uuid:{uuid.uuid4()}"
    if relates_to is None:  # a request: the answer comes back on this HTTP exchange
        reply = etree.SubElement(header, _A + "ReplyTo")
        etree.SubElement(reply, _A + "Address").text = WSA_ANONYMOUS
    elif relates_to:
        etree.SubElement(header, _A + "RelatesTo").text = relates_to
    if to:
        t = etree.SubElement(header, _A + "To")
        t.set(_S + "mustUnderstand", "true")
        t.text = to
    tokens = list(security)
    if tokens:
        sec = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        sec.set(_S + "mustUnderstand", "true")
        for token in tokens:
            sec.append(token)
    etree.SubElement(env, _S + "Body").append(body)
    return env


def fault_envelope(
    code: str, reason: str, *, subcode: tuple[str, str] | None = None, relates_to: str | None = None
) -> etree._Element:
    """A SOAP 1.2 Fault envelope. ``code`` is ``Sender`` or ``Receiver``; ``subcode`` is (namespace, local)."""
    nsmap = {"soap": SOAP12, "wsa": WSA}
    # The subcode is a QName in element text: its prefix must stay declared once the Fault is in the envelope.
    prefix = {WSSE: "wsse", WSA: "wsa", SOAP12: "soap"}.get(subcode[0], "sub") if subcode else ""
    if subcode is not None:
        nsmap[prefix] = subcode[0]
    fault = etree.Element(_S + "Fault", nsmap=nsmap)
    c = etree.SubElement(fault, _S + "Code")
    etree.SubElement(c, _S + "Value").text = f"soap:{code}"
    if subcode is not None:
        sub = etree.SubElement(c, _S + "Subcode")
        etree.SubElement(sub, _S + "Value").text = f"{prefix}:{subcode[1]}"
    r = etree.SubElement(fault, _S + "Reason")
    text = etree.SubElement(r, _S + "Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    return envelope(fault, action="http://www.w3.org/2005/08/addressing/soap/fault", relates_to=relates_to or "")


def _read_fault(fault: etree._Element) -> SoapFault:
    value = fault.find(f"{_S}Code/{_S}Value")
    code = _qname_text(value, value.text or "") if value is not None else ""
    subcodes: list[str] = []
    sub = fault.find(f"{_S}Code/{_S}Subcode")
    while sub is not None and len(subcodes) < 8:
        v = sub.find(_S + "Value")
        if v is not None and v.text:
            subcodes.append(_qname_text(v, v.text))
        sub = sub.find(_S + "Subcode")
    reason = fault.find(f"{_S}Reason/{_S}Text")
    return SoapFault(code, tuple(subcodes), "" if reason is None else (reason.text or "").strip())


def read_envelope(data: bytes, *, max_bytes: int = 64 * 2**20) -> SoapMessage:
    """Parse a SOAP 1.2 envelope (safely) and read its WS-Addressing headers and fault, if any.

    Raises :class:`SoapError` when the bytes are not XML or not a SOAP 1.2
    envelope (a SOAP 1.1 envelope is named as such: IHE requires 1.2).
    """
    try:
        root = parse_xml(data, max_bytes=max_bytes)
    except MessageError as exc:
        raise SoapError(f"not XML: {exc.reason}") from None
    if root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope":
        raise SoapError("SOAP 1.1 envelope: IHE web services use SOAP 1.2")
    if root.tag != _S + "Envelope":
        raise SoapError("not a SOAP 1.2 envelope")
    header = root.find(_S + "Header")
    body = root.find(_S + "Body")
    if body is None:
        raise SoapError("SOAP envelope without Body")
    child = next(iter(body), None)

    def wsa(name: str) -> str:
        el = None if header is None else header.find(_A + name)
        return "" if el is None else (el.text or "").strip()

    fault = _read_fault(child) if child is not None and child.tag == _S + "Fault" else None
    return SoapMessage(header, child, wsa("Action"), wsa("MessageID"), wsa("RelatesTo"), fault)
