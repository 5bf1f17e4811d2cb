"""A readable PDF of a report the hub builds, for the FR-Document-PDF-copie section.

CI-SIS CR-BIO 2024.01 requires every report to carry a PDF copy
(``CI-SIS_BIO-CR-BIO_2024.01.sch``: section 1.2.250.1.213.1.1.2.243 "doit être présente").
When the laboratory sends its own PDF in the ORU, that one is used; otherwise the mapping
describes the report as a :class:`ReportView` (patient and identity traits, prescriber,
laboratory, each result with value, unit, reference range, abnormal flag and comments, the
validating biologist) and :func:`render_pdf` lays it out with fpdf2.

The output is deterministic (fixed creation date: the document's own time; no random file
identifier), so a replayed message yields the same document bytes. Text goes through the PDF
core fonts (Latin-1): characters outside it are written as their closest ASCII form.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import UTC, datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import CoreFont

__all__ = ["ReportView", "ResultLine", "ViewSection", "render_pdf"]

_FONT = "Helvetica"
_WIDTHS = (70, 32, 20, 40, 28)  # examen, résultat, unité, références, interprétation (mm, A4 minus margins)


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


# What fpdf2's core fonts take is Latin-1: these have no decomposition to it.
_FALLBACK = str.maketrans({
    "\u0152": "OE", "\u0153": "oe", "\u0141": "L", "\u0142": "l", "\u0110": "D", "\u0111": "d", "\u0131": "i",
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2010": "-", "\u2013": "-", "\u2014": "-",
    "\u2026": "...", "\u20ac": "EUR", "\u2264": "<=", "\u2265": ">=",
})  # fmt: skip


def _latin(text: str) -> str:
    """Text the core fonts can show: Latin-1 as is, anything else by its closest ASCII form."""
    text = text.translate(_FALLBACK)
    if text.isascii() or max(text) <= "\xff":  # nearly always: nothing to replace
        return text
    out = []
    for char in text:
        if ord(char) < 256:
            out.append(char)
        else:
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
    _lines(pdf, view.title, height=8)
    pdf.set_font(_FONT, size=9)
    pdf.cell(0, 5, _latin(f"Date du compte rendu : {_human(view.time)}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if view.status:
        pdf.cell(0, 5, _latin(view.status), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    _block(pdf, "Patient", view.patient)
    _block(pdf, "Intervenants", view.parties)
    for section in view.sections:
        _section(pdf, section)
    return bytes(pdf.output())


def _width(pdf: FPDF, text: str) -> float:
    """Width in mm of ``text`` in the current core font (its AFM widths, per mille of the font size).

    fpdf2's get_string_width handles text shaping and styles, ~100 µs a call; the core fonts need none.
    """
    widths = _core_widths(pdf)
    return sum(widths.get(char, 500) for char in text) * pdf.font_size / 1000


def _core_widths(pdf: FPDF) -> dict[str, int]:
    """The current core font's character widths (font units, per mille of its size), by character."""
    font = pdf.current_font
    assert isinstance(font, CoreFont), "the report uses core fonts only"
    widths: dict[str, int] = font.cw
    return widths


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """``text`` cut at spaces into lines no wider than ``width`` mm (a word wider than it is cut).

    fpdf2's multi_cell does the same with a full line-breaking engine that costs ~1 ms a cell;
    a report has hundreds of cells, and the core fonts need no shaping.
    """
    widths, size = _core_widths(pdf), pdf.font_size
    space = widths.get(" ", 500)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, line_units = "", 0  # line_units: the line's width in font units, summed as words are added
        for word in paragraph.split(" "):
            word_units = sum(widths.get(char, 500) for char in word)
            units = line_units + space + word_units if line else word_units
            if units * size / 1000 <= width:  # the same figure as _width(pdf, candidate line)
                line = f"{line} {word}" if line else word
                line_units = units
                continue
            if line:
                lines.append(line)
            while _width(pdf, word) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and _width(pdf, word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line, line_units = word, sum(widths.get(char, 500) for char in word)
        lines.append(line)
    return lines


def _lines(pdf: FPDF, text: str, *, height: float, indent: float = 0, width: float | None = None) -> None:
    """Wrapped text from the left margin (plus ``indent``), one cell per line."""
    usable = (width or pdf.epw - indent) - 2 * pdf.c_margin
    for line in _wrap(pdf, _latin(text), usable):
        if pdf.will_page_break(height):
            pdf.add_page()
        y = pdf.get_y()
        if line:
            pdf.text(pdf.l_margin + indent + pdf.c_margin, y + (height + pdf.font_size * 0.7) / 2, line)
        pdf.set_xy(pdf.l_margin, y + height)


def _block(pdf: FPDF, heading: str, rows: list[tuple[str, str]]) -> None:
    pdf.ln(3)
    pdf.set_font(_FONT, style="B", size=11)
    pdf.cell(0, 6, _latin(heading), border="B", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for label, value in rows:
        pdf.set_font(_FONT, style="B", size=9)
        pdf.text(pdf.l_margin + pdf.c_margin, pdf.get_y() + (5 + pdf.font_size * 0.7) / 2, _latin(label))
        pdf.set_font(_FONT, size=9)
        _lines(pdf, value, height=5, indent=55)


def _row(pdf: FPDF, cells: list[str], *, bold: bool = False, height: float = 4.5) -> None:
    """One table row: every cell wrapped to its column, the row as tall as its tallest cell."""
    pdf.set_font(_FONT, style="B" if bold else "", size=8)
    wrapped = [_wrap(pdf, _latin(c), w - 2 * pdf.c_margin) for c, w in zip(cells, _WIDTHS, strict=True)]
    tall = max(len(w) for w in wrapped) * height
    if pdf.will_page_break(tall):
        pdf.add_page()
    x, y = pdf.l_margin, pdf.get_y()
    baseline = (height + pdf.font_size * 0.7) / 2  # text() places the baseline; cell() would center
    for lines, width in zip(wrapped, _WIDTHS, strict=True):
        pdf.rect(x, y, width, tall)
        for n, line in enumerate(lines):
            if line:
                pdf.text(x + pdf.c_margin, y + n * height + baseline, line)
        x += width
    pdf.set_xy(pdf.l_margin, y + tall)


def _section(pdf: FPDF, section: ViewSection) -> None:
    pdf.ln(3)
    pdf.set_font(_FONT, style="B", size=11)
    _lines(pdf, section.title, height=6)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + pdf.epw, pdf.get_y())
    if section.subtitle:
        pdf.set_font(_FONT, style="I", size=9)
        _lines(pdf, section.subtitle, height=5)
    if section.lines:
        _row(pdf, ["Examen", "Résultat", "Unité", "Valeurs de référence", "Interprétation"], bold=True)
        for line in section.lines:
            _row(pdf, [line.name, line.value, line.unit, line.reference_range, line.interpretation])
        pdf.set_font(_FONT, style="I", size=8)
        for line in section.lines:
            for comment in line.comments:
                _lines(pdf, f"{line.name} : {comment}", height=4.5)
    pdf.set_font(_FONT, style="I", size=8)
    for note in section.notes:
        _lines(pdf, note, height=4.5)
