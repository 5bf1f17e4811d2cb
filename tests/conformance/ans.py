"""The official ANS validation of CI-SIS CDA documents, run from a checkout of the ANS repository.

The ANS publishes its validation material (CDA XSD, schematrons, value sets) as the
"TestContenuCDA" repository (``interop-outil-cda-testcontenucda3.0-outil-validation-documents-cda``).
Nothing of it is shipped here: this module is given the path of a checkout and runs, for one
document, what ANS's own scripts (``schematrons/moteur/compilverif.bat``) run:

1. the CDA XSD ``infrastructure/cda/CDA_extended.xsd`` (lxml);
2. the "structuration minimale" schematron ``schematrons/profils/structurationMinimale/
   ASIP-STRUCT-MIN-StrucMin.sch`` (the CI-SIS header rules);
3. the schematron of the document's volet, ``schematrons/CI-SIS_<volet>_<version>.sch``, picked
   from the document's volet templateId and its version (extension), when the checkout has one.

Schematrons are compiled to XSLT 2 with ANS's own ISO skeleton (``schematrons/moteur``:
include, abstract expansion, SVRL) and run with Saxon (``saxonche``, the Python packaging of
SaxonC-HE): that is the engine ANS uses (saxon9he), so the verdicts are theirs.

The structuration minimale schematron reads the value set JDV_J07 (XDS typeCode,
1.2.250.1.213.1.1.5.471) from ``include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml`` in the ART-DECOR
format, which the repository does not ship; :func:`artdecor_value_set` writes it from the
repository's own SVS file (``jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml``), into a temporary
work folder: the checkout is never written to.

Command line, for integrators (exit 1 when any document fails)::

    python -m tests.conformance.ans --ans-dir PATH document.xml...
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

__all__ = ["SHIPPED_VALUE_SETS", "AnsValidator", "Report", "artdecor_value_set", "value_set_facts", "volet_of"]

SVRL_NS = "http://purl.oclc.org/dsdl/svrl"
HL7_NS = "urn:hl7-org:v3"
SVS_NS = "urn:ihe:iti:svs:2008"
ENV_VAR = "ANS_TESTCONTENU_DIR"
STRUCMIN = Path("schematrons/profils/structurationMinimale")
# Value sets the structuration minimale reads from include/ but the repository lacks, with the SVS
# file of the repository they are generated from.
MISSING_VALUE_SETS = {"1.2.250.1.213.1.1.5.471": "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml"}
# Volet templateIds of ClinicalDocument (root -> volet name in the schematron file names).
# The value sets cda_validate binds in the header, as the structuration minimale does: OID -> the file of the
# checkout they are read from (mappings/cda/value_sets/<name>.json is generated from it and checked against it).
SHIPPED_VALUE_SETS = {
    "1.2.250.1.213.1.1.5.471": "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml",
    **{
        oid: f"{STRUCMIN}/include/voc-{oid}-DYNAMIC.xml"
        for oid in (
            "1.2.250.1.213.1.1.5.124",
            "1.2.250.1.213.1.1.5.461",
            "1.2.250.1.213.1.1.5.466",
            "1.2.250.1.213.1.1.5.467",
            "1.2.250.1.213.1.1.5.528",
            "1.2.250.1.213.1.1.5.588",
            "1.2.250.1.213.1.1.5.589",
            "1.2.250.1.213.1.1.5.591",
            "1.2.250.1.213.3.3.16",
        )
    },
}
VOLET_TEMPLATES = {
    "1.2.250.1.213.1.1.1.55": "BIO-CR-BIO",
}


@dataclasses.dataclass(slots=True)
class Report:
    """What the ANS validation says of one document."""

    name: str
    xsd_errors: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """schematron file name -> the text of each failed assert (role error)."""
    warnings: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """schematron file name -> the text of each failed assert of role warning (reported, not failing)."""
    schematrons: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed_asserts(self) -> int:
        return sum(len(v) for v in self.failed.values())

    @property
    def ok(self) -> bool:
        return not self.xsd_errors and self.failed_asserts == 0

    def summary(self) -> str:
        head = f"{self.name}: XSD {len(self.xsd_errors)} error(s)"
        parts = [
            f"{sch} {len(self.failed.get(sch, []))} failed, {len(self.warnings.get(sch, []))} warning(s)"
            for sch in self.schematrons
        ]
        return "; ".join([head, *parts])

    def details(self) -> str:
        lines = [self.summary(), *("  XSD: " + e for e in self.xsd_errors)]
        for sch, texts in self.failed.items():
            lines += [f"  {sch}: {' '.join(t.split())}" for t in texts]
        for sch, texts in self.warnings.items():
            lines += [f"  {sch} (warning): {' '.join(t.split())}" for t in texts]
        return "\n".join(lines)


def artdecor_value_set(svs: bytes) -> bytes:
    """An IHE SVS value set (``RetrieveValueSetResponse``) in the ART-DECOR ``valueSets`` format.

    The structuration minimale schematron reads ``/*/valueSet/conceptList/concept/@code`` and
    ``//valueSet[1]/conceptList/concept/(@code, @codeSystem)`` (no namespace on valueSet and below,
    as in the ``voc-*-DYNAMIC.xml`` files ANS ships beside it).
    """
    root = etree.fromstring(svs, etree.XMLParser(resolve_entities=False, no_network=True))
    value_set = root.find(f"{{{SVS_NS}}}ValueSet")
    if value_set is None:
        raise ValueError("not an SVS RetrieveValueSetResponse: no ValueSet")
    # ANS's files put valueSets in the hl7 namespace and undeclare it below; the schematron reads
    # ``/*/valueSet``, so a root in no namespace serves the same (lxml cannot undeclare a default).
    out = etree.Element("valueSets")
    name = value_set.get("displayName", "").removesuffix(".tabs")
    vs = etree.SubElement(
        out,
        "valueSet",
        id=value_set.get("id", ""),
        name=name,
        displayName=name,
        effectiveDate=value_set.get("effectiveDate", "")[:19],
        statusCode="final",
        versionLabel=value_set.get("dateMaj", ""),
    )
    concepts = etree.SubElement(vs, "conceptList")
    for concept in value_set.iterfind(f".//{{{SVS_NS}}}Concept"):
        etree.SubElement(
            concepts,
            "concept",
            code=concept.get("code", ""),
            codeSystem=concept.get("codeSystem", ""),
            displayName=concept.get("displayName", ""),
            level="0",
            type="L",
        )
    return etree.tostring(out, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def value_set_facts(data: bytes, source: str) -> dict[str, object]:
    """The facts of a published value set (SVS or ART-DECOR file): id, name, version, concepts.

    What ``mappings/cda/value_sets/<name>.json`` holds; ``source`` says where it was read.
    """
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    svs = root.find(f"{{{SVS_NS}}}ValueSet")
    if svs is not None:
        name = svs.get("displayName", "").removesuffix(".tabs")
        concepts = svs.iterfind(f".//{{{SVS_NS}}}Concept")
        head = {"id": svs.get("id"), "name": name, "version": svs.get("dateMaj")}
    else:
        vs = root.find("valueSet")
        if vs is None:
            raise ValueError("neither an SVS nor an ART-DECOR value set")
        concepts = vs.iterfind("conceptList/concept")
        version = vs.get("versionLabel") or vs.get("effectiveDate")
        head = {"id": vs.get("id"), "name": vs.get("name"), "version": version}
    return {
        **head,
        "source": source,
        "concepts": [
            {"code": c.get("code"), "code_system": c.get("codeSystem"), "display_name": c.get("displayName")}
            for c in concepts
        ],
    }


def export_value_sets(checkout: Path, target: Path) -> list[Path]:
    """Write the facts of :data:`SHIPPED_VALUE_SETS` from a checkout as ``<name>.json`` files."""
    import json

    written = []
    for relative in SHIPPED_VALUE_SETS.values():
        source = f"ANS TestContenuCDA repository, {relative}"
        facts = value_set_facts((checkout / relative).read_bytes(), source)
        path = target / f"{facts['name']}.json"
        path.write_text(json.dumps(facts, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written


def volet_of(document: etree._Element) -> tuple[str, str] | None:
    """(volet, version) named by the document's volet templateId, e.g. ("BIO-CR-BIO", "2024.01").

    The version is the templateId extension; "" when the document gives none.
    """
    for template in document.iterfind(f"{{{HL7_NS}}}templateId"):
        volet = VOLET_TEMPLATES.get(template.get("root", ""))
        if volet:
            return volet, template.get("extension", "")
    return None


class AnsValidator:
    """Compiles the ANS schematrons once (Saxon) and validates documents with them."""

    def __init__(self, checkout: Path, work: Path | None = None) -> None:
        from saxonche import PySaxonProcessor  # optional dependency (extra "conformance")

        self.checkout = Path(checkout)
        if not (self.checkout / STRUCMIN / "ASIP-STRUCT-MIN-StrucMin.sch").is_file():
            raise FileNotFoundError(f"{checkout} is not a checkout of the ANS TestContenuCDA repository")
        self._own_work = work is None
        self.work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="ans-conformance-"))
        self._saxon = PySaxonProcessor(license=False)
        self._xslt = self._saxon.new_xslt30_processor()
        self._xsd = etree.XMLSchema(etree.parse(str(self.checkout / "infrastructure/cda/CDA_extended.xsd")))
        self._compiled: dict[str, object] = {}
        self._prepare_value_sets()

    def close(self) -> None:
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> AnsValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ set-up

    def _prepare_value_sets(self) -> None:
        """The work folder mirrors the layout the compiled schematrons resolve ``doc()`` against."""
        include = self.work / "strucmin" / "include"
        include.mkdir(parents=True, exist_ok=True)
        for voc in (self.checkout / STRUCMIN / "include").glob("voc-*.xml"):
            target = include / voc.name
            if not target.exists():
                target.symlink_to(voc.resolve())
        for oid, svs in MISSING_VALUE_SETS.items():
            target = include / f"voc-{oid}-DYNAMIC.xml"
            if not target.exists():
                target.write_bytes(artdecor_value_set((self.checkout / svs).read_bytes()))
        # Volet schematrons read their value sets as '../jeuxDeValeurs/...' from schematrons/.
        (self.work / "volets").mkdir(exist_ok=True)
        link = self.work / "jeuxDeValeurs"
        if not link.exists():
            link.symlink_to((self.checkout / "jeuxDeValeurs").resolve())

    def _compile(self, sch: Path, where: Path) -> object:
        key = str(sch)
        if key in self._compiled:
            return self._compiled[key]
        moteur = self.checkout / "schematrons/moteur"
        text = self._transform_file(sch, moteur / "iso_dsdl_include.xsl")
        text = self._transform_text(text, moteur / "iso_abstract_expand.xsl")
        text = self._transform_text(text, moteur / "iso_svrl_for_xslt2.xsl")
        where.mkdir(parents=True, exist_ok=True)
        xsl = where / (sch.stem + ".xsl")
        xsl.write_text(text, encoding="utf-8")
        executable = self._xslt.compile_stylesheet(stylesheet_file=str(xsl))
        self._compiled[key] = executable
        return executable

    def _transform_file(self, source: Path, xsl: Path) -> str:
        executable = self._xslt.compile_stylesheet(stylesheet_file=str(xsl))
        return executable.transform_to_string(source_file=str(source))

    def _transform_text(self, text: str, xsl: Path) -> str:
        executable = self._xslt.compile_stylesheet(stylesheet_file=str(xsl))
        node = self._saxon.parse_xml(xml_text=text)
        return executable.transform_to_string(xdm_node=node)

    def schematrons_for(self, document: etree._Element) -> list[tuple[str, Path, Path]]:
        """(label, schematron, folder of its compiled XSLT) that apply to this document."""
        found = [
            ("StructurationMinimale", self.checkout / STRUCMIN / "ASIP-STRUCT-MIN-StrucMin.sch", self.work / "strucmin")
        ]
        volet = volet_of(document)
        if volet is not None:
            name, version = volet
            sch = self.checkout / "schematrons" / f"CI-SIS_{name}_{version}.sch"
            if not version:  # no version named: the newest model the checkout has
                sch = max((self.checkout / "schematrons").glob(f"CI-SIS_{name}_*.sch"), default=sch)
            if sch.is_file():
                found.append((sch.stem, sch, self.work / "volets"))
        return found

    # -------------------------------------------------------------------------------- validation

    def validate(self, xml: bytes, name: str = "document") -> Report:
        """XSD, structuration minimale and volet schematron verdicts for one document."""
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        document = etree.fromstring(xml, parser)
        report = Report(name)
        if not self._xsd.validate(etree.ElementTree(document)):
            report.xsd_errors = [f"line {e.line}: {e.message}" for e in self._xsd.error_log]
        source = self.work / "document.xml"
        source.write_bytes(xml)
        for label, sch, where in self.schematrons_for(document):
            report.schematrons.append(label)
            try:
                executable = self._compile(sch, where)
            except Exception as exc:  # saxonche raises its own PySaxonApiError
                report.failed[label] = [f"the schematron does not compile: {exc}"]
                continue
            svrl = executable.transform_to_string(source_file=str(source))  # type: ignore[attr-defined]
            failed, warnings = _failures(svrl.encode("utf-8"))
            report.failed[label] = failed
            report.warnings[label] = warnings
        return report


def _failures(svrl: bytes) -> tuple[list[str], list[str]]:
    """(failed asserts and reports of role error, those of role warning or info) of an SVRL report."""
    root = etree.fromstring(svrl, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))
    failed: list[str] = []
    warnings: list[str] = []
    for el in root.iter(f"{{{SVRL_NS}}}failed-assert", f"{{{SVRL_NS}}}successful-report"):
        role = (el.get("role") or "error").lower()
        is_report = el.tag.endswith("successful-report")
        text = f"{el.get('location', '')}: {''.join(el.itertext()).strip()}"
        if role in ("warning", "warn", "info", "information") or (is_report and role != "error"):
            warnings.append(text)
        else:
            failed.append(text)
    return failed, warnings


def _label(path: Path) -> str:
    """A golden case is named by its folder (every one holds an ``expected.xml``)."""
    return path.parent.name if path.name == "expected.xml" else path.name


def checkout_from_env() -> Path | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value) if value else None


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ans-dir", type=Path, default=checkout_from_env(), help=f"checkout (default ${ENV_VAR})")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every failed assert")
    parser.add_argument("--export-value-sets", type=Path, metavar="DIR", help="write the value sets' facts there")
    parser.add_argument("documents", nargs="*", type=Path)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.ans_dir is None:
        parser.error(f"give --ans-dir or set {ENV_VAR}")
    if args.export_value_sets is not None:
        for path in export_value_sets(args.ans_dir, args.export_value_sets):
            print(path)
        return 0
    bad = 0
    with AnsValidator(args.ans_dir) as validator:
        for path in args.documents:
            report = validator.validate(path.read_bytes(), _label(path))
            print(report.details() if args.verbose and not report.ok else report.summary())
            bad += not report.ok
    print(f"{len(args.documents) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
