"""A readable PDF of a report the hub builds, for the FR-Document-PDF-copie section.

CI-SIS CR-BIO 2024.01 requires every report to carry a PDF copy
(``CI-SIS_BIO-CR-BIO_2024.01.sch``: section 1.2.250.1.213.1.1.2.243 "doit être présente").
When the laboratory sends its own PDF in the ORU, that one is used; otherwise the mapping
describes the report as a :class:`ReportView` (patient and identity traits, prescriber,
laboratory, each result with value, unit, reference range, abnormal flag and comments, the
validating biologist) and :func:`render_pdf` lays it out with fpdf2.

The output is deterministic (fixed creation date: the document's own time; no random file
identifier), so a replayed message yields the same document bytes. Text goes through the PDF
core fonts (WinAnsi): characters outside it are written as their closest ASCII form.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import UTC, datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

__all__ = ["ReportView", "ResultLine", "ViewSection", "render_pdf"]

_FONT = "Helvetica"
_WIDTHS = (62, 30, 20, 40, 28)  # examen, résultat, unité, références, interprétation (mm, A4 minus margins)


@dataclasses.dataclass(frozen=True, slots=True)
class ResultLine:
    """One result row as a reader sees it."""

    name: str
    value: str
    unit: str = ""
    reference_range: str = ""
    interpretation: str = ""
    comments: tuple[str, ...] = ()


@dataclasses.dataclass(slots=True)
class ViewSection:
    """A chapter or sub-chapter: its title, its results and its free-text notes."""

    title: str
    lines: list[ResultLine] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    subtitle: str = ""


@dataclasses.dataclass(slots=True)
class ReportView:
    """What the PDF shows. Built by the mapping from the same data as the CDA. Never logged."""

    title: str
    time: str
    """Document time, HL7 TS (YYYYMMDDHHMMSS+ZZZZ)."""
    patient: list[tuple[str, str]]
    """(label, value) identity traits: names, birth date, sex, INS..."""
    parties: list[tuple[str, str]]
    """(role, description): prescriber, laboratory, validating biologist..."""
    sections: list[ViewSection] = dataclasses.field(default_factory=list)
    status: str = ""

    def __repr__(self) -> str:
        return "ReportView(...)"


def _latin(text: str) -> str:
    """Text the core fonts can show: WinAnsi as is, anything else by its closest ASCII form."""
    out = []
    for char in text.replace("\u2019", "'").replace("\u2013", "-").replace("\u0153", "oe").replace("\u0152", "OE"):
        try:
            char.encode("cp1252")
            out.append(char)
        except UnicodeEncodeError:
            out.append(unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def _human(ts: str) -> str:
    digits = ts[:12]
    if len(digits) < 8:
        return ts
    date = f"{digits[6:8]}/{digits[4:6]}/{digits[0:4]}"
    return f"{date} {digits[8:10]}:{digits[10:12]}" if len(digits) >= 12 else date


def _creation_date(ts: str) -> datetime:
    try:
        return datetime.strptime(ts[:14].ljust(14, "0"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime(2000, 1, 1, tzinfo=UTC)


class _Pdf(FPDF):
    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._footer_text = footer_text

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, size=8)
        self.cell(0, 5, _latin(f"{self._footer_text} - page {self.page_no()}/{{nb}}"), align="C")


def render_pdf(view: ReportView) -> bytes:
    """The report as a PDF (A4, one results table per section)."""
    pdf = _Pdf(f"{view.title} du {_human(view.time)}")
    pdf.set_creation_date(_creation_date(view.time))
    pdf.set_creator("interop-hub")
    pdf.set_title(_latin(view.title))
    pdf.set_compression(False)
    pdf.alias_nb_pages()
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font(_FONT, style="B", size=15)
    pdf.multi_cell(0, 8, _latin(view.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FONT, size=9)
    pdf.cell(0, 5, _latin(f"Date du compte rendu : {_human(view.time)}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if view.status:
        pdf.cell(0, 5, _latin(view.status), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _block(pdf, "Patient", view.patient)
    _block(pdf, "Intervenants", view.parties)
    for section in view.sections:
        _section(pdf, section)
    return bytes(pdf.output())


def _block(pdf: FPDF, heading: str, rows: list[tuple[str, str]]) -> None:
    pdf.ln(3)
    pdf.set_font(_FONT, style="B", size=11)
    pdf.cell(0, 6, _latin(heading), border="B", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for label, value in rows:
        pdf.set_font(_FONT, style="B", size=9)
        pdf.cell(55, 5, _latin(label))
        pdf.set_font(_FONT, size=9)
        pdf.multi_cell(0, 5, _latin(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _section(pdf: FPDF, section: ViewSection) -> None:
    pdf.ln(3)
    pdf.set_font(_FONT, style="B", size=11)
    pdf.multi_cell(0, 6, _latin(section.title), border="B", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if section.subtitle:
        pdf.set_font(_FONT, style="I", size=9)
        pdf.multi_cell(0, 5, _latin(section.subtitle), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if section.lines:
        pdf.set_font(_FONT, size=8)
        with pdf.table(col_widths=_WIDTHS, text_align="LEFT", line_height=4.5, first_row_as_headings=True) as table:
            table.row([_latin(h) for h in ("Examen", "Résultat", "Unité", "Valeurs de référence", "Interprétation")])
            for line in section.lines:
                table.row([_latin(c) for c in (line.name, line.value, line.unit, line.reference_range,
                                              line.interpretation)])  # fmt: skip
        for line in section.lines:
            for comment in line.comments:
                pdf.set_font(_FONT, style="I", size=8)
                pdf.multi_cell(0, 4.5, _latin(f"{line.name} : {comment}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for note in section.notes:
        pdf.set_font(_FONT, style="I", size=8)
        pdf.multi_cell(0, 4.5, _latin(note), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
