"""Name normalisation for strict identity traits, per RNIV 01 Annexe III and §4.5.3.

Two operations, kept apart because the RNIV keeps them apart:

- `normalize_name` is the *recording* form (Annexe III): upper case, no
  accents or other diacritics, hyphens and apostrophes kept, other
  punctuation such as ``/`` or the commas between given names replaced by a
  space.
- `name_key` is the *comparison* form: on top of that, a hyphen or an
  apostrophe "must not be considered different from a space" ([EXI SI 29]),
  and differences in their use are no discordance ([EXI PP 20]).

Decisions where the sources are silent:

- Typographic variants count as the apostrophe (right single quote U+2019,
  modifier letter apostrophe U+02BC, grave accent, prime...) or the hyphen
  (U+2010-U+2014, minus sign). A soft hyphen (U+00AD) is dropped.
- The ligatures Œ and Æ become OE and AE (NFKD does not decompose them);
  ß becomes SS (Python's upper case does that).
- A hyphen or apostrophe compares equal to a space, not to nothing: ``D'ARC``
  matches ``D ARC`` but not ``DARC``. Equating more would let two different
  names compare equal; a false "different" only sends a message to review.
- Letters of other scripts are kept (upper-cased), never dropped, so that
  two different non-Latin names cannot both normalise to the empty string.
"""

from __future__ import annotations

import unicodedata

__all__ = ["first_given_name_consistent", "name_key", "normalize_name"]

_APOSTROPHES = frozenset("'\u2019\u2018\u02bc\u0060\u2032")
_HYPHENS = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212")
_LIGATURES = {"Œ": "OE", "œ": "OE", "Æ": "AE", "æ": "AE"}


def _ascii_form(ch: str) -> str:
    if ch in _APOSTROPHES:
        return "'"
    if ch in _HYPHENS:
        return "-"
    return ch.upper() if ch.isalnum() else " "


# The loop below, character by character, for ASCII text: NFKD leaves ASCII as it is and it has no
# diacritic, soft hyphen or ligature, so one translate() gives the same form (the INS steps normalise
# ~16 names a document).
_ASCII_TABLE = str.maketrans({chr(c): _ascii_form(chr(c)) for c in range(128)})


def normalize_name(value: str) -> str:
    """Return the RNIV recording form of a name or a given-name list (Annexe III)."""
    if value.isascii():
        return " ".join(value.translate(_ASCII_TABLE).split())
    return _normalize_each(value)


def _normalize_each(value: str) -> str:
    """:func:`normalize_name` character by character (any text)."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", value):
        if unicodedata.combining(ch) or ch == "\u00ad":
            continue  # a diacritic (RNIV Annexe III: "sans signe diacritique") or a soft hyphen
        if ch in _LIGATURES:
            out.append(_LIGATURES[ch])
        elif ch in _APOSTROPHES:
            out.append("'")
        elif ch in _HYPHENS:
            out.append("-")
        elif ch.isalnum():
            out.append(ch.upper())
        else:
            # Spaces, commas, "/" and other punctuation: Annexe III replaces them by a space.
            out.append(" ")
    return " ".join("".join(out).split())


def name_key(value: str) -> str:
    """Return the comparison form: `normalize_name`, then hyphens/apostrophes as spaces ([EXI SI 29])."""
    return " ".join(normalize_name(value).replace("-", " ").replace("'", " ").split())


def first_given_name_consistent(first_given_name: str, given_names: str) -> bool:
    """[EXI SI 29]: the first birth given name must be the start of the birth given-name list.

    With names MAX PATRICK the first may be MAX, MAX PATRICK or MAX-PATRICK,
    never PATRICK. True when the list is empty (nothing to check against).
    """
    first = name_key(first_given_name).split()
    names = name_key(given_names).split()
    if not names:
        return True
    return bool(first) and names[: len(first)] == first
