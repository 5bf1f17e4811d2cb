"""The OpenAPI 3.1 document of the admin API, written from the operations table.

Paths, methods, parameters, bodies, responses and roles all come from
:data:`hub.admin.api.OPERATIONS` and the pydantic models in
:mod:`hub.admin.models`; ``tests/admin/test_admin_api.py`` checks that every
``/api`` route the app serves is in the document and the other way round.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from hub.admin.models import ErrorBody

if TYPE_CHECKING:
    from hub.admin.api import Operation

__all__ = ["build_document"]

_REF = "#/components/schemas/{model}"
_ROLES_TEXT = (
    "Roles, each including the one before: **viewer** (metadata, never a payload), **operator** (payloads, "
    "replay, requeue, pause/resume, identity review), **admin** (the audit trail). Send "
    "`Authorization: Bearer <token>`: a configured token, or the session token `POST /api/login` returns. "
    "Every payload view and every action is recorded in a hash-chained audit trail."
)


def _models(ops: Iterable[Operation]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], str], None] = {(ErrorBody, "serialization"): None}
    for op in ops:
        if op.body is not None:
            seen[(op.body, "validation")] = None
        if op.response is not None:
            seen[(op.response, "serialization")] = None
    return list(seen)  # type: ignore[arg-type]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _error(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ref(ErrorBody)}}}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    names = re.findall(r"\{(\w+)\}", op.path)
    described = {name: (kind, text) for name, kind, text in op.path_params}
    for name in names:
        kind, text = described.get(name, ("string", ""))
        params.append({"name": name, "in": "path", "required": True, "description": text, "schema": {"type": kind}})
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            prop = dict(prop)
            description = prop.pop("description", "")
            prop.pop("title", None)
            variants = [v for v in prop.pop("anyOf", []) if v != {"type": "null"}]
            if len(variants) == 1:
                prop.update(variants[0])  # an optional query parameter is absent, never null
            elif variants:
                prop["anyOf"] = variants
            params.append(
                {"name": name, "in": "query", "required": name in required, "description": description, "schema": prop}
            )
    return params


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.handler.__name__.lstrip("_"),
        "summary": op.summary,
        "tags": [op.tag],
        "x-required-role": op.role,
    }
    if op.description:
        out["description"] = op.description
    if op.audited:
        out["x-audited"] = op.audited
    params = _parameters(op)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    if op.response is not None:
        schema: dict[str, Any] = _ref(op.response)
        if op.response_list:
            schema = {"type": "array", "items": schema}
    else:
        schema = {"type": "object"}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}
    if op.query is not None or op.body is not None:
        responses["400"] = _error("Invalid parameters or body.")
    if op.role is None:
        out["security"] = []
        if op.body is not None:
            responses["401"] = _error("Wrong credentials.")
            responses["429"] = _error("Too many failed attempts.")
    else:
        out["security"] = [{"bearer": []}]
        responses["401"] = _error("No valid bearer token.")
        if op.role != "viewer":
            responses["403"] = _error(f"The token's role is below {op.role}.")
    if "{" in op.path:
        responses["404"] = _error("Not found.")
    if op.role is not None:
        responses["503"] = _error("Store (or audit trail) unavailable.")
    out["responses"] = responses
    return out


def build_document(ops: Iterable[Operation], *, version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document for these operations."""
    ops = list(ops)
    _, defs = models_json_schema(_models(ops), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "interop hub admin API", "version": version, "description": _ROLES_TEXT},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": defs.get("$defs", {}),
        },
    }
