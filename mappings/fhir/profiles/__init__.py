"""PDSm / IHE MHD profile rules shipped as data, and a validator that checks FHIR resources against them.

``pdsm.json`` holds the rules of the PDSm ITI-65 profiles (ANS ``ans.fhir.fr.pdsm``) and of the
IHE MHD profiles they derive from (``ihe.iti.mhd``, the version PDSm declares), extracted from
the guides' FSH sources by :mod:`mappings.fhir.profiles.fsh` (the sources' versions and commits
are in the file). Regenerate it from newer checkouts with::

    python -m mappings.fhir.profiles.fsh PDSM_CHECKOUT MHD_CHECKOUT > mappings/fhir/profiles/pdsm.json

:func:`validate` checks one resource against a profile and every profile it derives from, as the
profile's snapshot would: cardinality, fixed and pattern values, required bindings whose codes the
guides enumerate, allowed types and reference targets (by resource type), contained references,
slices (extension URL, value and profile discriminators; closed slicing), and FHIRPath invariants
(fhirpathpy). What it does not check: the base FHIR R4 structure (fhir.resources does that,
`mappings.fhir.validate`), invariants the guides publish without an expression, and the FR Core /
Annuaire profiles beyond the referenced resource's type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from importlib import resources
from typing import Any

import fhirpathpy

__all__ = [
    "PDSM_BUNDLE",
    "PDSM_DOCUMENT_REFERENCE",
    "PDSM_SUBMISSION_SET",
    "ProfileIssue",
    "rules",
    "validate",
    "validate_bundle",
]

_PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
PDSM_BUNDLE = _PDSM + "pdsm-comprehensive-provide-document-bundle"
PDSM_DOCUMENT_REFERENCE = _PDSM + "pdsm-comprehensive-document-reference"
PDSM_SUBMISSION_SET = _PDSM + "pdsm-submissionset-comprehensive"
_R4 = "http://hl7.org/fhir/StructureDefinition/"
_SEGMENT = re.compile(r"^(?P<name>[^\[]+)(\[(?P<slice>[^\]]+)\])?$")
_ProfileChain = list[tuple[str, dict[str, Any]]]  # a profile and its ancestors, most general first


@dataclasses.dataclass(frozen=True, slots=True)
class ProfileIssue:
    """One rule an instance breaks: where (a FHIRPath-like location), which profile, and what."""

    location: str
    profile: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message} ({self.profile.rsplit('/', 1)[-1]})"


@functools.cache
def rules() -> dict[str, Any]:
    """The shipped rule data (see the module docstring)."""
    data: dict[str, Any] = json.loads(resources.files(__package__).joinpath("pdsm.json").read_text(encoding="utf-8"))
    return data


def _chain(profile: str) -> list[tuple[str, dict[str, Any]]]:
    """The profile and its ancestors known to the data, most general first."""
    data = rules()["profiles"]
    out = []
    while profile in data:
        out.append((profile, data[profile]))
        profile = data[profile]["parent"]
    return out[::-1]


def _profile_type(profile: str) -> str | None:
    data = rules()
    if profile in data["profiles"]:
        return str(data["profiles"][profile]["type"])
    if profile in data["external_profiles"]:
        return str(data["external_profiles"][profile])
    if profile.startswith(_R4):
        return profile.removeprefix(_R4)
    return None


def _children(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name[:-3]
        values = [v for k, v in node.items() if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()]
    else:
        values = [node[name]] if name in node else []
    out: list[Any] = []
    for v in values:
        out.extend(v if isinstance(v, list) else [v])
    return out


class _Checker:
    """Validation of one resource (and what it holds) against one profile chain."""

    def __init__(self, issues: list[ProfileIssue], bundle: dict[str, Any] | None) -> None:
        self.issues = issues
        self.bundle = bundle

    def issue(self, location: str, profile: str, message: str) -> None:
        self.issues.append(ProfileIssue(location, profile, message))

    # -- slices
    def _slice_rules(
        self, chain: list[tuple[str, dict[str, Any]]], path: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        discriminators: dict[int, dict[str, str]] = {}
        slicing: dict[str, Any] = {"rules": "open"}
        slices: list[dict[str, Any]] = []
        for _, p in chain:
            for r in p["rules"]:
                if r["path"] != path:
                    continue
                if "discriminator" in r:
                    d = dict(r["discriminator"])
                    discriminators.setdefault(d.pop("index"), {}).update(d)
                if "slicing_rules" in r:
                    slicing["rules"] = r["slicing_rules"]
                if "slices" in r:
                    slices.extend(r["slices"])
        slicing["discriminator"] = [discriminators[i] for i in sorted(discriminators)]
        return slices, slicing

    def _slice_value(self, chain: list[tuple[str, dict[str, Any]]], slice_path: str, sub: str) -> Any:
        """The fixed value a slice gives at ``sub`` (directly, or through the profile it is constrained to)."""
        target = f"{slice_path}.{sub}"
        for _, p in chain:
            for r in p["rules"]:
                if r["path"] == target and ("fixed" in r or "pattern" in r):
                    return r.get("fixed", r.get("pattern"))
        for _, p in chain:
            for r in p["rules"]:
                if r["path"] == slice_path and "only" in r:
                    for t in r["only"]:
                        for _, q in _chain(t.get("profile", "")):
                            for rr in q["rules"]:
                                if rr["path"] == sub and ("fixed" in rr or "pattern" in rr):
                                    return rr.get("fixed", rr.get("pattern"))
        return None

    def in_slice(self, chain: list[tuple[str, dict[str, Any]]], path: str, name: str, item: Any) -> bool:
        slices, slicing = self._slice_rules(chain, path)
        spec = next((s for s in slices if s["name"] == name), None)
        if spec is None:
            return False
        if "extension" in spec or path.endswith("extension"):
            return isinstance(item, dict) and item.get("url") == spec.get("extension")
        slice_path = f"{path}[{name}]"
        for d in slicing["discriminator"]:
            if d.get("type") == "profile":
                profiles = [
                    t.get("profile", "")
                    for _, p in chain
                    for r in p["rules"]
                    if r["path"] == f"{slice_path}.{d['path']}"
                    for t in r.get("only", [])
                ]
                type_codes = [
                    r["type_code"]
                    for _, p in chain
                    for r in p["rules"]
                    if r["path"] == f"{slice_path}.{d['path']}" and "type_code" in r
                ]
                target = _children(item, d["path"])
                if not target:
                    return False
                # A resource that claims the slice's profile belongs to the slice (so that its faults are
                # reported against that profile); otherwise it must conform to it.
                claimed = profiles and profiles[-1] in (target[0].get("meta", {}).get("profile") or [])
                if profiles and not claimed and not self.conforms(target[0], profiles[-1]):
                    return False
                if type_codes and target[0].get("resourceType") != type_codes[-1]:
                    return False
            else:
                want = self._slice_value(chain, slice_path, d["path"])
                if want is None:
                    continue
                got = self._at(item, d["path"])
                if not any(_matches(g, want) for g in got):
                    return False
        return True

    def conforms(self, resource: Any, profile: str) -> bool:
        rtype = _profile_type(profile)
        if not isinstance(resource, dict) or (rtype and resource.get("resourceType") != rtype):
            return False
        probe: list[ProfileIssue] = []
        _Checker(probe, self.bundle).check(resource, profile, "")
        return not probe

    def _at(self, node: Any, path: str) -> list[Any]:
        nodes = [node]
        for seg in path.split("."):
            nodes = [c for n in nodes for c in _children(n, seg)]
        return nodes

    def select(self, chain: list[tuple[str, dict[str, Any]]], node: Any, path: str) -> list[tuple[str, Any]]:
        """Values at a rule path (slices resolved), each with its location."""
        current: list[tuple[str, Any]] = [("", node)]
        prefix = ""
        for seg in path.split("."):
            m = _SEGMENT.match(seg)
            assert m is not None
            name, slice_name = m.group("name"), m.group("slice")
            element = f"{prefix}.{name}" if prefix else name
            nxt: list[tuple[str, Any]] = []
            for loc, n in current:
                values = _children(n, name)
                for i, v in enumerate(values):
                    if slice_name and not self.in_slice(chain, element, slice_name, v):
                        continue
                    nxt.append((f"{loc}.{name}[{i}]", v))
            current = nxt
            prefix = f"{element}[{slice_name}]" if slice_name else element
        return current

    # -- rules
    def check(self, resource: dict[str, Any], profile: str, where: str) -> None:
        chain = _chain(profile)
        if not chain:
            rtype = _profile_type(profile)
            if rtype and resource.get("resourceType") != rtype:
                self.issue(where or resource.get("resourceType", "?"), profile, f"must be a {rtype}")
            return
        root = where or str(resource.get("resourceType", ""))
        for url, p in chain:
            for r in p["rules"]:
                self.rule(chain, url, resource, r, root)

    def rule(self, chain: _ProfileChain, url: str, resource: Any, r: dict[str, Any], root: str) -> None:
        """Check one rule of profile ``url`` on ``resource``; ``root`` prefixes the locations reported."""
        if "min" in r:
            self._cardinality(chain, url, resource, r, root)
            return
        values = self.select(chain, resource, r["path"])
        if "fixed" in r or "pattern" in r:
            self._fixed(url, values, r.get("fixed", r.get("pattern")), root)
        elif "binding" in r:
            self._binding(url, values, r["binding"], root)
        elif "only" in r:
            for loc, v in values:
                self.only(r["only"], v, f"{root}{loc}", url, resource)
        elif "aggregation" in r and r["aggregation"] == "contained":
            self._contained_references(url, values, resource, root)
        elif "obeys" in r:
            self._invariants(url, values, r["obeys"], resource, root)
        elif "slices" in r:
            self._slices(chain, url, resource, r, root)

    def _parents(self, chain: _ProfileChain, resource: Any, parent_path: str) -> list[tuple[str, Any]]:
        """The elements that hold the element a rule constrains (the resource itself at the top)."""
        return self.select(chain, resource, parent_path) if parent_path else [("", resource)]

    def _cardinality(self, chain: _ProfileChain, url: str, resource: Any, r: dict[str, Any], root: str) -> None:
        """``min``/``max`` of an element (or of one slice of it) in each element that holds it."""
        parent_path, _, last = r["path"].rpartition(".")
        name, _, slice_name = last.partition("[")
        base = f"{parent_path}.{name}" if parent_path else name
        high = None if r["max"] == "*" else int(r["max"])
        for loc, parent in self._parents(chain, resource, parent_path):
            items = _children(parent, name)
            if slice_name:
                items = [v for v in items if self.in_slice(chain, base, slice_name[:-1], v)]
            if len(items) < r["min"] or (high is not None and len(items) > high):
                self.issue(f"{root}{loc}.{last}", url, f"{r['min']}..{r['max']} expected, found {len(items)}")

    def _fixed(self, url: str, values: list[tuple[str, Any]], want: Any, root: str) -> None:
        """A fixed or pattern value (pattern semantics, `_matches`)."""
        for loc, v in values:
            if not _matches(v, want):
                self.issue(f"{root}{loc}", url, f"must be {json.dumps(want, ensure_ascii=False)}")

    def _binding(self, url: str, values: list[tuple[str, Any]], binding: dict[str, Any], root: str) -> None:
        """A required binding whose codes the guides enumerate (other bindings are not checked)."""
        codes = rules()["value_sets"].get(binding["valueSet"])
        if binding["strength"] != "required" or not codes:
            return
        allowed = {(s, c) for s, c in codes}
        allowed_codes = {c for _, c in codes}
        for loc, v in values:
            if not _in_value_set(v, allowed, allowed_codes):
                self.issue(f"{root}{loc}", url, f"code not in {binding['valueSet'].rsplit('/', 1)[-1]}")

    def _contained_references(self, url: str, values: list[tuple[str, Any]], resource: Any, root: str) -> None:
        """Aggregation ``contained``: each reference points at a resource contained in ``resource``."""
        for loc, v in values:
            ref = v.get("reference", "") if isinstance(v, dict) else ""
            if not ref.startswith("#") or _contained(resource, ref) is None:
                self.issue(f"{root}{loc}", url, "must reference a contained resource (#id)")

    def _invariants(self, url: str, values: list[tuple[str, Any]], keys: list[str], resource: Any, root: str) -> None:
        """The error-severity invariants that have a FHIRPath expression, evaluated on each value."""
        for key in keys:
            inv = rules()["invariants"].get(key)
            if not inv or not inv.get("expression") or inv.get("severity") != "error":
                continue
            for loc, v in values:
                try:
                    ok = fhirpathpy.evaluate(v, inv["expression"], {"resource": resource})
                except Exception:  # an expression the engine cannot evaluate counts as broken
                    ok = [False]
                if ok != [True]:
                    self.issue(f"{root}{loc}", url, f"invariant {key} fails: {inv['expression']}")

    def _slices(self, chain: _ProfileChain, url: str, resource: Any, r: dict[str, Any], root: str) -> None:
        """Each slice's cardinality, and with closed slicing, no item outside every slice."""
        base = r["path"]
        _, slicing = self._slice_rules(chain, base)
        parent_path, _, last = base.rpartition(".")
        for loc, parent in self._parents(chain, resource, parent_path):
            items = _children(parent, last.split("[")[0])
            for s in r["slices"]:
                members = [i for i in items if self.in_slice(chain, base, s["name"], i)]
                high = None if s["max"] == "*" else int(s["max"])
                if len(members) < s["min"] or (high is not None and len(members) > high):
                    self.issue(
                        f"{root}{loc}.{last}:{s['name']}",
                        url,
                        f"{s['min']}..{s['max']} expected, found {len(members)}",
                    )
            if slicing["rules"] == "closed":
                all_slices, _ = self._slice_rules(chain, base)
                for i, item in enumerate(items):
                    if not any(self.in_slice(chain, base, s["name"], item) for s in all_slices):
                        self.issue(f"{root}{loc}.{last}[{i}]", url, "matches no slice of a closed slicing")

    def only(self, allowed: list[dict[str, Any]], value: Any, loc: str, url: str, resource: Any) -> None:
        profiles = [t["profile"] for t in allowed if "profile" in t]
        targets = [p for t in allowed if t.get("code") == "Reference" for p in t["targetProfile"]]
        if targets and isinstance(value, dict) and "reference" in value:
            found = self.resolve(value["reference"], resource)
            if found is not None:
                types = {_profile_type(t) for t in targets}
                if found.get("resourceType") not in types:
                    self.issue(loc, url, f"reference target must be one of {sorted(t for t in types if t)}")
        if profiles and isinstance(value, dict):
            known = [p for p in profiles if _chain(p)]
            if len(known) == 1 and len(profiles) == 1:
                self.check(value, known[0], loc)
            elif known and not any(self.conforms(value, p) for p in known):
                self.issue(loc, url, "conforms to none of " + ", ".join(p.rsplit("/", 1)[-1] for p in known))

    def resolve(self, ref: str, resource: Any) -> dict[str, Any] | None:
        if ref.startswith("#"):
            return _contained(resource, ref)
        if self.bundle is not None:
            for e in self.bundle.get("entry", []):
                if e.get("fullUrl") == ref:
                    entry_resource: dict[str, Any] | None = e.get("resource")
                    return entry_resource
        head = ref.split("?")[0].split("/")[0]
        return {"resourceType": head} if head and head[0].isupper() else None


def _contained(resource: Any, ref: str) -> dict[str, Any] | None:
    if not isinstance(resource, dict):
        return None
    for c in resource.get("contained", []) or []:
        if isinstance(c, dict) and "#" + str(c.get("id", "")) == ref:
            return c
    return None


def _matches(value: Any, want: Any) -> bool:
    """FHIR pattern semantics: every element of ``want`` is present in ``value`` (codings: in any coding)."""
    if isinstance(want, dict):
        if not isinstance(value, dict):
            return False
        if "coding" not in want and "coding" in value and {"system", "code"} >= set(want):
            return any(_matches(c, want) for c in value.get("coding", []))
        return all(_matches(value.get(k), v) for k, v in want.items())
    return bool(value == want)


def _in_value_set(value: Any, allowed: set[tuple[str, str]], codes: set[str]) -> bool:
    if isinstance(value, str):
        return value in codes
    if isinstance(value, dict):
        codings = value.get("coding", [value])
        return any((c.get("system"), c.get("code")) in allowed for c in codings if isinstance(c, dict))
    return False


def validate(resource: dict[str, Any], profile: str, *, bundle: dict[str, Any] | None = None) -> list[ProfileIssue]:
    """Every rule of ``profile`` (and of the profiles it derives from) that ``resource`` breaks."""
    issues: list[ProfileIssue] = []
    _Checker(issues, bundle).check(resource, profile, "")
    return issues


def validate_bundle(bundle: dict[str, Any]) -> list[ProfileIssue]:
    """An ITI-65 Bundle against the PDSm Provide Document Bundle profile (its entries through its slices)."""
    issues: list[ProfileIssue] = []
    _Checker(issues, bundle).check(bundle, PDSM_BUNDLE, "")
    return issues
