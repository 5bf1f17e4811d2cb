"""The report layout drawn with fpdf2: the reference of the differential test of ``render_pdf``.

``mappings.cda.report_pdf`` writes the PDF operators itself; it took over this exact layout from
fpdf2 (the code below is the renderer it replaced), and must go on drawing the same page contents.
"""

from __future__ import annotations

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import CoreFont

from mappings.cda.report_pdf import ReportView, ViewSection, _creation_date, _human, _latin

_FONT = "Helvetica"
_WIDTHS = (70, 32, 20, 40, 28)


class _Pdf(FPDF):
    def __init__(self, footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._footer_text = footer_text

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, size=8)
        self.cell(0, 5, _latin(f"{self._footer_text} - page {self.page_no()}/{{nb}}"), align="C")


def render_pdf_fpdf2(view: ReportView) -> bytes:
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


def _lines(pdf: FPDF, text: str, *, height: float, indent: float = 0) -> None:
    usable = pdf.epw - indent - 2 * pdf.c_margin
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
    pdf.set_font(_FONT, style="B" if bold else "", size=8)
    wrapped = [_wrap(pdf, _latin(c), w - 2 * pdf.c_margin) for c, w in zip(cells, _WIDTHS, strict=True)]
    tall = max(len(w) for w in wrapped) * height
    if pdf.will_page_break(tall):
        pdf.add_page()
    x, y = pdf.l_margin, pdf.get_y()
    baseline = (height + pdf.font_size * 0.7) / 2
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
