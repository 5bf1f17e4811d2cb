"""ORU^R01 lab results -> CDA R2 CR-BIO (CI-SIS "Compte rendu d'examens de biologie médicale").

What is built, and from where (ANS CR-BIO volet as its schematrons and examples
in TestContenuCDA-3-0 state it; DOMAIN.md §3):

* **Header**: templateIds HL7 France + CI-SIS + IHE PaLM ``1.3.6.1.4.1.19376.1.3.3``
  + CR-BIO ``1.2.250.1.213.1.1.1.55`` (extension = model version); code
  ``11502-2`` "CR d'examens biologiques" and the fixed title (Entete_CR-BIO.sch);
  recordTarget from PID (INS only with PID-32 VALI, else the IPP); author and
  legalAuthenticator = the biologist with a national id from OBR-32, OBX-16 or
  config; custodian = the laboratory; documentationOf/serviceEvent per chapter,
  the first with its performer, lab:statusCode and dates; componentOf with the
  responsible biologist and the facility code.
* **Ids**: deterministic (see :func:`mappings.cda.builder.derived_oid`): id from
  MSH-3/MSH-4/MSH-10, so a replay gives the same uniqueId; setId from the order
  (ORC-4 placer group, else filler/placer order number), so a corrected report
  keeps the setId of the original.
* **Corrections**: a result with OBX-11 ``C`` (or OBR-25 ``C``) makes the
  report a new version with a RPLC relatedDocument whose parentDocument is the
  uniqueId and version the hub registered earlier for the same order (same setId):
  the metadata ``cda_replaces_id`` / ``cda_replaces_version`` of an earlier step
  when present, else the versions the hub delivered of that setId (:mod:`hub.documents`). The
  header rules forbid a parent id nullFlavor, so when the original is unknown the
  correction is refused or waits (setting ``unknown_original``).
* **Body**: one section FR-CR-BIO-Chapitre per chapter (OBR-24 diagnostic
  service section -> LOINC chapter), one FR-CR-BIO-Sous-Chapitre per OBR with a
  narrative table and one FR-Resultats-examens-de-biologie-medicale entry: act
  (LOINC OBR-4) with the specimen (SPM or OBR-15: FR-Prelevement, reception date)
  and a battery organizer of observations (LOINC OBX-3, UCUM PQ values, IVL_PQ
  reference ranges, OBX-8 -> ObservationInterpretation), NTE comments as
  FR-Commentaire-ER acts. Observation codes and comments point at the narrative
  through ``originalText/reference`` and ``text/reference`` (``#res-…``, ``#cmt-…``).
* **PDF copy**: the FR-Document-PDF-copie section (required by model 2024.01) is always
  there: the laboratory's PDF when an ED OBX carries one, otherwise a PDF the hub renders
  from the same results (:mod:`mappings.cda.report_pdf`).

Refused (MappingError, no value quoted): no OBR or an OBR without results,
results not coded in LOINC, units with no UCUM equivalent, non-numeric NM
values, OBX-8 flags outside the CI-SIS value set, preliminary or deleted
results (OBX-11 other than F/C/X), unsupported value types, an encapsulated CDA
(use ``v2_document_to_cda``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from typing import Literal

from lxml import etree
from pydantic import Field

from hub.content_types import ContentType
from hub.documents import DocumentsNeeded, DocumentVersion
from hub.errors import MappingError, Retryable
from hub.message import Message
from hub.pipeline import StepContext
from hub.registry import register
from mappings.cda import builder as b
from mappings.cda.builder import II, CdaConfig, CodedConfig, Organization, Practitioner
from mappings.cda.codes import (
    CRBIO_CHAPTERS,
    INTERPRETATION_OID,
    LOINC_OID,
    PROFESSION_OID,
    SPECIMEN_TYPE_OID,
    Coded,
    encounter_code,
    interpretation,
    specimen_type_display,
    to_ucum,
    v2_coding_system_oid,
)
from mappings.cda.header import read_cda_header, validate_cda_header
from mappings.cda.hl7v2_documents import Distribution, is_results_oru, read_distribution
from mappings.cda.report_pdf import ReportView, ResultLine, ViewSection, render_pdf
from mappings.cda.v2_input import (
    Segment,
    national_practitioner_from_cnn,
    national_practitioner_from_xcn,
    organization_from_xon,
    read_patient,
    segments,
    ts,
)
from mappings.hl7v2.er7 import Er7Message, unescape

__all__ = ["CrBioConfig", "check_crbio_input", "oru_to_crbio", "v2_oru_to_cda_crbio"]

FORMAT_CRBIO = "urn:ihe:lab:xd-lab:2008"  # DOMAIN.md §5.1 (CR-BIO formatCode)
DOCUMENT_CODE = Coded("11502-2", "CR d'examens biologiques", LOINC_OID)
TITLE = "Compte rendu d'examens biologiques"
TEMPLATE_PALM = "1.3.6.1.4.1.19376.1.3.3"
TEMPLATE_CRBIO = "1.2.250.1.213.1.1.1.55"
_COMMENT = Coded("48767-8", "Commentaire", LOINC_OID)
_NORMAL = Coded("N", "Normal", INTERPRETATION_OID)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)")
_RANGE = re.compile(r"\s*(?P<low>[+-]?[0-9.,]+)\s*(?:-|\u2013|à|a)\s*(?P<high>[+-]?[0-9.,]+)\s*")
_BOUND = re.compile(r"\s*(?P<op><=|>=|<|>|≤|≥)\s*(?P<num>[+-]?[0-9.,]+)\s*")
_TEXT_TYPES = ("ST", "TX", "FT")
_CODED_TYPES = ("CE", "CWE")


class CrBioConfig(CdaConfig):
    """Settings of the `v2_oru_to_cda_crbio` step (on top of the shared CDA settings)."""

    crbio_version: Literal["2023.01", "2024.01"] = Field(
        "2024.01",
        description="CR-BIO model version (templateId 1.2.250.1.213.1.1.1.55 extension); default the current "
        "one. Every version gets the FR-Document-PDF-copie section (required from 2024.01): the laboratory's "
        "PDF when the ORU carries one (OBX ED), otherwise a PDF the hub renders from the results.",
    )
    biologist_profession: CodedConfig = Field(
        default_factory=lambda: CodedConfig(
            code="G15_10/SM03", display_name="Médecin - Biologie médicale (SM)", code_system=PROFESSION_OID
        ),
        description="Profession of the author/responsible biologist (TRE_G15), unless config author sets one.",
    )
    chapters: dict[str, CodedConfig] = Field(
        default_factory=dict,
        description="Extra OBR-24 diagnostic service section -> CR-BIO chapter (LOINC) entries, over the "
        "built-in CH, HM, MB (BCT, VR, PAR, MYC), SR (IMM).",
    )
    default_chapter: CodedConfig | None = Field(
        None, description="Chapter for an OBR whose OBR-24 is empty or unknown; unset: such an OBR is refused."
    )
    unknown_original: Literal["refuse", "wait"] = Field(
        "refuse",
        description="A correction (OBX-11/OBR-25 C) whose original report the hub has not sent (no delivered "
        "version of the same order's setId for the patient): `refuse` it with that reason, or `wait` (retried "
        "with the destination's backoff until the original is delivered, then dead after max_attempts).",
    )


# ------------------------------------------------------------------------------------------ reading


@dataclasses.dataclass(slots=True)
class _Result:
    obx: Segment
    comments: list[str] = dataclasses.field(default_factory=list)
    reading: _Reading | None = None  # set by _read_input


@dataclasses.dataclass(slots=True)
class _Order:
    obr: Segment
    orc: Segment | None
    comments: list[str] = dataclasses.field(default_factory=list)
    results: list[_Result] = dataclasses.field(default_factory=list)
    spm: Segment | None = None
    specimen: _Specimen | None = None  # set by _read_input


def _note(seg: Segment) -> str:
    """NTE-3 (FT, repeatable) as text; ``\\.br\\`` line breaks become newlines."""
    esc = seg.er7.delimiters.escape
    lines = []
    for rep in seg.er7.repetitions(seg.index, 3):
        lines += [unescape(part, seg.er7.delimiters, codec=seg.er7.codec) for part in rep.split(f"{esc}.br{esc}")]
    return "\n".join(line.strip() for line in lines).strip()


def _read_orders(er7: Er7Message) -> tuple[list[_Order], Segment | None]:
    """ORDER_OBSERVATION groups (ORC? OBR NTE* {OBX NTE*} SPM?) and the OBX holding a PDF copy."""
    orders: list[_Order] = []
    pending_orc: Segment | None = None
    result: _Result | None = None
    pdf: Segment | None = None
    in_meta = False  # NTE after a MetaDMPMSS row belong to the distribution, not to a result
    for seg in segments(er7, "ORC", "OBR", "NTE", "OBX", "SPM", "PRT"):
        if seg.id == "ORC":
            pending_orc, result, in_meta = seg, None, False
        elif seg.id == "OBR":
            orders.append(_Order(seg, pending_orc))
            pending_orc, result, in_meta = None, None, False
        elif seg.id == "OBX":
            result, in_meta = None, False
            if seg.get(3, 3) == "MetaDMPMSS":
                in_meta = True
            elif seg.get(2) == "ED":
                subtype = seg.comp(seg.reps(5)[0], 3).upper() if seg.reps(5) else ""
                if subtype != "PDF":
                    raise MappingError(
                        "the ORU carries an encapsulated document: use the v2_document_to_cda step",
                        location=seg.loc(5),
                    )
                pdf = seg
            elif not orders:
                raise MappingError("OBX before any OBR", location=seg.loc(1))
            else:
                result = _Result(seg)
                orders[-1].results.append(result)
        elif seg.id == "NTE" and not in_meta and orders:
            text = _note(seg)
            if text:
                (result.comments if result is not None else orders[-1].comments).append(text)
        elif seg.id == "SPM" and orders:
            orders[-1].spm = seg
    if not orders:
        raise MappingError("ORU^R01 has no OBR", location="OBR")
    for order in orders:
        if not order.results:
            raise MappingError("an OBR has no OBX result", location=order.obr.loc(1))
    return orders, pdf


# ---------------------------------------------------------------------------------------- results


def _number(text: str, location: str) -> str:
    """A v2 numeric as an XML Schema decimal (``3,5`` -> ``3.5``, ``.5`` -> ``0.5``)."""
    value = text.strip()
    if not _NUMBER.fullmatch(value):
        raise MappingError("numeric result is not a number", location=location)
    value = value.replace(",", ".").lstrip("+")
    negative = value.startswith("-")
    value = value.lstrip("-")
    if value.startswith("."):
        value = "0" + value
    value = value.rstrip(".")
    return ("-" if negative else "") + value


def _code(obx: Segment) -> tuple[Coded, Coded | None]:
    """(LOINC code, local code) from OBX-3 (CWE: 1-3 identifier, 4-6 alternate)."""
    loinc = local = None
    for first in (1, 4):
        code, text, system = obx.get(3, first), obx.get(3, first + 1), obx.get(3, first + 2)
        if not code:
            continue
        if v2_coding_system_oid(system) == LOINC_OID:
            loinc = loinc or Coded(code, text or code, LOINC_OID)
        else:
            local = local or Coded(code, text or code, system)
    if loinc is None:
        raise MappingError("OBX-3 has no LOINC code (LN)", location=obx.loc(3))
    return loinc, local


@dataclasses.dataclass(slots=True)
class _Value:
    """One OBX-5 ready for the entry (``build``) and the narrative (``display``, ``unit``)."""

    display: str
    unit: str = ""
    xsi: str = ""
    attrs: dict[str, str] = dataclasses.field(default_factory=dict)
    low: tuple[str, bool] | None = None
    high: tuple[str, bool] | None = None
    ratio: tuple[str, str] | None = None
    text: str | None = None
    numeric: bool = False


def _unit(obx: Segment) -> str:
    """UCUM unit of OBX-6 (identifier, or alternate identifier when that one is UCUM)."""
    first, system = obx.get(6, 1), obx.get(6, 3)
    if obx.get(6, 6).upper() == "UCUM" and obx.get(6, 4):
        first, system = obx.get(6, 4), "UCUM"
    unit = to_ucum(first, system)
    if unit is None:
        raise MappingError("OBX-6 unit has no UCUM equivalent", location=obx.loc(6))
    return unit


def _value(obx: Segment) -> _Value | None:
    """OBX-5 by OBX-2 type; None for a result that could not be obtained (OBX-11 X)."""
    value_type = obx.get(2)
    reps = obx.reps(5)
    if not reps:
        if obx.get(11) == "X":
            return None
        raise MappingError("OBX-5 is empty", location=obx.loc(5))
    location = obx.loc(5)
    if value_type == "NM":
        if len(reps) != 1:
            raise MappingError("numeric OBX-5 repeats", location=location)
        unit = _unit(obx)
        number = _number(obx.comp(reps[0], 1), location)
        return _Value(obx.comp(reps[0], 1), unit, "PQ", {"value": number, "unit": unit}, numeric=True)
    if value_type == "SN":
        return _structured_numeric(obx, reps[0], location)
    if value_type in _TEXT_TYPES:
        text = " ".join(unescape(r, obx.er7.delimiters, codec=obx.er7.codec).strip() for r in reps).strip()
        return _Value(text, xsi="ST", text=text)
    if value_type in _CODED_TYPES:
        code, label, system = obx.comp(reps[0], 1), obx.comp(reps[0], 2), obx.comp(reps[0], 3)
        if not code:
            if not label:
                raise MappingError("coded OBX-5 has neither a code nor a text", location=location)
            return _Value(label, xsi="ST", text=label)
        oid = v2_coding_system_oid(system)
        attrs = {"code": code, "displayName": label or code}
        attrs.update({"codeSystem": oid} if oid else {"codeSystemName": system} if system else {})
        return _Value(label or code, xsi="CD", attrs=attrs)
    raise MappingError("OBX-2 value type is not supported for CR-BIO", location=obx.loc(2))


def _structured_numeric(obx: Segment, rep: str, location: str) -> _Value:
    """SN (HL7 v2.5 §2.A.73): <comparator>^<num1>^<separator>^<num2>."""
    comparator, num1, separator, num2 = (obx.comp(rep, n) for n in (1, 2, 3, 4))
    unit = _unit(obx)
    display = f"{comparator}{num1}{separator}{num2}".strip()
    first = _number(num1, location)
    if separator == ":" and num2:  # a ratio such as a titre 1:128
        return _Value(display, "", "RTO_PQ_PQ", ratio=(first, _number(num2, location)), numeric=True)
    if separator == "-" and num2:
        second = _number(num2, location)
        return _Value(display, unit, "IVL_PQ", low=(first, True), high=(second, True), numeric=True)
    if separator or num2:
        raise MappingError("structured numeric separator is not supported", location=location)
    if comparator in ("<", "<="):
        return _Value(display, unit, "IVL_PQ", high=(first, comparator == "<="), numeric=True)
    if comparator in (">", ">="):
        return _Value(display, unit, "IVL_PQ", low=(first, comparator == ">="), numeric=True)
    if comparator in ("", "="):
        return _Value(display, unit, "PQ", {"value": first, "unit": unit}, numeric=True)
    raise MappingError("structured numeric comparator is not supported", location=location)


@dataclasses.dataclass(slots=True)
class _Reading:
    """One OBX as the CR-BIO entry takes it."""

    status: str
    loinc: Coded
    local: Coded | None
    value: _Value | None
    interpretations: list[Coded]
    when: str  # OBX-14, else OBR-7; empty when neither


def _read_result(obx: Segment, obr: Segment) -> _Reading:
    """OBX-11 status, OBX-3 code, OBX-5 value, OBX-8 flags and OBX-14 time, each checked."""
    status = obx.get(11)
    if status not in ("F", "C", "X"):
        # CR-BIO observations are completed or aborted (E_FR-Resultat-...-element-clinique-pertinent.sch).
        raise MappingError("OBX-11 must be F, C or X for a CR-BIO result", location=obx.loc(11))
    loinc, local = _code(obx)
    value = _value(obx)
    interpretations = []
    for flag in (r.strip() for r in obx.reps(8) if r.strip()):
        coded_flag = interpretation(flag)
        if coded_flag is None:
            raise MappingError("OBX-8 flag is outside the CI-SIS interpretation value set", location=obx.loc(8))
        interpretations.append(coded_flag)
    when = obx.get(14) or obr.get(7)
    return _Reading(status, loinc, local, value, interpretations, ts(when, obx.loc(14), "OBX-14") if when else "")


@dataclasses.dataclass(slots=True)
class _Specimen:
    """FR-Prelevement input: specimen type (code, label) and collection / reception times (or empty)."""

    code: str
    label: str
    collected: str
    received: str


def _read_specimen(order: _Order) -> _Specimen | None:
    """The specimen from SPM, else OBR-15 (and OBR-7/OBR-14 times); None when no specimen type is sent."""
    obr, spm = order.obr, order.spm
    if spm is not None:
        code, label, collected, received = spm.get(4, 1), spm.get(4, 2), spm.get(17, 1), spm.get(18)
        collected_at, received_at = spm.loc(17), spm.loc(18)
    else:
        code, label, collected, received = obr.get(15, 1, 1), obr.get(15, 1, 2), obr.get(7), obr.get(14)
        collected_at, received_at = obr.loc(7), obr.loc(14)
    if not code:
        return None
    return _Specimen(
        code,
        specimen_type_display(code) or label,
        ts(collected, collected_at, "specimen collection time") if collected else "",
        ts(received, received_at, "specimen reception time") if received else "",
    )


def _reference_range(obx: Segment, unit: str) -> tuple[str | None, str | None, str]:
    """OBX-7 as (low, high, text); numbers only when the result is a quantity."""
    text = obx.get(7)
    if not text or not unit:
        return None, None, text
    if match := _RANGE.fullmatch(text):
        try:
            return _number(match["low"], ""), _number(match["high"], ""), text
        except MappingError:
            return None, None, text
    if match := _BOUND.fullmatch(text):
        try:
            number = _number(match["num"], "")
        except MappingError:
            return None, None, text
        return (None, number, text) if match["op"] in ("<", "<=", "≤") else (number, None, text)
    return None, None, text


# --------------------------------------------------------------------------------------- building


def _chapter(order: _Order, config: CrBioConfig) -> Coded:
    section = order.obr.get(24)
    extra = config.chapters.get(section)
    if extra is not None:
        return extra.coded()
    if section in CRBIO_CHAPTERS:
        return CRBIO_CHAPTERS[section]
    if config.default_chapter is not None:
        return config.default_chapter.coded()
    raise MappingError("OBR-24 diagnostic service section has no CR-BIO chapter", location=order.obr.loc(24))


def _battery_code(order: _Order, chapter: Coded) -> Coded:
    """OBR-4 when LOINC (the CR-BIO entry act code must be LOINC or absent), else the chapter."""
    obr = order.obr
    for first in (1, 4):
        if obr.get(4, first) and v2_coding_system_oid(obr.get(4, first + 2)) == LOINC_OID:
            return Coded(obr.get(4, first), obr.get(4, first + 1) or obr.get(4, first), LOINC_OID)
    return chapter


def _coded_loinc(parent: etree._Element, name: str, value: Coded) -> etree._Element:
    return b.coded(parent, name, value, codeSystemName="LOINC" if value.code_system == LOINC_OID else None)


def _comment_entry(parent: etree._Element, ref: str, *, inversion: bool) -> None:
    """FR-Commentaire-ER (IHE PCC Comment 1.3.6.1.4.1.19376.1.5.3.1.4.2), pointing at the narrative."""
    rel = b.sub(parent, "entryRelationship", typeCode="SUBJ", inversionInd="true" if inversion else None)
    act = b.sub(rel, "act", classCode="ACT", moodCode="EVN")
    for template in ("2.16.840.1.113883.10.20.1.40", "1.3.6.1.4.1.19376.1.5.3.1.4.2", "1.2.250.1.213.1.1.3.32"):
        b.sub(act, "templateId", root=template)
    _coded_loinc(act, "code", _COMMENT)
    b.sub(b.sub(act, "text"), "reference", value="#" + ref)
    b.sub(act, "statusCode", code="completed")


def _pq(parent: etree._Element, name: str, value: str, unit: str, inclusive: bool | None = None) -> None:
    b.sub(parent, name, value=value, unit=unit or "1", inclusive=None if inclusive is None else str(inclusive).lower())


def _observation_value(obs: etree._Element, value: _Value) -> None:
    el = b.xsi_type(b.sub(obs, "value", value.text, **value.attrs), value.xsi)
    if value.xsi == "IVL_PQ":
        if value.low is not None:
            _pq(el, "low", value.low[0], value.unit, value.low[1])
        if value.high is not None:
            _pq(el, "high", value.high[0], value.unit, value.high[1])
    elif value.xsi == "RTO_PQ_PQ" and value.ratio is not None:
        _pq(el, "numerator", value.ratio[0], "1")
        _pq(el, "denominator", value.ratio[1], "1")


class _Section:
    """Narrative and entry of one FR-CR-BIO-Sous-Chapitre (one OBR), built side by side."""

    def __init__(self, parent: etree._Element, order: _Order, number: int, chapter: Coded, config: CrBioConfig):
        self.order, self.number, self.config = order, number, config
        self.battery = _battery_code(order, chapter)
        self.view = ViewSection(order.obr.get(4, 2) or self.battery.display_name, subtitle=chapter.display_name)
        section = b.sub(b.sub(parent, "component"), "section")
        b.sub(section, "templateId", root="1.3.6.1.4.1.19376.1.3.3.2.2")  # IHE PALM Laboratory Report Item
        b.sub(section, "templateId", root="1.2.250.1.213.1.1.2.71")  # FR-CR-BIO-Sous-Chapitre
        _coded_loinc(section, "code", self.battery)
        b.sub(section, "title", order.obr.get(4, 2) or self.battery.display_name)
        self.text = b.sub(section, "text")
        entry = b.sub(section, "entry", typeCode="DRIV")
        b.sub(entry, "templateId", root="1.3.6.1.4.1.19376.1.3.1")  # Laboratory Report Data Processing Entry
        b.sub(entry, "templateId", root="1.2.250.1.213.1.1.3.21")  # FR-Resultats-examens-de-biologie-medicale
        self.act = b.sub(entry, "act", classCode="ACT", moodCode="EVN")
        _coded_loinc(self.act, "code", self.battery)
        b.sub(self.act, "statusCode", code="completed")

    def build(self) -> None:
        obr = self.order.obr
        self._specimen()
        rel = b.sub(self.act, "entryRelationship", typeCode="COMP")
        organizer = b.sub(rel, "organizer", classCode="BATTERY", moodCode="EVN")
        b.sub(organizer, "templateId", root="1.3.6.1.4.1.19376.1.3.1.4")  # Laboratory Battery Organizer
        b.sub(organizer, "templateId", root="1.2.250.1.213.1.1.3.78")  # FR-Batterie-examens-de-biologie-medicale
        _coded_loinc(organizer, "code", self.battery)
        b.sub(organizer, "statusCode", code="completed")
        if obr.get(7):
            b.sub(organizer, "effectiveTime", value=ts(obr.get(7), obr.loc(7), "OBR-7"))

        table = b.sub(self.text, "table", border="1")
        head = b.sub(b.sub(table, "thead"), "tr")
        for label in ("Examen", "Résultat", "Unité", "Valeurs de référence", "Interprétation"):
            b.sub(head, "th", label)
        body = b.sub(table, "tbody")
        notes: list[tuple[str, str, str]] = []
        for i, result in enumerate(self.order.results, 1):
            self._result(organizer, body, result, i, notes)
        for j, comment in enumerate(self.order.comments, 1):
            notes.append(("", f"cmt-{self.number}-0-{j}", comment))
            self.view.notes.append(comment)
            _comment_entry(self.act, f"cmt-{self.number}-0-{j}", inversion=False)
        for label, ref, comment in notes:
            paragraph = b.sub(self.text, "paragraph", f"{label} : " if label else None)
            content = b.sub(paragraph, "content", ID=ref)
            lines = comment.split("\n")
            content.text = b.clean(lines[0])
            for line in lines[1:]:
                b.sub(content, "br").tail = b.clean(line)

    def _specimen(self) -> None:
        """FR-Prelevement (IHE PALM Specimen Collection) from SPM, else OBR-15."""
        specimen = self.order.specimen
        if specimen is None:
            return
        code, label, collected, received = specimen.code, specimen.label, specimen.collected, specimen.received
        paragraph = b.sub(self.text, "paragraph", "Prélèvement : ")
        shown = b.sub(paragraph, "content", label or code, ID=f"spc-{self.number}")
        if collected:
            shown.tail = f", le {b.human_time(collected)}"
        self.view.notes.append(f"Prélèvement : {label or code}" + (shown.tail or ""))
        rel = b.sub(self.act, "entryRelationship", typeCode="COMP")
        proc = b.sub(rel, "procedure", classCode="PROC", moodCode="EVN")
        b.sub(proc, "templateId", root="1.3.6.1.4.1.19376.1.3.1.2")  # IHE PALM Specimen Collection
        b.sub(proc, "templateId", root="1.2.250.1.213.1.1.3.77")  # FR-Prelevement
        if collected:
            b.sub(proc, "effectiveTime", value=collected)
        role = b.sub(b.sub(proc, "participant", typeCode="PRD"), "participantRole", classCode="SPEC")
        entity = b.sub(role, "playingEntity")
        type_code = b.sub(entity, "code", code=code, displayName=label or None, codeSystem=SPECIMEN_TYPE_OID)
        b.sub(b.sub(type_code, "originalText"), "reference", value=f"#spc-{self.number}")
        if received:
            # FR-Echantillon-date-reception; IHE's act code system OID is 1.3.5.1.4.1.19376.1.5.3.2 as written
            # in PALM and in the CR-BIO schematron (E_FR-Prelevement.sch), not 1.3.6.
            act = b.sub(b.sub(proc, "entryRelationship", typeCode="COMP"), "act", classCode="ACT", moodCode="EVN")
            b.sub(act, "templateId", root="1.3.6.1.4.1.19376.1.3.1.3")
            b.sub(act, "templateId", root="1.2.250.1.213.1.1.3.107")
            b.sub(act, "code", code="SPRECEIVE", displayName="Échantillon reçu", codeSystem="1.3.5.1.4.1.19376.1.5.3.2")
            b.sub(act, "effectiveTime", value=received)

    def _result(
        self,
        organizer: etree._Element,
        body: etree._Element,
        result: _Result,
        i: int,
        notes: list[tuple[str, str, str]],
    ) -> None:
        obx, reading = result.obx, result.reading
        assert reading is not None  # _read_input read every result
        status, loinc, local, value = reading.status, reading.loinc, reading.local, reading.value
        interpretations = reading.interpretations
        low, high, range_text = _reference_range(obx, value.unit if value and value.numeric else "")
        ref = f"res-{self.number}-{i}"

        row = b.sub(body, "tr")
        name = obx.get(3, 2) or loinc.display_name
        b.sub(b.sub(row, "td"), "content", name, ID=ref)
        shown = ("Non réalisé" if value is None else value.display) + (" (corrigé)" if status == "C" else "")
        unit = value.unit if value is not None and value.unit != "1" else ""
        flags_text = ", ".join(c.display_name for c in interpretations)
        for cell in (shown, unit, range_text, flags_text):
            b.sub(row, "td", cell)
        self.view.lines.append(ResultLine(name, shown, unit, range_text, flags_text, tuple(result.comments)))

        obs = b.sub(b.sub(organizer, "component"), "observation", classCode="OBS", moodCode="EVN")
        b.sub(obs, "templateId", root="1.3.6.1.4.1.19376.1.3.1.6")  # IHE PALM Laboratory Observation
        b.sub(obs, "templateId", root="1.2.250.1.213.1.1.3.80")  # FR-Resultat-...-element-clinique-pertinent
        code = _coded_loinc(obs, "code", loinc)
        b.sub(b.sub(code, "originalText"), "reference", value="#" + ref)
        if local is not None:
            b.sub(
                code, "translation", code=local.code, displayName=local.display_name, codeSystemName=local.code_system
            )
        b.sub(obs, "statusCode", code="aborted" if status == "X" else "completed")
        if reading.when:
            b.sub(obs, "effectiveTime", value=reading.when)
        if value is not None:
            _observation_value(obs, value)
        for coded_flag in interpretations:
            b.coded(obs, "interpretationCode", coded_flag)
        for j, comment in enumerate(result.comments, 1):
            cref = f"cmt-{self.number}-{i}-{j}"
            notes.append((obx.get(3, 2) or loinc.display_name, cref, comment))
            _comment_entry(obs, cref, inversion=True)
        if range_text:
            observation_range = b.sub(b.sub(obs, "referenceRange", typeCode="REFV"), "observationRange")
            if low is None and high is None:
                b.sub(observation_range, "text", range_text)
            else:
                assert value is not None
                ivl = b.xsi_type(b.sub(observation_range, "value"), "IVL_PQ")
                if low is not None:
                    _pq(ivl, "low", low, value.unit)
                if high is not None:
                    _pq(ivl, "high", high, value.unit)
            b.coded(observation_range, "interpretationCode", _NORMAL)


def _lab_pdf(obx: Segment) -> bytes:
    """The laboratory's own PDF of the report (OBX ED ``^AP^PDF^Base64^<data>``)."""
    rep = obx.reps(5)[0]
    if obx.comp(rep, 4).upper() != "BASE64":
        raise MappingError("OBX-5.4 encoding must be Base64", location=obx.loc(5, 4))
    try:
        pdf = base64.b64decode("".join(obx.comp(rep, 5).split()), validate=True)
    except binascii.Error:
        raise MappingError("OBX-5.5 is not valid base64", location=obx.loc(5, 5)) from None
    if not pdf.startswith(b"%PDF-"):
        raise MappingError("OBX-5 says PDF but does not hold a PDF", location=obx.loc(5, 5))
    return pdf


def _pdf_copy(body: etree._Element, pdf: bytes, doc_id: str) -> None:
    """FR-Document-PDF-copie (1.2.250.1.213.1.1.2.243) with the report as a PDF (ANS CR-BIO 2024.01)."""
    section = b.sub(b.sub(body, "component"), "section")
    b.sub(section, "templateId", root="1.2.250.1.213.1.1.2.243")
    b.sub(section, "id", root=doc_id + ".3")
    _coded_loinc(section, "code", Coded("55108-5", "Copie du document", LOINC_OID))
    b.sub(section, "title", "Copie du document")
    cell = b.sub(b.sub(b.sub(b.sub(b.sub(section, "text"), "table", border="0"), "tbody"), "tr"), "td")
    b.sub(cell, "renderMultiMedia", referencedObject="pdf-copy")
    organizer = b.sub(b.sub(section, "entry"), "organizer", classCode="CLUSTER", moodCode="EVN")
    b.sub(organizer, "templateId", root="1.2.250.1.213.1.1.3.18")  # FR-Document-attache
    b.sub(organizer, "id", root=doc_id + ".4")
    _coded_loinc(organizer, "code", Coded("55107-7", "Document attaché", LOINC_OID))
    b.sub(organizer, "statusCode", code="completed")
    kind = b.sub(b.sub(organizer, "component"), "observation", classCode="OBS", moodCode="EVN")
    for template in ("1.3.6.1.4.1.19376.1.5.3.1.4.13", "1.2.250.1.213.1.1.3.48", "1.2.250.1.213.1.1.3.48.18"):
        b.sub(kind, "templateId", root=template)
    b.sub(kind, "id", root=doc_id + ".5")
    _coded_loinc(kind, "code", Coded("69764-9", "Type de document", LOINC_OID))
    b.sub(kind, "statusCode", code="completed")
    b.sub(kind, "effectiveTime", nullFlavor="NA")
    b.xsi_type(_coded_loinc(kind, "value", Coded("55108-5", "Copie du document", LOINC_OID)), "CD")
    media = b.sub(b.sub(organizer, "component"), "observationMedia", classCode="OBS", moodCode="EVN", ID="pdf-copy")
    b.sub(media, "value", base64.b64encode(pdf).decode("ascii"), mediaType="application/pdf", representation="B64")


# ----------------------------------------------------------------------------------------- header


def _author(orders: list[_Order], config: CrBioConfig) -> Practitioner:
    """The validating biologist: OBR-32 (principal result interpreter), then OBX-16, then config.

    ORC-12 is the *ordering* provider (the prescriber), never the author of the report.
    """
    found: Practitioner | None = None
    for order in orders:
        found = found or next(
            (p for x in order.obr.reps(32) if (p := national_practitioner_from_cnn(order.obr, x))), None
        )
    for order in orders:
        for result in order.results:
            found = found or next(
                (p for x in result.obx.reps(16) if (p := national_practitioner_from_xcn(result.obx, x))), None
            )
    configured = config.author.practitioner() if config.author else None
    if found is None:
        found = configured
    if found is None:
        raise MappingError("no biologist with a national id (OBR-32, OBX-16) and no config author")
    if configured is not None and configured.id == found.id and configured.profession:
        return dataclasses.replace(found, profession=configured.profession)
    return dataclasses.replace(found, profession=found.profession or config.biologist_profession.coded())


def _laboratory(orders: list[_Order], distribution: Distribution, config: CrBioConfig) -> Organization:
    """config custodian, then the PRT SB structure, then OBX-23 performing organization."""
    if config.custodian is not None:
        return config.custodian.organization()
    if distribution.sender_org is not None:
        return distribution.sender_org
    for order in orders:
        for result in order.results:
            for xon in result.obx.reps(23):
                if (org := organization_from_xon(result.obx, xon)) is not None:
                    return org
    raise MappingError("no laboratory: set config custodian or send a national structure id (PRT SB, OBX-23)")


def _patient_lines(patient: b.Patient) -> list[tuple[str, str]]:
    """The identity traits as a reader checks them (INS referential: birth names first)."""
    lines = [("Nom de naissance", patient.birth_family), ("Prénom(s) de naissance", patient.birth_given_list)]
    if patient.used_family:
        lines.append(("Nom utilisé", patient.used_family))
    if patient.used_given:
        lines.append(("Prénom utilisé", patient.used_given))
    lines += [("Sexe", patient.gender.display_name), ("Date de naissance", b.human_time(patient.birth_date))]
    if patient.birthplace_county:
        lines.append(("Lieu de naissance (code INSEE)", patient.birthplace_county))
    label = "INS (matricule INS)" if patient.has_ins else "Identifiant"
    if patient.ids:
        lines.append((label, patient.ids[0].extension or patient.ids[0].root))
    return [(k, v) for k, v in lines if v]


def _xcn_name(seg: Segment, value: str) -> str:
    family, given, prefix = seg.comp(value, 2), seg.comp(value, 3), seg.comp(value, 6)
    return " ".join(p for p in (prefix, given, family) if p)


def _parties(orders: list[_Order], lab: Organization, author: Practitioner) -> list[tuple[str, str]]:
    """Prescriber (ORC-12, else OBR-16), laboratory and validating biologist, as shown in the PDF."""
    prescriber = ""
    for order in orders:
        for seg, field in ((order.orc, 12), (order.obr, 16)):
            if seg is not None and not prescriber:
                prescriber = next((n for x in seg.reps(field) if (n := _xcn_name(seg, x))), "")
    address = ", ".join(p for p in (lab.street, " ".join(q for q in (lab.postal_code, lab.city) if q)) if p)
    return [
        ("Prescripteur", prescriber or "non précisé"),
        ("Laboratoire", lab.name + (f" - {address}" if address else "")),
        ("Biologiste validant", " ".join(p for p in (author.given, author.family) if p)),
    ]


def _set_key(orders: list[_Order], msh: Segment) -> str:
    """What every version of the report shares: the request (ORC-4 placer group), else the order numbers."""
    first = orders[0]
    for seg, field in ((first.orc, 4), (first.obr, 3), (first.orc, 3), (first.obr, 2), (first.orc, 2)):
        if seg is not None and seg.get(field, 1):
            return f"order|{seg.get(field, 1)}|{seg.get(field, 2)}"
    return f"message|{msh.get(10)}"


def _times(orders: list[_Order], msh: Segment) -> tuple[str, str, str]:
    """(document time, service start, collection start) from OBR-22/OBR-14/OBR-7, else MSH-7."""
    message_time = ts(msh.get(7), "MSH^1^7", "MSH-7 message time")
    reports = [ts(o.obr.get(22), o.obr.loc(22), "OBR-22") for o in orders if o.obr.get(22)]
    received = [ts(o.obr.get(14), o.obr.loc(14), "OBR-14") for o in orders if o.obr.get(14)]
    collected = [ts(o.obr.get(7), o.obr.loc(7), "OBR-7") for o in orders if o.obr.get(7)]
    document = max(reports, key=lambda t: t[:14]) if reports else message_time
    start = min(received or collected or [document], key=lambda t: t[:14])
    collection = min(collected or [start], key=lambda t: t[:14])
    return document, start, collection


def _parent(
    hints: Mapping[str, str],
    documents: Mapping[str, DocumentVersion] | None,
    set_id: II,
    config: CrBioConfig,
    *,
    can_ask: bool,
) -> tuple[II, int | None]:
    """The version a correction replaces: named by an earlier step, else among the versions the hub sent.

    ``documents`` None with ``can_ask``: the hub has not looked yet, DocumentsNeeded asks it to.
    """
    parent_text = hints.get("cda_replaces_id", "")
    if parent_text:
        root_part, _, ext_part = parent_text.partition("^")
        version_text = hints.get("cda_replaces_version", "")
        return II(root_part, ext_part or None), int(version_text) if version_text.isdigit() else None
    if documents is None and can_ask:
        raise DocumentsNeeded([set_id.root])
    earlier = (documents or {}).get(set_id.root)
    if earlier is not None:
        root_part, _, ext_part = earlier.unique_id.partition("^")
        return II(root_part, ext_part or None), earlier.version
    why = "correction of a report the hub has not sent: no delivered version of this order (setId)"
    if config.unknown_original == "wait":
        raise Retryable(why)
    raise MappingError(why, location="OBX^1^11")


@dataclasses.dataclass(slots=True)
class _Input:
    """What the CR-BIO takes from the ORU alone, every rule on it checked (:func:`_read_input`)."""

    orders: list[_Order]
    lab_pdf: bytes | None
    document_time: str
    start: str
    collection: str
    encounter_start: str | None  # PV1-44


def _read_input(er7: Er7Message) -> _Input:
    """Read and check the results part of an ORU^R01: orders, results, specimens, times, the lab's PDF.

    The one place of the rules that depend on the message alone, so the listener check
    (:func:`check_crbio_input`) and the mapping refuse the same messages. Not here: the patient
    (``ins_stamp`` rewrites PID-3/5/7/11/32 from the identity registry after the listener, and local
    identifiers get their OID from the step config) and what the step config may supply (author,
    laboratory, OBR-24 chapters).
    """
    msh = segments(er7, "MSH")[0]
    if (msh.get(9, 1), msh.get(9, 2)) != ("ORU", "R01"):
        raise MappingError("message type must be ORU^R01", location="MSH^1^9")
    orders, pdf_obx = _read_orders(er7)
    for order in orders:
        order.specimen = _read_specimen(order)
        for result in order.results:
            result.reading = _read_result(result.obx, order.obr)
    lab_pdf = _lab_pdf(pdf_obx) if pdf_obx is not None else None
    document_time, start, collection = _times(orders, msh)
    pv1 = next(iter(segments(er7, "PV1")), None)
    encounter_start = ts(pv1.get(44), pv1.loc(44), "PV1-44") if pv1 is not None and pv1.get(44) else None
    return _Input(orders, lab_pdf, document_time, start, collection, encounter_start)


@register("check", "crbio_input")
def check_crbio_input(body: bytes) -> dict[str, str]:
    """Listener check: refuse before the ACK an ORU^R01 of results whose results cannot give a CR-BIO.

    Runs :func:`_read_input`, the rules of ``v2_oru_to_cda_crbio`` that depend on the message alone
    (no PDF is rendered); a MappingError names the field (HL7 location such as ``OBX^2^3``), so the
    listener answers AR + ERR and stores the message as rejected. Other messages, and ORUs carrying
    a volet document (the ``v2_documents`` check), pass. Adds no metadata.
    """
    er7 = Er7Message(body)
    if is_results_oru(er7):
        _read_input(er7)
    return {}


def oru_to_crbio(
    body: bytes,
    *,
    config: CrBioConfig,
    hints: Mapping[str, str] | None = None,
    documents: Mapping[str, DocumentVersion] | None = None,
    can_ask: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """Build the CR-BIO document of an ORU^R01; returns (XML bytes, metadata).

    A correction replaces the version named by ``hints`` (``cda_replaces_id``/``_version``), else
    the one ``documents`` gives for its setId (the versions the hub sent); ``documents`` None with
    ``can_ask`` raises :class:`hub.documents.DocumentsNeeded` for the hub to look them up.

    The metadata are those of :func:`mappings.cda.read_cda_header`, plus ``document_action``
    (``create`` | ``replace``), ``document_format_code`` and the distribution keys of
    :mod:`mappings.cda.hl7v2_documents` when the ORU carries MetaDMPMSS rows and PRT segments.
    """
    hints = hints or {}
    er7 = Er7Message(body)
    msh = segments(er7, "MSH")[0]
    read = _read_input(er7)
    orders, lab_pdf = read.orders, read.lab_pdf
    distribution = read_distribution(er7)
    patient = read_patient(er7, config.patient_id_roots)
    distribution.check(has_ins=patient.has_ins, enforce_matrix=False)
    author = _author(orders, config)
    lab = _laboratory(orders, distribution, config)
    chapters = [_chapter(o, config) for o in orders]
    document_time, start, collection = read.document_time, read.start, read.collection

    corrected = any(o.obr.get(25) == "C" or any(r.obx.get(11) == "C" for r in o.results) for o in orders)
    doc_id = II(b.derived_oid(config.document_id_root, 1, msh.get(3), msh.get(4), msh.get(10)))
    set_id = II(b.derived_oid(config.document_id_root, 2, msh.get(4), _set_key(orders, msh)))
    parent_id: II | None = None
    parent_version: int | None = None
    if corrected:
        parent_id, parent_version = _parent(hints, documents, set_id, config, can_ask=can_ask)
    version = (parent_version + 1 if parent_version else 2) if corrected else 1

    doc = b.new_document([(TEMPLATE_PALM, None), (TEMPLATE_CRBIO, config.crbio_version)], lab=True)
    b.add_identification(
        doc,
        doc_id=doc_id,
        code=DOCUMENT_CODE,
        title=TITLE,
        effective_time=document_time,
        confidentiality=config.confidentiality_code,
        set_id=set_id,
        version=version,
    )
    b.add_record_target(doc, patient)
    b.add_author(doc, author, document_time, lab)
    b.add_custodian(doc, lab)
    b.add_legal_authenticator(doc, author, document_time, lab)
    unique_chapters = list(dict.fromkeys(chapters))
    b.add_documentation_of(
        doc,
        code=unique_chapters[0],
        start=start,
        stop=document_time,
        performer=author,
        org=lab,
        practice_setting=config.required_practice_setting(),
        lab=True,
    )
    for chapter in unique_chapters[1:]:
        b.add_secondary_service_event(doc, chapter)
    if parent_id is not None:
        b.add_related_document(doc, parent_id=parent_id, parent_version=parent_version)
    pv1 = next(iter(segments(er7, "PV1")), None)
    b.add_component_of(
        doc,
        encounter=encounter_code(pv1.get(2)) if pv1 is not None else None,
        start=read.encounter_start or collection,
        facility=config.required_facility(),
        responsible=(author, lab),
    )

    structured = b.sub(b.sub(doc, "component"), "structuredBody")
    view = ReportView(
        TITLE,
        document_time,
        _patient_lines(patient),
        _parties(orders, lab, author),
        status="Compte rendu corrigé (nouvelle version)" if corrected else "",
    )
    sections: dict[Coded, etree._Element] = {}
    for number, (order, chapter) in enumerate(zip(orders, chapters, strict=True), 1):
        if chapter not in sections:
            section = b.sub(b.sub(structured, "component"), "section")
            b.sub(section, "templateId", root="1.3.6.1.4.1.19376.1.3.3.2.1")  # IHE PALM Laboratory Specialty
            b.sub(section, "templateId", root="1.2.250.1.213.1.1.2.70")  # FR-CR-BIO-Chapitre
            _coded_loinc(section, "code", chapter)
            b.sub(section, "title", chapter.display_name)
            sections[chapter] = section
        built = _Section(sections[chapter], order, number, chapter, config)
        built.build()
        view.sections.append(built.view)
    _pdf_copy(structured, lab_pdf if lab_pdf is not None else render_pdf(view), doc_id.root)

    violations = validate_cda_header(doc)
    if violations:  # a gap in this mapping, not a sender error: the rule ids say which
        rules = ", ".join(sorted({v.rule for v in violations}))
        raise MappingError(f"the CR-BIO document breaks CI-SIS header rules: {rules}")
    metadata = read_cda_header(doc)
    metadata.update(distribution.metadata())
    metadata["document_action"] = "replace" if corrected else "create"
    metadata["document_format_code"] = FORMAT_CRBIO
    if corrected and parent_id is not None:
        metadata["document_replaces_id"] = parent_id.text
    return b.serialize(doc), metadata


@register(
    "step",
    "v2_oru_to_cda_crbio",
    config=CrBioConfig,
    consumes=(ContentType.HL7V2,),
    produces=ContentType.CDA,
    needs=("documents",),
)
def v2_oru_to_cda_crbio(message: Message, config: CrBioConfig | None = None, ctx: StepContext | None = None) -> Message:
    """ORU^R01 lab results -> CDA R2 CR-BIO lab report (CI-SIS), with deterministic document ids.

    Metadata of the result: read_cda_header keys, document_action (create | replace),
    document_format_code, and the MetaDMPMSS/PRT distribution keys when present.
    """
    xml, metadata = oru_to_crbio(
        message.body,
        config=config or CrBioConfig(),
        hints=message.metadata,
        documents=ctx.documents if ctx is not None else None,
        can_ask=ctx is not None,
    )
    return message.derive(body=xml, content_type=ContentType.CDA, **metadata)
