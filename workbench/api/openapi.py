"""The OpenAPI document, built from the registered routes and the credential type registry."""
from __future__ import annotations

import re

from flask import current_app, jsonify

from .. import credtypes
from ..credentials import SORT_JOINS, SORTABLE
from ..pipeline.names import CRED_ID
from . import PUBLIC_ENDPOINTS, api
from .contract import BODIES, CREATED, MAY_CREATE, NO_CONTENT, OBJECT, path_params
from .inputs import INT64_MAX

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "details": {"type": "object"}}}}}
_ERRORS = {"400": "Bad request", "401": "No or invalid token", "403": "Role or scope refused",
           "404": "Not found",
           "405": "Method not allowed (also: an ID past int64 where another method has the route)",
           "409": "Conflict (e.g. referenced by pipelines)",
           "413": "Body too large", "422": "Invalid input"}

# Query parameters beyond ``workspace``: endpoint → (name, JSON type or schema, description).
_OFFSET = ("offset", {"type": "integer", "minimum": 0, "maximum": INT64_MAX}, "rows to skip")
_PAGE = [("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"), _OFFSET]
_SORT = {"type": "string", "enum": [p + k for k in [*SORTABLE, *SORT_JOINS] for p in ("", "-")]}
_FORCE = [("force", "boolean", "go ahead although pipelines reference it (admins)")]
QUERY = {
    "api.list_credentials": [("q", "string", "substring of ID, name or description"),
                             ("type", "string", "credential type"),
                             ("status", "string", "status summary"),
                             ("sort", _SORT, "column, '-' first for descending"), *_PAGE],
    "api.update_credential": _FORCE, "api.delete_credential": _FORCE,
    "api.prune_versions": _FORCE, "api.list_runs": _PAGE,
    "api.audit_log": [("target", "string", "credential ID or other target"),
                      ("actor", "string", "user, or token:/runner:NAME"),
                      ("action", "string", "e.g. credential.resolve"),
                      ("outcome", "string", "ok, denied or failed"),
                      ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
                      _OFFSET],
    "api.explain_policy": [("pipeline", "string", "pipeline name"), ("step", "string", "step"),
                           ("credential", "string", "credential ID"),
                           ("ref", "string", "git ref of the run"),
                           ("event", "string", "push, pull_request, …"),
                           ("fork", "boolean", "the change comes from a fork"),
                           ("source", "string", "the pipeline's source, if ambiguous")],
    "api.sync_source": [("wait", "boolean", "false: start the sync in the background and "
                         "answer 202 at once (409 while one runs); default true")],
    "api.verify": [("wait", "boolean", "false: answer 202 at once and poll the credential "
                    "until its status leaves 'Checking…'; default true (at most 10 s)")],
}
ACCEPTED = {"api.sync_source", "api.verify", "api.source_hook"}  # may answer 202


def _values_schema(ctype: credtypes.CredentialType) -> dict:
    props = {}
    for f in ctype.fields:
        if f.kind == "map":
            props[f.name] = {"type": "object", "additionalProperties": {"type": "string"}}
        else:
            props[f.name] = {"type": "string", "writeOnly": f.secret, "description": f.label
                             + (" (base64)" if f.kind == "bytes" else "")}
    return {"type": "object", "properties": props, "additionalProperties": False,
            "required": [f.name for f in ctype.fields if f.required]}


def build_spec(app) -> dict:
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1") or rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        view = app.view_functions[rule.endpoint]
        summary = (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else ""
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op = {"operationId": rule.endpoint.split(".")[-1] + "_" + method.lower(),
                  "summary": summary,
                  "parameters": path_params(rule.rule)
                  + [{"name": "workspace", "in": "query", "schema": {"type": "string",
                                                                       "default": "default"}}]
                  + [{"name": n, "in": "query", "description": d,
                      "schema": t if isinstance(t, dict) else {"type": t}}
                     for n, t, d in QUERY.get(rule.endpoint, [])],
                  "responses": {"201" if rule.endpoint in CREATED else "200": {
                                    "description": "Created" if rule.endpoint in CREATED
                                    else "OK"},
                                **{c: {"description": d, "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Error"}}}}
                                   for c, d in _ERRORS.items()}}}
            if rule.endpoint in NO_CONTENT:
                op["responses"]["204"] = {"description": "Done (no content)"}
                del op["responses"]["200"]
            if rule.endpoint in MAY_CREATE:
                op["responses"]["201"] = {"description": "Created"}
            if rule.endpoint in ACCEPTED:
                op["responses"]["202"] = {"description": "Started in the background"}
            if method in ("POST", "PATCH", "PUT"):
                op["requestBody"] = {"required": rule.endpoint in BODIES, "content": {
                    "application/json": {"schema": BODIES.get(rule.endpoint, OBJECT)}}}
            if rule.endpoint == "api.create_credential":
                op["requestBody"]["content"]["application/json"]["schema"] = {
                    "$ref": "#/components/schemas/NewCredential"}
            if rule.endpoint in PUBLIC_ENDPOINTS:
                op["security"] = []
            paths.setdefault(path, {})[method.lower()] = op
    new_cred = {"oneOf": [{
        "type": "object", "required": ["id", "type", "values"],
        "properties": {"id": {"type": "string",
                              "pattern": CRED_ID.pattern},
                       "type": {"const": name}, "name": {"type": "string"},
                       "description": {"type": "string"}, "values": _values_schema(t)}}
        for name, t in credtypes.TYPES.items()]}
    return {"openapi": "3.1.0",
            "info": {"title": "Workbench API", "version": "1",
                     "description": "Credential vault for CI. Secret values are write-only: "
                                    "only POST /resolve (runner tokens) returns them."},
            "servers": [{"url": "/"}],
            "security": [{"bearer": []}],
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                           "schemas": {"Error": _ERROR, "NewCredential": new_cred}},
            "paths": paths}


@api.get("/openapi.json")
def openapi():
    """This document."""
    return jsonify(build_spec(current_app))
