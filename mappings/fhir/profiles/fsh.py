"""Maintenance tool: the FSH sources of the PDSm and IHE MHD guides → the rule data this package ships.

Run it on checkouts of the two public guides, at the versions PDSm depends on
(``ans.fhir.fr.pdsm`` declares ``ihe.iti.mhd`` in its ``sushi-config.yaml``): the PDSm guide is
the repository ``ansforge/IG-fhir-partage-de-documents-de-sante`` (not ``IG-FHIR-PDSM4DMP-EEDS``,
a guide that depends on PDSm), IHE MHD is ``IHE/ITI.MHD`` at its tag of that version. Both must be
git work trees at the commits named in the data's ``sources``: the commit is read with ``git``,
so an exported copy gives an empty one and the comparison test fails::

    python -m mappings.fhir.profiles.fsh PDSM_CHECKOUT MHD_CHECKOUT > mappings/fhir/profiles/pdsm.json

It reads every ``input/fsh/**/*.fsh`` file and keeps, for the profiles reachable
from the PDSm ITI-65 Bundle (parents, ``only`` targets, extensions), the rules
that constrain instances:

==================================  ===============================================================
``* path m..n``                     cardinality
``* path = value [(exactly)]``      fixed value (primitive) or pattern (Coding, CodeableConcept)
``* path from VS (strength)``       binding; the codes when the value set is defined in the sources
``* path only T or Reference(P)``   allowed types and profiles
``* path contains X named s m..n``  slices (extension slices resolve X to its URL)
``* path ^slicing...``              discriminators and slicing rules
``* path ^type.aggregation``        how a reference is held (``contained``)
``* path obeys key``                invariants, with their FHIRPath ``Expression`` when the guide gives one
==================================  ===============================================================

Descriptions, mappings, examples and must-support flags are left out: the data
holds facts about what an instance must be, never the guides' text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["EXTERNAL_PROFILES", "generate"]

# Profiles the two guides name but define elsewhere (FR Core 2.1.0, ANS Annuaire, FHIR R4 core): their URL and
# the resource type they constrain. The validator checks references to them by resource type only.
EXTERNAL_PROFILES = {
    "FRCorePatientProfile": ("https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient", "Patient"),
    "AsPractitionerProfile": (
        "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-practitioner",
        "Practitioner",
    ),
    "AsPractitionerRoleProfile": (
        "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-practitionerrole",
        "PractitionerRole",
    ),
    "AsOrganizationProfile": (
        "https://interop.esante.gouv.fr/ig/fhir/annuaire/StructureDefinition/as-organization",
        "Organization",
    ),
}
_R4 = "http://hl7.org/fhir/StructureDefinition/"
_ROOT = "pdsm-comprehensive-provide-document-bundle"
_ENTITY = re.compile(
    r"^(Profile|Extension|ValueSet|CodeSystem|Invariant|Alias|Instance|Mapping|RuleSet|Logical)\s*:\s*(.*)$"
)
_KEYWORD = re.compile(
    r"^(Parent|Id|Title|Description|Expression|Severity|XPath|Usage|InstanceOf|Source|Target)\s*:\s*(.*)$"
)
_CARD = re.compile(r"^(?P<path>\S+)\s+(?P<min>\d*)\.\.(?P<max>\d+|\*)?(\s+.*)?$")
_CONTAINS_ITEM = re.compile(r"^(?:(?P<type>\S+)\s+named\s+)?(?P<name>\S+)\s+(?P<min>\d+)\.\.(?P<max>\d+|\*)")


def _sushi(checkout: Path) -> dict[str, Any]:
    """id, canonical, version and dependencies of a guide, read from its sushi-config.yaml."""
    import yaml

    data = yaml.safe_load((checkout / "sushi-config.yaml").read_text(encoding="utf-8"))
    return {
        "id": data["id"],
        "canonical": data["canonical"],
        "version": str(data["version"]),
        "dependencies": {k: str(v) for k, v in (data.get("dependencies") or {}).items()},
    }


def _commit(checkout: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def _statements(text: str) -> list[str]:
    """FSH text → logical lines: comments dropped, multi-line strings skipped, continuation lines joined."""
    out: list[str] = []
    in_string = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if in_string:
            if '"""' in line or (line.count('"') - line.count('\\"')) % 2 == 1:
                in_string = False
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        stripped = re.sub(r"\s+//(?![^\"]*\"(?:[^\"]*\"[^\"]*\")*[^\"]*$).*$", "", stripped)
        key = _KEYWORD.match(stripped) or _ENTITY.match(stripped)
        if key and key.group(1) in ("Description", "Title"):
            value = key.group(2)
            if value.startswith('"""'):
                in_string = value.count('"""') == 1
            elif value.startswith('"'):
                unescaped = value.replace('\\"', "")
                in_string = unescaped.count('"') % 2 == 1
            continue
        if stripped.startswith("*") or key:
            out.append(stripped)
        elif out and out[-1].startswith("*") and raw[:1].isspace():
            out[-1] += " " + stripped  # a rule continued on the next line (contains … and …, only …)
    return out


def _value(token: str, aliases: dict[str, str], code_systems: dict[str, str]) -> Any:
    token = token.strip()
    if token.startswith('"') and token.endswith('"'):
        return token[1:-1]
    if token in ("true", "false"):
        return token == "true"
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    m = re.fullmatch(r"(?P<system>[^#\s]*)#(?P<code>\S+)(\s+\"(?P<display>[^\"]*)\")?", token)
    if m:
        system = m.group("system")
        system = aliases.get(system, code_systems.get(system, system))
        if not system:
            return m.group("code")  # a bare #code is the value of a code element
        return {"system": system, "code": m.group("code")}
    m = re.fullmatch(r"Canonical\((?P<name>[^)]+)\)", token)
    if m:
        return {"canonical": m.group("name")}
    return token


def _parse(files: list[Path], canonical: str) -> dict[str, Any]:
    """Entities of one guide: profiles, extensions, value sets, code systems, invariants, aliases."""
    aliases: dict[str, str] = {}
    entities: list[dict[str, Any]] = []
    for path in files:
        current: dict[str, Any] | None = None
        for stmt in _statements(path.read_text(encoding="utf-8")):
            ent = _ENTITY.match(stmt)
            if ent:
                kind, name = ent.group(1), ent.group(2).strip()
                if kind == "Alias":
                    alias, _, url = name.partition("=")
                    aliases[alias.strip()] = url.strip()
                    current = None
                    continue
                current = {"kind": kind, "name": name, "rules": [], "keys": {}}
                entities.append(current)
                continue
            if current is None:
                continue
            key = _KEYWORD.match(stmt)
            if key and not stmt.startswith("*"):
                current["keys"][key.group(1)] = key.group(2).strip()
            elif stmt.startswith("*"):
                current["rules"].append(stmt[1:].strip())
    code_systems: dict[str, str] = {}
    for e in entities:
        if e["kind"] == "CodeSystem":
            code_systems[e["name"]] = f"{canonical}/CodeSystem/{e['keys'].get('Id', e['name'])}"
    return {"aliases": aliases, "entities": entities, "code_systems": code_systems, "canonical": canonical}


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


_CARET = re.compile(r"^(?P<path>\S+)\s+\^(?P<prop>[\w.\[\]=+0-9]+)\s*=\s*(?P<value>.+)$")
_FROM = re.compile(r"^(?P<path>\S+)\s+from\s+(?P<vs>\S+)(\s+\((?P<strength>\w+)\))?$")
_ONLY = re.compile(r"^(?P<path>\S+)\s+only\s+(?P<types>.+)$")
_OBEYS = re.compile(r"^(?P<path>\S+)\s+obeys\s+(?P<keys>.+)$")
_CONTAINS = re.compile(r"^(?P<path>\S+)\s+contains\s+(?P<items>.+)$")
_ASSIGN = re.compile(r"^(?P<path>\S+)\s*=\s*(?P<value>.+?)(?P<exactly>\s+\(exactly\))?$")


def _caret_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path ^prop = value``: slicing discriminators and rules, reference aggregation, slice type code."""
    prop, value = m.group("prop"), m.group("value").strip()
    prop = re.sub(r"\[(0|=|\+)\]", lambda g: "[0]" if g.group(1) == "0" else f"[{g.group(1)}]", prop)
    item: dict[str, Any] = {"path": m.group("path")}
    if prop.startswith("slicing.discriminator"):
        idx = re.search(r"\[(\d+)\]", prop)
        item["discriminator"] = {
            "index": int(idx.group(1)) if idx else 0,
            prop.rsplit(".", 1)[1]: _unquote(value).lstrip("#"),
        }
    elif prop == "slicing.rules":
        item["slicing_rules"] = value.lstrip("#")
    elif prop == "type.aggregation":
        item["aggregation"] = value.lstrip("#")
    elif prop == "type.code":
        item["type_code"] = _unquote(value)
    else:
        return None  # descriptions, must-support and other properties that do not constrain instances
    return item


def _binding_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path from VS (strength)``: the value set's URL; no strength given means required (FSH)."""
    vs = m.group("vs")
    vs = guide["aliases"].get(vs, names.get(vs, vs))
    return {"path": m.group("path"), "binding": {"strength": m.group("strength") or "required", "valueSet": vs}}


def _only_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path only T or Reference(P or Q)``: the allowed types, profiles and reference targets."""
    types = []
    # Split on the "or" outside Reference(...): "Reference(A or B) or T" → [Reference(A or B), T].
    for t in re.findall(r"Reference\([^)]*\)|[^\s()]+", m.group("types")):
        ref = re.fullmatch(r"Reference\((?P<targets>.+)\)", t)
        if ref:
            targets = [_name(x.strip(), names) for x in re.split(r"\s+or\s+|\s*\|\s*", ref.group("targets"))]
            types.append({"code": "Reference", "targetProfile": targets})
        elif t != "or":
            types.append({"profile": _name(t, names)})
    return {"path": m.group("path"), "only": types}


def _obeys_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path obeys key1 and key2``: the invariant keys."""
    return {"path": m.group("path"), "obeys": re.split(r"\s+and\s+", m.group("keys").strip())}


def _contains_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path contains [X named] s m..n and …``: the slices, an extension slice with its URL."""
    slices = []
    for part in re.split(r"\s+and\s+", m.group("items").strip()):
        item_m = _CONTAINS_ITEM.match(part.strip())
        if not item_m:
            continue
        s: dict[str, Any] = {"name": item_m.group("name"), "min": int(item_m.group("min")), "max": item_m.group("max")}
        if item_m.group("type"):
            s["extension"] = names.get(item_m.group("type"), item_m.group("type"))
        slices.append(s)
    return {"path": m.group("path"), "slices": slices}


def _assign_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path = value [(exactly)]``: a fixed primitive, or a pattern for a Coding unless "exactly"."""
    value = _value(m.group("value"), guide["aliases"], guide["code_systems"])
    if isinstance(value, dict) and "canonical" in value:
        return None  # a Canonical(...) assignment names a resource, it constrains no instance value
    kind = "fixed" if m.group("exactly") or not isinstance(value, dict) else "pattern"
    return {"path": m.group("path"), kind: value}


def _card_rule(m: re.Match[str], guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """``* path m..n``: the cardinality (an open bound is 0 or *)."""
    if not (m.group("min") or m.group("max")):
        return None
    return {"path": m.group("path"), "min": int(m.group("min") or 0), "max": m.group("max") or "*"}


# Tried in this order, the first pattern that matches decides (a caret rule may contain " = ", an assignment
# " from "...); a rule no pattern matches (flags, ``->`` mappings, inserts) gives no data.
_RULE_KINDS = (
    (_CARET, _caret_rule),
    (_FROM, _binding_rule),
    (_ONLY, _only_rule),
    (_OBEYS, _obeys_rule),
    (_CONTAINS, _contains_rule),
    (_ASSIGN, _assign_rule),
    (_CARD, _card_rule),
)


def _rule(rule: str, guide: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """One FSH rule (without its leading ``*``) as rule data, or None when it does not constrain instances."""
    if rule.startswith("insert ") or "->" in rule or rule.startswith("^"):
        return None
    for pattern, build in _RULE_KINDS:
        m = pattern.match(rule)
        if m:
            return build(m, guide, names)
    return None


def _rules(entity: dict[str, Any], guide: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """The rule data of a profile or extension (see the module docstring for the rules kept)."""
    return [item for item in (_rule(rule, guide, names) for rule in entity["rules"]) if item is not None]


def _name(name: str, names: dict[str, str]) -> str:
    """A profile name → its URL; a bare FHIR type (Patient, Device, CodeableConcept) → the R4 core one."""
    if name in names:
        return names[name]
    return _R4 + name if re.fullmatch(r"[A-Za-z]+", name) else name


def _value_set_codes(entity: dict[str, Any], guide: dict[str, Any]) -> list[list[str]] | None:
    codes: list[list[str]] = []
    for rule in entity["rules"]:
        if rule.startswith("^"):
            continue
        v = _value(rule.split('"')[0].strip(), guide["aliases"], guide["code_systems"])
        if not isinstance(v, dict) or "code" not in v or "system" not in v:
            return None  # an include by filter or from another value set: codes not enumerable here
        codes.append([v["system"], v["code"]])
    return codes


_Guide = tuple[dict[str, Any], dict[str, Any], str]  # sushi-config facts, parsed FSH entities, checkout commit
_Entity = tuple[dict[str, Any], dict[str, Any]]  # a parsed entity and the guide it comes from


def _guide(checkout: Path) -> _Guide:
    """One guide's configuration, FSH entities and commit."""
    info = _sushi(checkout)
    parsed = _parse(sorted((checkout / "input" / "fsh").rglob("*.fsh")), info["canonical"])
    return info, parsed, _commit(checkout)


def _index(guides: list[_Guide]) -> tuple[dict[str, str], dict[str, _Entity]]:
    """Name (and Id) → canonical URL of every profile, extension and value set; URL → its entity."""
    names: dict[str, str] = {name: url for name, (url, _) in EXTERNAL_PROFILES.items()}
    by_url: dict[str, _Entity] = {}
    for _, parsed, _ in guides:
        for e in parsed["entities"]:
            kind = e["kind"]
            if kind not in ("Profile", "Extension", "ValueSet"):
                continue
            sd_id = e["keys"].get("Id", e["name"])
            folder = "ValueSet" if kind == "ValueSet" else "StructureDefinition"
            url = f"{parsed['canonical']}/{folder}/{sd_id}"
            names[e["name"]] = url
            names[sd_id] = url
            by_url[url] = (e, parsed)
    return names, by_url


def _invariants(guides: list[_Guide]) -> dict[str, dict[str, Any]]:
    """Every invariant of the guides by key: its severity and FHIRPath expression (None when not given)."""
    invariants: dict[str, dict[str, Any]] = {}
    for _, parsed, _ in guides:
        for e in parsed["entities"]:
            if e["kind"] == "Invariant":
                invariants[e["name"]] = {
                    "severity": e["keys"].get("Severity", "#error").lstrip("#"),
                    "expression": _unquote(e["keys"]["Expression"]) if "Expression" in e["keys"] else None,
                }
    return invariants


def _profile(entity: dict[str, Any], parsed: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A profile's or extension's data: name, kind, parent URL and rules."""
    parent = entity["keys"].get("Parent", "Extension" if entity["kind"] == "Extension" else "")
    return {
        "name": entity["name"],
        "kind": entity["kind"].lower(),
        "parent": names.get(parent, _R4 + parent),
        "rules": _rules(entity, parsed, names),
    }


def _reachable(
    names: dict[str, str], by_url: dict[str, _Entity]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[list[str]] | None]]:
    """The profiles reachable from the PDSm ITI-65 Bundle (parents, ``only`` targets, extension slices) and
    the value sets their bindings name, with their codes when the sources enumerate them."""
    profiles: dict[str, dict[str, Any]] = {}
    value_sets: dict[str, list[list[str]] | None] = {}
    todo = [names[_ROOT]]
    while todo:
        url = todo.pop()
        if url in profiles or url not in by_url:
            continue
        profile = profiles[url] = _profile(*by_url[url], names)
        todo.append(profile["parent"])
        for r in profile["rules"]:
            for t in r.get("only", []):
                todo.extend([t.get("profile", "")])
            for s in r.get("slices", []):
                if "extension" in s:
                    todo.append(s["extension"])
            vs = r.get("binding", {}).get("valueSet")
            if vs in by_url and by_url[vs][0]["kind"] == "ValueSet":
                value_sets[vs] = _value_set_codes(*by_url[vs])
    return profiles, value_sets


def _set_types(profiles: dict[str, dict[str, Any]]) -> None:
    """Give each profile the FHIR resource type it constrains (the base of its parent chain)."""
    for p in profiles.values():
        base = p["parent"]
        while base in profiles:
            base = profiles[base]["parent"]
        p["type"] = base.removeprefix(_R4)


def generate(pdsm_checkout: Path, mhd_checkout: Path) -> dict[str, Any]:
    """The rule data (see the module docstring) of the PDSm ITI-65 profiles and the MHD profiles under them."""
    guides = [_guide(checkout) for checkout in (pdsm_checkout, mhd_checkout)]
    names, by_url = _index(guides)
    invariants = _invariants(guides)
    profiles, value_sets = _reachable(names, by_url)
    _set_types(profiles)
    used = {k for p in profiles.values() for r in p["rules"] for k in r.get("obeys", [])}
    return {
        "about": "Rules of the PDSm ITI-65 profiles and of the IHE MHD profiles they derive from, extracted from "
        "the guides' FSH sources by mappings/fhir/profiles/fsh.py (facts, not the guides' text).",
        "sources": [
            {"package": info["id"], "version": info["version"], "canonical": info["canonical"], "commit": commit}
            for info, _, commit in guides
        ],
        "external_profiles": {url: rtype for url, rtype in EXTERNAL_PROFILES.values()},
        "profiles": dict(sorted(profiles.items())),
        "value_sets": dict(sorted(value_sets.items())),
        "invariants": {k: invariants[k] for k in sorted(used) if k in invariants},
    }


def main(argv: list[str]) -> None:
    pdsm, mhd = (Path(a) for a in argv[:2])
    print(json.dumps(generate(pdsm, mhd), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
