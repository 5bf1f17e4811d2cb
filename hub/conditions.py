"""Conditions on one value: the tests shared by route filters (`when:`) and declarative mapping rules (`if:`).

A condition is data, never code (DESIGN.md §6): a value is compared by
equality, membership, regular expression or presence. Where a path selects
several values (``OBX[*]-3.1``, a FHIRPath returning a list), the condition
holds when *one* of them passes (``present: false`` / ``not_in``: when none
is present / none is listed).

In YAML a test is written as a bare string (equality), a list (membership)
or a mapping with exactly one of the keys below::

    message_type: [ADT^A01, ADT^A04]        # membership
    sending_facility: {matches: "^CHU-"}    # regular expression, searched
    patient_key: {present: true}            # a non-empty value exists
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic import ValidationError as PydanticValidationError

from hub import registry
from hub.message import Message

__all__ = ["CONTENT_LANGUAGES", "METADATA_KEYS", "RouteFilter", "ValueTest", "value_test"]

#: `when:` keys whose entries are {path or expression: test} on the body, through a registered selector.
CONTENT_LANGUAGES = ("hl7", "fhirpath", "xpath")

Selector = Callable[[Message, dict[str, Any]], list[str]]
"""A compiled content path: the values it selects in a message; the dict caches the parsed body per message."""


class ValueTest(BaseModel):
    """One test on the values a key or a path selects; exactly one of the fields is given."""

    model_config = ConfigDict(extra="forbid")

    equals: str | None = Field(None, description="Holds when a value equals this text.")
    in_: list[str] | None = Field(None, alias="in", description="Holds when a value is one of these.")
    not_in: list[str] | None = Field(None, description="Holds when no value is one of these (absent counts as none).")
    matches: str | None = Field(
        None, description="Regular expression (Python `re`) searched in each value; anchor it with ^...$."
    )
    present: bool | None = Field(None, description="true: a non-empty value exists; false: none does.")

    _regex: re.Pattern[str] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _exactly_one(self) -> ValueTest:
        given = [k for k in ("equals", "in_", "not_in", "matches", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, in, not_in, matches, present")
        if self.matches is not None:
            try:
                self._regex = re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"invalid regular expression ({exc})") from None
        return self

    def test(self, values: Iterable[str]) -> bool:
        """Whether the values (possibly none) pass this test."""
        return self.compile()(values)

    def compile(self) -> Callable[[Iterable[str]], bool]:
        """The test as a plain function (no model attribute look-ups on the per-message path)."""
        if self.equals is not None:
            want = self.equals
            return lambda values: want in values if isinstance(values, list | tuple) else any(v == want for v in values)
        if self.in_ is not None or self.not_in is not None:
            listed = frozenset(self.in_ if self.in_ is not None else self.not_in or ())
            if self.in_ is not None:
                return lambda values: not listed.isdisjoint(values)
            return lambda values: listed.isdisjoint(values)
        if self._regex is not None:
            search = self._regex.search
            return lambda values: any(search(v) for v in values)
        present = bool(self.present)
        return lambda values: any(values) is present


def value_test(spec: Any) -> ValueTest:
    """A ValueTest from its YAML shorthand: a string (equals), a list (in) or a mapping."""
    if isinstance(spec, str):
        return ValueTest(equals=spec)
    if isinstance(spec, list):
        return ValueTest.model_validate({"in": spec})
    if isinstance(spec, ValueTest):
        return spec
    return ValueTest.model_validate(spec)


#: The metadata keys inbound adapters and readers set at ingest, which `when:` may test. A key not listed
#: here is refused by `hub check` (a misspelt key would otherwise make a route silently never match).
METADATA_KEYS: dict[str, str] = {
    # every listener
    "endpoint": "name of the listener the message came in on",
    "content_type": "the body's content type (the envelope's, e.g. application/hl7-v2)",
    "message_type": "MSH-9 type^trigger (HL7 v2), resourceType (FHIR), CDA/mail/mdn/ack (SMTP)",
    "control_id": "MSH-10, Bundle.identifier, request id, document unique id or Message-ID",
    "patient_key": "local identifier `id@authority` of the patient (PID-3 PI, FHIR PI identifier, CDA IPP)",
    "truncated_from_bytes": "size of a refused body stored cut (too large; SMTP: also a line too long)",
    # HL7 v2 (MSH)
    "sending_app": "MSH-3.1",
    "sending_facility": "MSH-4.1",
    "receiving_app": "MSH-5.1",
    "receiving_facility": "MSH-6.1",
    "hl7_version": "MSH-12",
    # FHIR
    "fhir_interaction": "create, update, transaction... (HTTP intake)",
    "resource_type": "resourceType of the body",
    "request_id": "X-Request-ID of the HTTP request",
    "http_status": "status the intake answered",
    "bundle_type": "Bundle.type",
    "message_event": "MessageHeader.eventCoding.code of a message Bundle",
    "ins": "the patient's INS when present",
    "ins_oid": "OID of the INS",
    "identity_status": "identity reliability status of the Patient",
    "patient_count": "number of distinct patients in a Bundle holding several",
    "document_count": "DocumentReferences in a Bundle",
    "document_type": "DocumentReference.type code (FHIR), ClinicalDocument/code (CDA)",
    "document_type_system": "its code system",
    "unique_id": "document unique id",
    # CDA header (SMTP documents)
    "type_code": "ClinicalDocument/code/@code",
    "type_code_system": "its code system",
    "type_display_name": "its display name",
    "title": "ClinicalDocument/title",
    "effective_time": "ClinicalDocument/effectiveTime",
    "confidentiality_code": "ClinicalDocument/confidentialityCode",
    "language_code": "ClinicalDocument/languageCode",
    "set_id": "ClinicalDocument/setId",
    "version_number": "ClinicalDocument/versionNumber",
    "template_ids": "templateId roots",
    "ipp": "patient IPP",
    "ipp_oid": "its authority OID",
    "patient_ids": "every patientRole/id",
    "author_id": "author id",
    "author_id_root": "its root",
    "custodian_id": "custodian id",
    "custodian_id_root": "its root",
    "legal_authenticator_id": "legal authenticator id",
    "legal_authenticator_id_root": "its root",
    "facility_code": "healthcare facility type code",
    "facility_code_system": "its code system",
    "document_action": "create or replace",
    # SMTP
    "mail_kind": "mail, document, mdn or ack",
    "mail_from": "envelope sender",
    "rcpt_to": "envelope recipients",
    "rcpt_local": "recipients with a mailbox here",
    "rcpt_application": "recipients that are application mailboxes",
    "rcpt_remote": "recipients at other operators",
    "has_local_recipients": "true/false",
    "has_remote_recipients": "true/false",
    "mail_message_id": "Message-ID",
    "mail_recipient": "the application mailbox a document is for",
    "mail_recipient_org": "its organization",
    "mail_subject": "Subject",
    "mail_body_b64": "mail body text, base64",
    "mail_reply_to": "Reply-To",
    "mdn_disposition": "disposition of an MDN sent",
    "xdm_subset": "XDM subset folder",
    "xdm_uri": "XDM document URI",
    "xdm_patient_id": "XDM patient id",
    "xdm_unique_id": "XDM document unique id",
    "mask_ps": "Y/N: hidden from professionals (confidentiality)",
    "invisible_patient": "Y/N: not visible to the patient",
    "invisible_legal_reps": "Y/N: not visible to legal representatives",
    "ack_kind": "mdn or dsn of an acknowledgement received",
    "ack_disposition": "its disposition",
    "ack_status": "its status",
    "ack_error": "its error",
    "ack_final_recipient": "its final recipient",
    "ack_for_mail_id": "Message-ID it answers",
    "ack_for_message_id": "hub message id it answers",
    "ack_matched": "true/false",
    "tls_peer": "certificate name of the sending operator",
    "auth_user": "authenticated submission user",
}

METADATA_KEYS["replay_of"] = "id of the message a replay was made from"
METADATA_KEYS["bom"] = "utf-8 when a byte-order mark preceded MSH"
# Documents carried in HL7 v2 (the listener's `v2_documents` check; mappings/cda/hl7v2_documents.py).
METADATA_KEYS.update(
    {
        "document_count": "documents the message carries",
        "document_format_code": "XDS formatCode when known",
        "document_replaces_id": "the replaced document id",
        "dest_dmp": "Y/N: DESTDMP, publish to the DMP",
        "dest_mss_ps": "Y/N: DESTMSSANTEPS, send to professionals by MSSanté",
        "dest_mss_patient": "Y/N: DESTMSSANTEPAT, send to the patient's mailbox",
        "secret_connection": "Y/N: CONNEXION_SECRETE",
        "confidentiality_update": "Y/N: MODIF_CONF_CODE",
        "ack_reception": "Y/N: ACK_RECEPTION",
        "ack_read_mss": "Y/N: ACK_LECTURE_MSS",
        "mss_no_reply_patient": "Y/N: NTE-4 FIN on DESTMSSANTEPAT",
        "mss_recipients": "PRT RCT addresses",
        "mss_recipients_patient": "the patient mailboxes among them",
        "mss_reply_to": "PRT REPLY addresses",
        "mss_body_ps": "CORPSMAIL_PS text",
        "mss_body_patient": "CORPSMAIL_PATIENT text",
        "sender_ps_id": "PRT SB professional idNat_PS",
        "sender_org_id": "PRT SB structure idNat_Struct",
        "document_other_format_id": "id of the other instance when an ORU carries two formats",
        "warnings": "optional parts dropped (e.g. an unreadable mail body)",
    }
)


class RouteFilter:
    """A route's `when:`, compiled once: metadata tests first (cheap), then content tests.

    Content tests share one parse of the body per message (the `cache` handed to
    `matches`), so several routes testing HL7 paths parse a message once.
    """

    def __init__(self, when: Mapping[str, Any]) -> None:
        self.metadata: list[tuple[str, Callable[[Iterable[str]], bool]]] = []
        self.content: list[tuple[Selector, Callable[[Iterable[str]], bool]]] = []
        self.problems: list[tuple[tuple[str, ...], str]] = []
        """(location inside `when`, text) of every problem; empty when the filter is usable."""
        for key, spec in when.items():
            if key in CONTENT_LANGUAGES:
                self._content(key, spec)
            elif key not in METADATA_KEYS:
                near = difflib.get_close_matches(key, list(METADATA_KEYS) + list(CONTENT_LANGUAGES), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else " (the known keys are listed in README, Routes)"
                self.problems.append(((key,), f"unknown metadata key {key!r}{hint}"))
            else:
                test = self._test((key,), spec)
                if test is not None:
                    self.metadata.append((key, test.compile()))

    def _test(self, loc: tuple[str, ...], spec: Any) -> ValueTest | None:
        try:
            return value_test(spec)
        except PydanticValidationError as exc:
            text = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            self.problems.append((loc, text))
        return None

    def _content(self, language: str, spec: Any) -> None:
        comp = registry.get("selector", language)
        if comp is None:
            self.problems.append(((language,), f"no {language} selector is registered"))
            return
        if not isinstance(spec, dict) or not spec:
            self.problems.append(((language,), f"{language}: give {{path: test}} entries"))
            return
        for expr, test_spec in spec.items():
            try:
                selector = comp.factory(str(expr))
            except ValueError as exc:
                self.problems.append(((language, str(expr)), f"{language}: {exc}"))
                continue
            test = self._test((language, str(expr)), test_spec)
            if test is not None:
                self.content.append((selector, test.compile()))

    @property
    def reads_content(self) -> bool:
        return bool(self.content)

    def matches(self, message: Message, cache: dict[str, Any]) -> bool:
        meta = message.metadata
        for key, test in self.metadata:
            have = meta.get(key)
            if have is None and key == "content_type":
                have = message.content_type
            if not test(() if have is None else (have,)):
                return False
        return all(test(select(message, cache)) for select, test in self.content)
