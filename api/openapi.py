"""OpenAPI 3.1 document built from the routes' endpoint declarations and their pydantic models."""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app
from pydantic.json_schema import models_json_schema

from api.errors import HTTP_CODES
from api.schemas.base import ErrorOut

bp = Blueprint("openapi", __name__)
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")
REF = "#/components/schemas/{model}"


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for converter, name in _PARAM.findall(rule):
        schema = {"type": "integer"} if converter == "int" else {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", rule), params


def _query_params(model, schemas: dict) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def build_document(app: Flask) -> dict[str, Any]:
    models = {ErrorOut}
    routes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        spec = getattr(view, "endpoint_spec", None)
        routes.append((rule, view, spec))
        if spec is not None:
            models.update(m for m in (spec.body, spec.response) if isinstance(m, type))
    key_map, top = models_json_schema([(m, "serialization") for m in models if m is not None], ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    # pydantic names generic models "PageOut_JobOut_": take each model's $ref from pydantic, not its __name__
    refs = {model: schema["$ref"] for (model, _mode), schema in key_map.items() if "$ref" in schema}
    paths: dict[str, Any] = {}
    for rule, view, spec in sorted(routes, key=lambda r: r[0].rule):
        if rule.endpoint == "static":
            continue
        path, params = _path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {"operationId": f"{rule.endpoint}_{method.lower()}".replace(".", "_"),
                                  "tags": [rule.endpoint.split(".")[0]], "parameters": list(params)}
            op["summary"] = spec.summary if spec else (view.__doc__ or rule.endpoint).strip().splitlines()[0]
            op["responses"] = _responses(spec, refs)
            if spec is not None:
                if spec.auth:
                    op["security"] = [{"bearerAuth": []}]
                else:
                    op["security"] = []
                if spec.query is not None:
                    op["parameters"] += _query_params(spec.query, schemas)
                if spec.body is not None:
                    op["requestBody"] = {"required": not spec.optional_body, "content": {"application/json": {
                        "schema": {"$ref": refs.get(spec.body, REF.format(model=spec.body.__name__))}}}}
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "OpsConductor API", "version": "1.0.0",
                 "description": "Remote command execution with hierarchical serials."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }


def _responses(spec, refs: dict) -> dict[str, Any]:
    error = {"description": "Error",
             "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}}}
    if spec is None:
        return {"200": {"description": "OK"}}
    ok: dict[str, Any] = {"description": spec.summary}
    if spec.response is not None and spec.status != 204:
        name = getattr(spec.response, "__name__", None)
        ref = refs.get(spec.response, REF.format(model=name))
        ok["content"] = {"application/json": {"schema": {"$ref": ref}}}
    responses = {str(spec.status): ok}
    codes = set(spec.errors) | {429, 500}
    if spec.body is not None or spec.query is not None:
        codes |= {400, 422}
    if spec.auth:
        codes |= {401}
    if spec.roles:
        codes |= {403}
    for code in sorted(codes):
        responses[str(code)] = {**error, "description": HTTP_CODES.get(code, "Error")}
    return responses


@bp.get("/api/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 description of every route."""
    doc = current_app.extensions.get("opsconductor.openapi")
    if doc is None:
        doc = current_app.extensions["opsconductor.openapi"] = build_document(current_app)
    return doc
