"""mappings.cda.report_pdf: the PDF copy the hub renders of a report it builds."""

from __future__ import annotations

import re

from mappings.cda.report_pdf import ReportView, ResultLine, ViewSection, render_pdf


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
