"""Stamp a qualified INS identity into an HL7 v2 message's PID segment (IHE PAM France, DOMAIN.md §2).

Only the first PID segment changes; every other byte of the message, line
endings included, is kept. Values are escaped with the message's own
delimiters (MSH-1/MSH-2) and encoded in its own MSH-18 character set.

=========  ==================================================================
PID-3      the INS repetition ``<INS>^^^<namespace>&<OID>&ISO^INS`` (DOMAIN.md §2.2:
           ASIP-SANTE-INS-NIR or -NIA, `hub.identity.cx4_assigning_authority`)
           replaces every CX-5 ``INS`` repetition, at the first one's place;
           PI, NH, NDP... repetitions are kept. CX-7/CX-8 stay empty (PAM FR §6.6.1).
PID-5      the ``L`` repetition ``BIRTH^FIRST^LIST^^<prefix>^^L`` (XPN-2 the first birth
           given name, XPN-3 the INSi list, XPN-5 civilité kept from the message),
           and, when the identity has a used name, the ``D`` one (DOMAIN.md §2.3)
PID-7      the birth date ``YYYYMMDD`` (a longer TS with the same date is kept)
PID-8      F / M / U
PID-11     the ``BDL`` repetition with XAD-9 = INSEE code (DOMAIN.md §2.4): kept as is when
           its code is already that one, else written as ``^^^^^^BDL^^code``; other
           addresses are kept
PID-32     ``VALI`` first, attribute repetitions kept (HOMA), PROV / VIDE and the
           attributes that contradict a qualified identity (DOUT, FICT) removed (§2.5)
=========  ==================================================================
"""

from __future__ import annotations

import re

from hub.errors import MappingError
from hub.identity import INS_CX5, IdentityAttribute, InsPolicy
from mappings.hl7v2.er7 import Delimiters, Er7Message
from mappings.ins._er7 import decode_er7, encode_er7, escape, set_component
from mappings.ins.stamp import Stamped, StampIdentity, require_stampable, sorted_attributes, stamp_metadata

__all__ = ["stamp_hl7v2"]

_SEGMENT_SPLIT = re.compile(r"(\r\n|\r|\n)")
# PID-32 codes that a qualified identity replaces: the other status, "not yet qualified", and the
# attributes RNIV allows only with provisoire (DOMAIN.md §1.4).
_PID32_DROPPED = frozenset({"VALI", "PROV", "VIDE", IdentityAttribute.DOUT.value, IdentityAttribute.FICT.value})


def stamp_hl7v2(body: bytes, identity: StampIdentity, *, policy: InsPolicy | None = None) -> Stamped:
    """Write ``identity`` into the first PID of an ER7 message; return the new bytes and the metadata.

    Raises `hub.errors.MappingError` when the identity may not be stamped
    (not qualifiée, DOUT/FICT, no given-name list, refused by ``policy``), when
    the message has no PID, or when a value does not fit the message's
    character set; `hub.errors.ParseError` when the bytes are not ER7.
    """
    require_stampable(identity, policy)
    text, codec = decode_er7(body)
    d = Er7Message(text).delimiters  # checks MSH-1/MSH-2
    parts = _SEGMENT_SPLIT.split(text)  # segments at even indices, their terminators at odd ones
    for i in range(0, len(parts), 2):
        segment = parts[i]
        if segment.startswith("PID") and (len(segment) == 3 or segment[3] == d.field):
            parts[i] = _stamp_pid(segment, identity, d)
            break
    else:
        raise MappingError("no PID segment to stamp", location="PID")
    return Stamped(encode_er7("".join(parts), codec), stamp_metadata(identity))


def _comp(repetition: str, index: int, d: Delimiters) -> str:
    """Component ``index`` (1-based) as written, escapes kept."""
    comps = repetition.split(d.component)
    return comps[index - 1] if index <= len(comps) else ""


def _reps(field: str, d: Delimiters) -> list[str]:
    return [r for r in field.split(d.repetition) if r] if field else []


def _stamp_pid(segment: str, identity: StampIdentity, d: Delimiters) -> str:
    fields = segment.split(d.field)
    if len(fields) <= 32:
        fields.extend([""] * (33 - len(fields)))
    traits = identity.traits
    fields[3] = _pid3(fields[3], identity, d)
    fields[5] = _pid5(fields[5], identity, d)
    ymd = traits.birth_date.strftime("%Y%m%d")
    if _comp(fields[7], 1, d)[:8] != ymd:
        fields[7] = ymd
    fields[8] = traits.sex.value
    fields[11] = _pid11(fields[11], traits.birthplace_code, d)
    fields[32] = _pid32(fields[32], identity, d)
    return d.field.join(fields)


def _pid3(field: str, identity: StampIdentity, d: Delimiters) -> str:
    authority = identity.authority
    hd = d.subcomponent.join((escape(authority.hl7_namespace, d), authority.oid, "ISO"))
    ins = d.component.join((escape(identity.ins, d), "", "", hd, INS_CX5))
    out: list[str] = []
    at: int | None = None
    for rep in _reps(field, d):
        if _comp(rep, 5, d) == INS_CX5:
            # PAM FR §6.6.1: only the latest INS is sent; an NIA beside the NIR is dropped too.
            if at is None:
                at = len(out)
            continue
        out.append(rep)
    out.insert(len(out) if at is None else at, ins)
    return d.repetition.join(out)


def _xpn(family: str, given: str, given_list: str, prefix: str, kind: str, d: Delimiters) -> str:
    comps = [escape(family, d), escape(given, d), escape(given_list, d), "", prefix, "", kind]
    return d.component.join(comps)


def _pid5(field: str, identity: StampIdentity, d: Delimiters) -> str:
    traits = identity.traits
    out: list[str | None] = []
    at_l: int | None = None
    at_d: int | None = None
    prefix_l = prefix_d = ""
    for rep in _reps(field, d):
        kind = _comp(rep, 7, d)
        if kind == "L":
            if at_l is None:
                at_l, prefix_l = len(out), _comp(rep, 5, d)
                out.append(None)
            continue
        if kind == "D" and identity.has_used_name:
            if at_d is None:
                at_d, prefix_d = len(out), _comp(rep, 5, d)
                out.append(None)
            continue
        out.append(rep)
    if at_l is None:
        at_l = len(out)
        out.append(None)
    # XPN-1 unaltered birth name, XPN-2 first given name, XPN-3 the INSi list (IHE-France Appendix N XPN).
    out[at_l] = _xpn(traits.birth_name, traits.first_birth_given_name, traits.birth_given_names, prefix_l, "L", d)
    if identity.has_used_name:
        used = _xpn(identity.used_family_name or "", identity.used_given_name or "", "", prefix_d, "D", d)
        if at_d is None:
            out.insert(at_l, used)  # the PAM FR examples send D before L
        else:
            out[at_d] = used
    return d.repetition.join(r for r in out if r is not None)


def _pid11(field: str, code: str, d: Delimiters) -> str:
    # A birthplace whose code changes keeps nothing of the old one (city, country described another place).
    fresh = set_component(set_component("", 7, "BDL", d), 9, escape(code, d), d)
    out: list[str] = []
    found = False
    for rep in field.split(d.repetition) if field else []:
        if _comp(rep, 7, d) == "BDL":
            if not found:
                out.append(rep if _comp(rep, 9, d) == escape(code, d) else fresh)
            found = True  # a second birthplace would contradict the first: dropped
            continue
        out.append(rep)
    if not found:
        out.append(fresh)
    return d.repetition.join(out)


def _pid32(field: str, identity: StampIdentity, d: Delimiters) -> str:
    kept = [r for r in _reps(field, d) if _comp(r, 1, d) not in _PID32_DROPPED]
    codes = {_comp(r, 1, d) for r in kept}
    added = [a.value for a in sorted_attributes(identity.attributes) if a.value not in codes]
    return d.repetition.join(["VALI", *kept, *added])
