"""Workspaces (scopes): listed by everyone, created, renamed and deleted by admins."""
from __future__ import annotations

from flask import jsonify

from .. import scopes
from ..audit import unit
from . import actor, api, body, vault


@api.get("/scopes")
def list_scopes():
    """Every workspace, with what it holds."""
    with vault().factory() as s:
        by_id = scopes.names(s)
        return jsonify({"items": [scopes.to_dict(ws, scopes.contents(s, ws), by_id)
                                  for ws in scopes.list_scopes(s)]})


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
