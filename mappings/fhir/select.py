"""The ``fhirpath`` selector of route filters: FHIRPath (fhirpathpy) over a FHIR JSON body.

fhirpathpy's own parser ignores syntax errors (its ANTLR error listener does
nothing), so an expression is first parsed with a strict listener: a typo is
refused by `hub check`, not silently matched against nothing.
"""

from __future__ import annotations

import json
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from hub.conditions import Selector
from hub.content_types import ContentType
from hub.message import Message
from hub.registry import register

__all__ = ["fhirpath_selector", "text_of"]


class _Strict(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any) -> None:
        raise ValueError(f"FHIRPath syntax error at column {column + 1}: {msg}")


def check_fhirpath(expression: str) -> None:
    """ValueError when `expression` is not FHIRPath (FHIRPath N1 grammar, as fhirpathpy reads it)."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Strict())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(_Strict())
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise ValueError("FHIRPath expression has text after its end")


def text_of(value: Any) -> str:
    """A FHIRPath result as the text conditions compare: booleans as true/false, the rest as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@register("selector", "fhirpath")
def fhirpath_selector(expression: str) -> Selector:
    """FHIRPath, e.g. `Bundle.entry.resource.ofType(Patient).gender`: its values in a FHIR JSON body."""
    check_fhirpath(expression)
    compiled = fhirpathpy.compile(expression)

    def select(message: Message, cache: dict[str, Any]) -> list[str]:
        if message.content_type != ContentType.FHIR:
            return []
        if "fhir" not in cache:
            try:
                cache["fhir"] = json.loads(message.body)
            except ValueError:
                cache["fhir"] = None
        doc = cache["fhir"]
        if not isinstance(doc, dict):
            return []
        try:
            result = compiled(doc, None)
        except Exception:  # an evaluation error on hostile content selects nothing; it never stops ingest
            return []
        return [text_of(v) for v in result if not isinstance(v, dict | list)]

    return select
