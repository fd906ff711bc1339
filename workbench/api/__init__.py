"""REST API under /api/v1: bearer-token auth, JSON errors, and the route modules."""
from __future__ import annotations

import importlib
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import accounts, audit
from ..audit import Actor
from ..errors import AuthenticationRequired, BadRequest, PermissionDenied, WorkbenchError
from ..vault import Vault

api = Blueprint("api", __name__, url_prefix="/api/v1")
# Route modules (each adds its routes to ``api``); optional ones may not exist yet.
ROUTE_MODULES = ["credentials", "admin", "runs", "sources", "openapi"]
PUBLIC_ENDPOINTS = {"api.openapi"}
# Runner tokens exist to resolve values and report runs; nothing else.
RUNNER_ENDPOINTS = {"api.resolve", "api.store_run"}


def vault() -> Vault:
    return current_app.extensions["workbench"]


def actor() -> Actor:
    return g.actor


def workspace() -> str:
    return request.args.get("workspace", "default")


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def error_response(err: WorkbenchError):
    return jsonify({"error": err.to_dict()}), err.status


@api.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return error_response(AuthenticationRequired(
            "send a personal or runner token as 'Authorization: Bearer …'"))
    try:
        with vault().factory.begin() as s:
            g.actor = accounts.token_actor(s, token.strip(), source=request.remote_addr or "")
    except WorkbenchError as e:
        with vault().factory.begin() as s:
            audit.record(s, Actor("anonymous", source=request.remote_addr or "", kind="token"),
                         "auth.token", outcome="denied", target=request.path[:200])
        return error_response(e)
    if g.actor.role == "runner" and request.endpoint not in RUNNER_ENDPOINTS:
        return error_response(PermissionDenied("runner tokens may only resolve and record runs"))
    return None


@api.errorhandler(WorkbenchError)
def _workbench_error(err: WorkbenchError):
    return error_response(err)


@api.errorhandler(HTTPException)
def _http_error(err: HTTPException):
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "bad_request"}
    return jsonify({"error": {"code": codes.get(err.code, "http_error"),
                              "message": err.description or err.name}}), err.code


def register(app) -> None:
    for name in ROUTE_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    app.register_blueprint(api)
