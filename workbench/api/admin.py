"""People, tokens and the audit log."""
from __future__ import annotations

from flask import jsonify, request

from .. import accounts, audit, auditors, passwords
from ..audit import unit
from ..db import iso
from ..errors import BadRequest, PermissionDenied, ValidationError
from . import actor, api, body, vault
from .credentials import int_arg
from .inputs import texts


def _user(u) -> dict:
    return {"username": u.username, "role": u.role, "disabled": u.disabled,
            "must_change_password": u.must_change_password, "created_at": iso(u.created_at)}


@api.get("/users")
def list_users():
    """Users and their roles (admin)."""
    accounts.require(actor(), "admin")
    with vault().factory() as s:
        return jsonify({"items": [_user(u) for u in accounts.list_users(s)]})


@api.post("/users")
def create_user():
    """Create a user with a role (admin)."""
    d = texts(body(), "username", "password", "role")
    with unit(vault().factory) as s:
        u = accounts.create_user(s, actor(), d.get("username", ""), d.get("password", ""),
                                 d.get("role", "viewer"))
        return jsonify(_user(u)), 201


@api.patch("/users/<username>")
def update_user(username: str):
    """Change a user's role and/or disable or re-enable them (admin)."""
    d = texts(body(), "role")
    if not {"role", "disabled"} & set(d):
        raise ValidationError("send role and/or disabled", field="role")
    if "disabled" in d and not isinstance(d["disabled"], bool):
        raise ValidationError("disabled must be true or false", field="disabled")
    with unit(vault().factory) as s:
        u = accounts.find_user(s, username)
        if "role" in d:
            u = accounts.set_role(s, actor(), username, d["role"])
        if "disabled" in d:
            u = accounts.set_disabled(s, actor(), username, d["disabled"])
        return jsonify(_user(u))


@api.delete("/users/<username>")
def delete_user(username: str):
    """Delete a user and their personal tokens (admin; never the last active admin)."""
    with unit(vault().factory) as s:
        accounts.delete_user(s, actor(), username)
    return jsonify({"deleted": username})


@api.post("/users/<username>/password")
def reset_password(username: str):
    """Set a user's password (admin); they must change it at their next sign-in."""
    with unit(vault().factory) as s:
        return jsonify(_user(accounts.reset_password(
            s, actor(), username, texts(body(), "password").get("password", ""))))


@api.post("/account/password")
def change_password():
    """Change the calling user's own password: ``current_password`` and ``password``."""
    d = texts(body(), "current_password", "password")
    me = actor()
    if me.kind != "user":
        raise PermissionDenied("only a person's token can change that person's password")
    with unit(vault().factory) as s:
        u = passwords.change_own(s, me, accounts.find_user(s, me.name),
                                 str(d.get("current_password", "")), d.get("password", ""))
        return jsonify(_user(u))


@api.get("/tokens")
def list_tokens():
    """API and runner tokens (an instance admin sees all; others their own, and the runner
    tokens of the workspaces they are admin of). Secrets are never listed."""
    with vault().factory() as s:
        toks = accounts.list_tokens(s, actor())
        return jsonify({"items": [accounts.token_to_dict(t) for t in toks]})


@api.post("/tokens")
def create_token():
    """Create a personal token, or a runner token scoped to a workspace (admin); the secret is
    in this response only."""
    d = texts(body(), "name", "kind", "user", "workspace")
    with unit(vault().factory) as s:
        issued = accounts.create_token(s, actor(), d.get("name", ""),
                                       kind=d.get("kind", "personal"), username=d.get("user"),
                                       workspace=d.get("workspace"), allow=d.get("allow"))
        out = accounts.token_to_dict(issued.token) | {"token": issued.secret}
    resp = jsonify(out)
    resp.headers["Cache-Control"] = "no-store"
    return resp, 201


@api.delete("/tokens/<int:token_id>")
def revoke_token(token_id: int):
    """Revoke a token."""
    with unit(vault().factory) as s:
        return jsonify(accounts.token_to_dict(accounts.revoke_token(s, actor(), token_id)))


@api.get("/audit")
def audit_log():
    """The audit log, newest first, filtered by workspace, target, actor, action, outcome."""
    seen = auditors.require_reader(vault().factory, actor())
    a = request.args
    limit = int_arg("limit", 100, 1, 1000)
    with vault().factory() as s:
        evs = audit.query(s, workspace=a.get("workspace"), target=a.get("target"),
                          actor=a.get("actor"), action=a.get("action"),
                          outcome=a.get("outcome"), limit=limit, offset=int_arg("offset", 0),
                          workspaces=seen)
        return jsonify({"items": [audit.to_dict(e) for e in evs]})
