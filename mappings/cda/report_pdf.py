"""A readable PDF of a report the hub builds, for the FR-Document-PDF-copie section.

CI-SIS CR-BIO 2024.01 requires every report to carry a PDF copy
(``CI-SIS_BIO-CR-BIO_2024.01.sch``: section 1.2.250.1.213.1.1.2.243 "doit être présente").
When the laboratory sends its own PDF in the ORU, that one is used; otherwise the mapping
describes the report as a :class:`ReportView` (patient and identity traits, prescriber,
laboratory, each result with value, unit, reference range, abnormal flag and comments, the
validating biologist) and :func:`render_pdf` lays it out.

The layout is fixed (A4, the PDF core fonts Helvetica regular, bold and oblique, text lines,
table borders and rules), so :class:`_Writer` writes the PDF operators itself: fpdf2, which
this module used before, spent ~1.5 to 5 ms a report in its general machinery (text fragments,
graphics-state stack, object model). The writer produces the bytes fpdf2 2.8 produced for this
layout (same operators, number formatting, object order, file identifier); the differential test
against fpdf2 compares the pages as a PDF reader reads them. Only the core fonts' character
widths (Adobe's AFM metrics) are still read from fpdf2.

The output is deterministic (fixed creation date: the document's own time; the file identifier
is a digest of the file), so a replayed message yields the same document bytes. Text goes
through the PDF core fonts (Latin-1): characters outside it are written as their closest ASCII form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from binascii import hexlify
from codecs import BOM_UTF16_BE
from datetime import UTC, datetime

from fpdf.fonts import CORE_FONTS, CORE_FONTS_CHARWIDTHS

__all__ = ["ReportView", "ResultLine", "ViewSection", "render_pdf"]

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


# What the PDF core fonts take is Latin-1 (written as Latin-1 bytes, as fpdf2 did): these have no decomposition to it.
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


# Page geometry in mm, as fpdf2 computes it for A4 in mm (the same float operations, so the same
# figures once formatted with two decimals): 1 cm margins, 1 mm cell padding, 15 mm bottom margin.
_K = 72 / 25.4  # points per mm
_W_PT, _H_PT = 595.28, 841.89
_W, _H = _W_PT / _K, _H_PT / _K
_MARGIN = (7200 / 254) / _K
_C_MARGIN = _MARGIN / 10.0
_EPW = _W - _MARGIN - _MARGIN
_BREAK_AT = _H - 15
_PAGE_START = f"2 J\n{0.567 / _K * _K:.2f} w\n"  # square line caps, 0.2 mm lines
_STYLE_FONTS = {"": "helvetica", "B": "helveticaB", "I": "helveticaI"}
_WIDTHS_BY_STYLE: dict[str, dict[str, int]] = {s: CORE_FONTS_CHARWIDTHS[k] for s, k in _STYLE_FONTS.items()}
_NB = "{nb}"  # the total page count, filled in at the end (fpdf2's alias_nb_pages)
_NB_WIDTH = "000"  # the width fpdf2 reserves for it


def _escape(text: str) -> str:
    """A PDF literal string's content (PDF 1.7 section 7.3.4.2): backslash, parentheses and CR escaped."""
    return text.replace("\\", "\\\\").replace(")", "\\)").replace("(", "\\(").replace("\r", "\\r")


def _info_string(text: str) -> str:
    """A document information string: literal when ASCII, else UTF-16BE with its BOM in hex (PDF 1.7 7.9.2.2)."""
    if text.isascii():
        return f"({_escape(text)})"
    return f"<{hexlify(BOM_UTF16_BE + text.encode('utf-16-be')).decode('latin-1')}>"


class _Writer:
    """The content streams of the report's pages and the file around them.

    It keeps what fpdf2 kept for this layout: the current position, the current font (selected
    lazily: a page's content names a font only before the first text drawn with it), which
    fonts each page uses, and the footer drawn when a page ends.
    """

    __slots__ = ("_footer_text", "_nb_at", "_on_page", "_page_fonts", "_pages", "fonts", "in_footer", "size",
                 "style", "y")  # fmt: skip

    def __init__(self, footer_text: str) -> None:
        self._footer_text = footer_text
        self._pages: list[list[str]] = []
        self._page_fonts: list[set[int]] = []
        self._nb_at: list[tuple[int, int]] = []  # (page, line) of the lines that show the page count
        self.fonts: dict[str, int] = {}  # style -> font number (F1, F2...), in order of first use
        self.style: str | None = None  # None: no font chosen yet
        self.size = 12.0  # points
        self._on_page = False  # the current font already set in this page's content
        self.in_footer = False
        self.y = _MARGIN

    @property
    def font_size(self) -> float:
        """The current font size in mm."""
        return self.size / _K

    @property
    def widths(self) -> dict[str, int]:
        """The current font's character widths (per mille of its size)."""
        return _WIDTHS_BY_STYLE[self.style or ""]

    def set_font(self, style: str, size: float) -> None:
        if style == self.style and size == self.size:
            return
        if style not in self.fonts:
            self.fonts[style] = len(self.fonts) + 1
        self.style, self.size, self._on_page = style, size, False

    def _font_line(self) -> None:
        if not self._on_page:
            number = self.fonts[self.style or ""]
            self._pages[-1].append(f"BT /F{number} {self.size:.2f} Tf ET")
            self._page_fonts[-1].add(number)
            self._on_page = True

    def will_page_break(self, height: float) -> bool:
        return self.y + height > _BREAK_AT and not self.in_footer

    def add_page(self) -> None:
        self._on_page = False
        style, size = self.style, self.size
        if self._pages:
            self._footer()
        self._pages.append([])
        self._page_fonts.append(set())
        self.y = _MARGIN
        if style is not None:  # the font before the footer carries over to the new page
            self.style, self.size, self._on_page = style, size, False

    def _footer(self) -> None:
        self.in_footer = True
        self.y = _H - 12
        self.set_font("", 8)
        self.cell(0, 5, _latin(f"{self._footer_text} - page {len(self._pages)}/{_NB}"), center=True)
        self.in_footer = False

    def text(self, x: float, y: float, text: str) -> None:
        """``text`` with its baseline's left end at (x, y) mm from the top left corner."""
        self._font_line()
        self._pages[-1].append(f"BT {x * _K:.2f} {(_H - y) * _K:.2f} Td ({_escape(text)}) Tj ET")

    def line(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self._pages[-1].append(f"{x1 * _K:.2f} {(_H - y1) * _K:.2f} m {x2 * _K:.2f} {(_H - y2) * _K:.2f} l S")

    def rect(self, x: float, y: float, w: float, h: float) -> None:
        self._pages[-1].append(f"{x * _K:.2f} {(_H - y) * _K:.2f} {w * _K:.2f} {-h * _K:.2f} re S")

    def _text_width(self, text: str) -> float:
        widths = self.widths
        return sum(widths[char] for char in text) * self.size * 0.001 / _K

    def cell(self, w: float, h: float, text: str, *, bottom_border: bool = False, center: bool = False) -> None:
        """One line of text in a box of ``w`` (0: to the right margin) by ``h`` mm at the left margin.

        Left-aligned (or centred) with the cell padding, the baseline at mid-height less 0.3 of the
        font size, as fpdf2's cell(); ``{nb}`` in the text shows the page count. Goes on to the next line.
        """
        if self.will_page_break(h):
            self.add_page()
        x = _MARGIN
        if w == 0:
            w = _W - _MARGIN - x
        parts: list[str] = []
        if bottom_border:
            bottom = (_H - (self.y + h)) * _K
            parts.append(f"{x * _K:.2f} {bottom:.2f} m {(x + w) * _K:.2f} {bottom:.2f} l S")
        pieces = text.split(_NB)
        if text:
            if center:
                width = 0.0
                for n, piece in enumerate(pieces):
                    if n:
                        width += self._text_width(_NB_WIDTH)
                    if piece:
                        width += self._text_width(piece)
                dx = (w - width) / 2
            else:
                dx = _C_MARGIN
            self._font_line()
            parts.append(f"BT {(x + dx) * _K:.2f} {(_H - self.y - 0.5 * h - 0.3 * self.font_size) * _K:.2f} Td")
            for n, piece in enumerate(pieces):
                if n:
                    parts.append(_NB)
                    self._nb_at.append((len(self._pages) - 1, len(self._pages[-1])))
                if piece:
                    parts.append(f"({_escape(piece)}) Tj")
            parts.append("ET")
        self._pages[-1].append(" ".join(parts))
        self.y += h

    def output(self, title: str, created: datetime) -> bytes:
        """The whole file: the last page's footer, then pages, fonts, resources, information, xref."""
        self._footer()
        count = len(self._pages)
        for page, line in self._nb_at:
            self._pages[page][line] = self._pages[page][line].replace(_NB, f"({count}) Tj")
        chunks: list[bytes] = [b"%PDF-1.3\n%\xe9\xeb\xf1\xbf\n"]
        offsets: list[int] = []
        size = len(chunks[0])

        def obj(text: str | bytes) -> None:
            nonlocal size
            data = text.encode("latin-1") if isinstance(text, str) else text
            offsets.append(size)
            chunk = b"%d 0 obj\n%s\nendobj\n" % (len(offsets), data)
            chunks.append(chunk)
            size += len(chunk)

        page_ids = [3 + 2 * n for n in range(count)]
        font_first = 3 + 2 * count
        resources_first = font_first + len(self.fonts)
        kids = "\n".join(f"{n} 0 R" for n in page_ids)
        obj(f"<<\n/Count {count}\n/Kids [{kids}]\n/MediaBox [0 0 {_W_PT:.2f} {_H_PT:.2f}]\n/Type /Pages\n>>")
        obj("<<\n/OpenAction [3 0 R /FitH null]\n/PageLayout /OneColumn\n/Pages 1 0 R\n/Type /Catalog\n>>")
        for n, lines in enumerate(self._pages):
            refs = f"/Contents {page_ids[n] + 1} 0 R\n/Parent 1 0 R\n/Resources {resources_first + n} 0 R"
            obj(f"<<\n{refs}\n/Type /Page\n>>")
            content = (_PAGE_START + "".join(f"{line}\n" for line in lines)).encode("latin-1")
            obj(b"<<\n/Length %d\n>>\nstream\n%s\nendstream" % (len(content), content))
        for style in self.fonts:
            name = CORE_FONTS[_STYLE_FONTS[style]]
            obj(f"<<\n/BaseFont /{name}\n/Encoding /WinAnsiEncoding\n/Subtype /Type1\n/Type /Font\n>>")
        for used in self._page_fonts:
            fonts = "\n".join(f"/F{i} {font_first + i - 1} 0 R" for i in sorted(used))
            obj(f"<<\n/Font <<{fonts}>>\n/ProcSet [/PDF /Text /ImageB /ImageC /ImageI]\n>>")
        obj(f"<<\n/CreationDate (D:{created:%Y%m%d%H%M%S}Z)\n/Creator (interop-hub)\n/Title {_info_string(title)}\n>>")
        body = b"".join(chunks)
        digest = hashlib.md5(body, usedforsecurity=False)  # the file identifier, not a security feature
        digest.update(f"{created:%Y%m%d%H%M%S}".encode())
        file_id = digest.hexdigest().upper()
        xref = "".join(f"{offset:010} 00000 n \n" for offset in offsets)
        tail = (
            f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f \n{xref}trailer\n<<\n/Size {len(offsets) + 1}\n"
            f"/Root 2 0 R\n/Info {len(offsets)} 0 R\n/ID [<{file_id}><{file_id}>]\n>>\nstartxref\n{size}\n%%EOF\n"
        )
        return body + tail.encode("latin-1")


def render_pdf(view: ReportView) -> bytes:
    """The report as a PDF (A4, one results table per section)."""
    pdf = _Writer(f"{view.title} du {_human(view.time)}")
    pdf.add_page()
    pdf.set_font("B", 15)
    _lines(pdf, view.title, height=8)
    pdf.set_font("", 9)
    pdf.cell(0, 5, _latin(f"Date du compte rendu : {_human(view.time)}"))
    if view.status:
        pdf.cell(0, 5, _latin(view.status))
    _block(pdf, "Patient", view.patient)
    _block(pdf, "Intervenants", view.parties)
    for section in view.sections:
        _section(pdf, section)
    return pdf.output(_latin(view.title), _creation_date(view.time))


def _width(pdf: _Writer, text: str) -> float:
    """Width in mm of ``text`` in the current core font (its AFM widths, per mille of the font size)."""
    widths = pdf.widths
    return sum(widths.get(char, 500) for char in text) * pdf.font_size / 1000


def _wrap(pdf: _Writer, text: str, width: float) -> list[str]:
    """``text`` cut at spaces into lines no wider than ``width`` mm (a word wider than it is cut)."""
    widths, size = pdf.widths, pdf.font_size
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


def _lines(pdf: _Writer, text: str, *, height: float, indent: float = 0, width: float | None = None) -> None:
    """Wrapped text from the left margin (plus ``indent``), one line of ``height`` mm each."""
    usable = (width or _EPW - indent) - 2 * _C_MARGIN
    for line in _wrap(pdf, _latin(text), usable):
        if pdf.will_page_break(height):
            pdf.add_page()
        y = pdf.y
        if line:
            pdf.text(_MARGIN + indent + _C_MARGIN, y + (height + pdf.font_size * 0.7) / 2, line)
        pdf.y = y + height


def _block(pdf: _Writer, heading: str, rows: list[tuple[str, str]]) -> None:
    pdf.y += 3
    pdf.set_font("B", 11)
    pdf.cell(0, 6, _latin(heading), bottom_border=True)
    for label, value in rows:
        pdf.set_font("B", 9)
        pdf.text(_MARGIN + _C_MARGIN, pdf.y + (5 + pdf.font_size * 0.7) / 2, _latin(label))
        pdf.set_font("", 9)
        _lines(pdf, value, height=5, indent=55)


def _row(pdf: _Writer, cells: list[str], *, bold: bool = False, height: float = 4.5) -> None:
    """One table row: every cell wrapped to its column, the row as tall as its tallest cell."""
    pdf.set_font("B" if bold else "", 8)
    wrapped = [_wrap(pdf, _latin(c), w - 2 * _C_MARGIN) for c, w in zip(cells, _WIDTHS, strict=True)]
    tall = max(len(w) for w in wrapped) * height
    if pdf.will_page_break(tall):
        pdf.add_page()
    x, y = _MARGIN, pdf.y
    baseline = (height + pdf.font_size * 0.7) / 2  # the baseline's place in a line of the cell
    for lines, width in zip(wrapped, _WIDTHS, strict=True):
        pdf.rect(x, y, width, tall)
        for n, line in enumerate(lines):
            if line:
                pdf.text(x + _C_MARGIN, y + n * height + baseline, line)
        x += width
    pdf.y = y + tall


def _section(pdf: _Writer, section: ViewSection) -> None:
    pdf.y += 3
    pdf.set_font("B", 11)
    _lines(pdf, section.title, height=6)
    pdf.line(_MARGIN, pdf.y, _MARGIN + _EPW, pdf.y)
    if section.subtitle:
        pdf.set_font("I", 9)
        _lines(pdf, section.subtitle, height=5)
    if section.lines:
        _row(pdf, ["Examen", "Résultat", "Unité", "Valeurs de référence", "Interprétation"], bold=True)
        for line in section.lines:
            _row(pdf, [line.name, line.value, line.unit, line.reference_range, line.interpretation])
        pdf.set_font("I", 8)
        for line in section.lines:
            for comment in line.comments:
                _lines(pdf, f"{line.name} : {comment}", height=4.5)
    pdf.set_font("I", 8)
    for note in section.notes:
        _lines(pdf, note, height=4.5)
