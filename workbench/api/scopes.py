"""Workspaces (scopes): listed (those the caller may see), created, renamed and deleted by
admins, and their members: who has which role on them."""
from __future__ import annotations

from flask import jsonify

from .. import access, scopes
from ..audit import unit
from . import actor, api, body, vault
from .inputs import texts


@api.get("/scopes")
def list_scopes():
    """Every workspace the caller may see, with what it holds."""
    with vault().factory() as s:
        by_id = scopes.names(s)
        return jsonify({"items": [scopes.to_dict(ws, scopes.contents(s, ws), by_id)
                                  for ws in scopes.list_scopes(s, actor())]})


@api.post("/scopes")
def create_scope():
    """Create a workspace: ``id`` (immutable), an optional ``title`` and ``parent`` (admin)."""
    d = body()
    with unit(vault().factory) as s:
        ws = scopes.create_scope(s, actor(), d.get("id"), d.get("title", ""), d.get("parent"))
        return jsonify(scopes.to_dict(ws, None, scopes.names(s))), 201


@api.get("/scopes/<scope_id>")
def get_scope(scope_id: str):
    """One workspace and what it holds."""
    with vault().factory() as s:
        ws = scopes.get_scope(s, scope_id)
        return jsonify(scopes.to_dict(ws, scopes.contents(s, ws), scopes.names(s)))


@api.get("/scopes/<scope_id>/credentials/<cred_id>")
def effective_credential(scope_id: str, cred_id: str):
    """Which credential ``cred_id`` a pipeline in this workspace gets (``gets``: its own
    workspace, or the nearest one above it) and the ones above it that it shadows."""
    with vault().factory() as s:
        return jsonify(scopes.explain(s, scope_id, cred_id))


@api.patch("/scopes/<scope_id>")
def update_scope(scope_id: str):
    """Change a workspace's title (admin); its ID never changes."""
    with unit(vault().factory) as s:
        ws = scopes.update_scope(s, actor(), scope_id, body())
        return jsonify(scopes.to_dict(ws, None, scopes.names(s)))


@api.delete("/scopes/<scope_id>")
def delete_scope(scope_id: str):
    """Delete an empty workspace (admin); 409 naming what it still holds."""
    with unit(vault().factory) as s:
        scopes.delete_scope(s, actor(), scope_id)
    return jsonify({"deleted": scope_id})


@api.get("/scopes/<scope_id>/members")
def list_members(scope_id: str):
    """Who has a role on this workspace: granted on it, and inherited from the ones above."""
    with vault().factory() as s:
        return jsonify({"items": [access.member_to_dict(m) for m in access.members(s, scope_id)],
                        "inherited": [access.member_to_dict(m)
                                      for m in access.inherited_members(s, scope_id)]})


@api.put("/scopes/<scope_id>/members/<username>")
def grant_member(scope_id: str, username: str):
    """Give a user a role on this workspace and the ones below (an admin of it or above):
    201 for a new member, 200 for a changed role."""
    role = texts(body(), "role").get("role")
    with unit(vault().factory) as s:
        row = access.grant(s, actor(), scope_id, username, role)
        return jsonify(access.member_to_dict(row)), 201 if row.fresh else 200


@api.delete("/scopes/<scope_id>/members/<username>")
def revoke_member(scope_id: str, username: str):
    """Take a user's role on this workspace away (roles granted above it stay)."""
    with unit(vault().factory) as s:
        access.revoke(s, actor(), scope_id, username)
    return "", 204
