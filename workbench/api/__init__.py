"""REST API under /api/v1: bearer-token auth, JSON errors, and the route modules."""
from __future__ import annotations

import importlib
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import access, audit
from ..audit import Actor
from ..errors import PermissionDenied, WorkbenchError
from ..statements import Raw
from ..vault import Vault
from .hotpath import check_token, json_object

api = Blueprint("api", __name__, url_prefix="/api/v1")
# Route modules (each adds its routes to ``api``); optional ones may not exist yet.
ROUTE_MODULES = ["credentials", "admin", "scopes", "runs", "sources", "hooks", "policy",
                 "oidc", "openapi"]
PUBLIC_ENDPOINTS = {"api.openapi"}
# Runner tokens exist to resolve values and report runs; nothing else.
RUNNER_ENDPOINTS = {"api.resolve", "api.store_run"}
# Check the token themselves, on the connection of their own work (the hot path).
SELF_AUTHENTICATING = {"api.resolve"}
# Not about one scope (``?workspace=`` or ``<scope_id>``): they check what they need themselves.
# Every other route first needs the viewer role on its scope (else the 404 of no such scope).
INSTANCE_ENDPOINTS = {"api.change_password", "api.audit_log", "api.list_scopes",
                      "api.create_scope", "api.list_tokens", "api.create_token",
                      "api.revoke_token", "api.list_users", "api.create_user",
                      "api.update_user", "api.delete_user", "api.reset_password",
                      "api.list_webhooks", "api.add_webhook", "api.remove_webhook",
                      "api.list_deliveries", "api.store_run"}


def vault() -> Vault:
    return current_app.extensions["workbench"]


def actor() -> Actor:
    return g.actor


def workspace() -> str:
    args = request.args  # (``get`` of a missing key builds and drops an exception)
    return args["workspace"] if "workspace" in args else "default"


def flag(name: str, default: bool = False) -> bool:
    """A yes/no query parameter: ``1``, ``true`` or ``yes`` (any case) is yes."""
    value = request.args.get(name)
    return default if value is None else value.lower() in ("1", "true", "yes")


def body() -> dict[str, Any]:
    return json_object(request.get_json(silent=True))


def error_response(err: WorkbenchError):
    return jsonify({"error": err.to_dict()}), err.status


@api.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint in SELF_AUTHENTICATING:
        return None
    try:
        with audit.hot_unit(vault()) as raw:
            authenticate(raw)
    except WorkbenchError as e:
        return error_response(e)
    if g.actor.role == "runner":
        if request.endpoint not in RUNNER_ENDPOINTS:
            return error_response(PermissionDenied("runner tokens may only resolve and record "
                                                   "runs"))
        return None
    try:
        with audit.unit(vault().factory) as s:
            g.actor = access.with_grants(s, g.actor)
            if request.endpoint not in INSTANCE_ENDPOINTS:
                access.require_on(s, g.actor, "viewer", "scope.read", workspace=scope(),
                                  target=request.path[:200])
    except WorkbenchError as e:
        return error_response(e)
    return None


def scope() -> str:
    """The scope a request is about: its ``<scope_id>``, else ``?workspace=`` (default)."""
    args = request.view_args or {}
    return args["scope_id"] if "scope_id" in args else workspace()


def authenticate(raw: Raw) -> Actor:
    """Check the bearer token (on the caller's connection) and set ``g.actor``."""
    g.actor = check_token(raw, request.headers.get("Authorization", ""),
                          request.remote_addr or "", request.path)
    return g.actor


@api.errorhandler(WorkbenchError)
def _workbench_error(err: WorkbenchError):
    return error_response(err)


def http_error(err: HTTPException) -> tuple[dict, int]:
    """The API's JSON error for a werkzeug HTTP error (also a 500 made of any exception)."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "bad_request"}
    return {"error": {"code": codes.get(err.code, "http_error"),
                      "message": err.description or err.name}}, err.code


@api.errorhandler(HTTPException)
def _http_error(err: HTTPException):
    payload, status = http_error(err)
    return jsonify(payload), status


def register(app) -> None:
    for name in ROUTE_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    app.register_blueprint(api)
