"""mappings.cda.report_pdf: the PDF copy the hub renders of a report it builds."""

from __future__ import annotations

import io
import random
import re

import pypdf

from mappings.cda.report_pdf import ReportView, ResultLine, ViewSection, render_pdf
from tests.unit.report_pdf_fpdf2 import render_pdf_fpdf2


def shown(pdf: bytes) -> str:
    """Every string the (uncompressed) PDF draws, in order."""
    return " ".join(t.decode("latin-1") for t in re.findall(rb"\((.*?)(?<!\\)\) ?Tj", pdf))


def view(lines: int, name: str = "Glucose", comments: tuple[str, ...] = ("contrôle",)) -> ReportView:
    section = ViewSection(
        "Biochimie",
        [ResultLine(f"{name} {i}", "1.02", "g/L", "0.70-1.10", "Normal", comments) for i in range(lines)],
        notes=["Prélèvement : Sérum"],
    )
    return ReportView("Compte rendu d'examens biologiques", "20250314100000+0100", [("Nom", "TEST")],
                      [("Biologiste validant", "PAUL TEST")], [section])  # fmt: skip


def test_a_long_report_goes_on_over_pages_and_keeps_every_row() -> None:
    pdf = render_pdf(view(120))
    text = shown(pdf)
    pages = int(re.search(r"page 1/ ?(\d+)", text)[1])  # type: ignore[index]
    assert pages >= 3 and text.count("page ") == pages
    assert all(f"Glucose {i}" in text for i in range(120))
    assert text.count("Glucose 7 : contrôle") == 1 and "Prélèvement : Sérum" in text


def test_long_words_and_characters_outside_the_core_fonts_are_shown() -> None:
    long_name = "Immunoglobuline" * 8  # wider than its column: cut over several lines, never lost
    text = shown(render_pdf(view(1, name="Œstradiol Łódź " + long_name, comments=())))
    assert "OEstradiol Lódz" in text  # Œ and Ł as the closest letters the core fonts have, ó as is
    assert long_name not in text and long_name in text.replace(" ", "")


def test_the_same_report_gives_the_same_bytes() -> None:
    assert render_pdf(view(3)) == render_pdf(view(3))
    assert render_pdf(view(3)) != render_pdf(view(4))


_WORDS = ("Glucose", "(urgent)", "a\\b", "é", "Œstradiol", "Łódź", "x" * 60, "", "{nb}", "Immunoglobuline" * 8,
          "µmol/L", "≥ 5", "1.02", "g/L", "\r", "contrôle", "Prélèvement : Sérum", "WWWWWWWW")  # fmt: skip


def random_view(rng: random.Random) -> ReportView:
    """A report of random shape: parentheses, backslashes, long words, line breaks, empty cells, many pages."""

    def text(words: int) -> str:
        joined = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, words)))
        return joined + ("\n" + text(3) if rng.random() < 0.1 else "")

    def line() -> ResultLine:
        comments = tuple(text(12) for _ in range(rng.randint(0, 2)))
        return ResultLine(text(5) or "x", text(2), text(1), text(2), text(1), comments)

    sections = [
        ViewSection(
            text(20) or "Biochimie",
            [line() for _ in range(rng.randint(0, 40))],
            [text(12) for _ in range(rng.randint(0, 3))],
            text(2) if rng.random() < 0.5 else "",
        )
        for _ in range(rng.randint(0, 4))
    ]
    return ReportView(
        rng.choice(["Compte rendu d'examens biologiques", "Résultats (urgents)", "CR " + text(30)]),
        rng.choice(["20250314100000+0100", "2025", "invalid", "202503141000"]),
        [(text(2), text(30)) for _ in range(rng.randint(0, 8))],
        [(text(2), text(30)) for _ in range(rng.randint(0, 8))],
        sections,
        rng.choice(["", "Définitif", "{nb} pages"]),
    )


def drawn(pdf: bytes) -> tuple[object, ...]:
    """What a reader takes from the file (pypdf, strict): each page's content and fonts, and the title."""
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    pages = []
    for page in reader.pages:
        fonts = page["/Resources"]["/Font"]
        pages.append((page.get_contents().get_data(), {k: fonts[k]["/BaseFont"] for k in fonts}, page.mediabox))  # type: ignore[union-attr]
    return tuple(pages), reader.metadata.title if reader.metadata else None


def test_the_pages_are_drawn_as_fpdf2_drew_them() -> None:
    """Differential test: the hub's writer against the fpdf2 renderer it replaced, read back by pypdf."""
    rng = random.Random(20261202)
    for _ in range(25):
        report = random_view(rng)
        ours, reference = render_pdf(report), render_pdf_fpdf2(report)
        assert drawn(ours) == drawn(reference)


def test_a_pdf_reader_opens_the_copy_and_finds_its_text() -> None:
    pdf = render_pdf(view(120))
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    assert len(reader.pages) >= 3 and reader.metadata is not None
    assert reader.metadata.title == "Compte rendu d'examens biologiques" and reader.metadata.creator == "interop-hub"
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert "Glucose 119" in text and "Prélèvement : Sérum" in text and f"page 1/{len(reader.pages)}" in text
    assert pdf.endswith(b"%%EOF\n") and reader.xref_objStm == {}  # a plain cross-reference table
