"""The Workspaces page: every workspace and what it holds; admins create, rename, delete."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from .. import audit, scopes
from ..accounts import require
from ..errors import Conflict, NotFound, PermissionDenied, ValidationError
from . import actor, vault, web


@web.route("/admin/scopes", methods=["GET", "POST"])
def scopes_page():
    """List workspaces; create one (admin)."""
    errors: dict[str, str] = {}
    form = {"id": "", "title": "", "parent": ""}
    if request.method == "POST":
        form = {k: request.form.get(k, "").strip() for k in form}
        try:
            with audit.unit(vault().factory) as s:
                scopes.create_scope(s, actor(), form["id"], form["title"], form["parent"] or None)
        except (ValidationError, Conflict, NotFound) as e:
            errors["parent" if isinstance(e, NotFound) else getattr(e, "field", None) or "id"] \
                = e.message
        else:
            flash(f"Workspace {form['id']} created.", "success")
            return redirect(url_for("web.scopes_page"))
    with vault().factory() as s:
        items = [(ws, scopes.contents(s, ws)) for ws in scopes.list_scopes(s)]
        by_id = scopes.names(s)
    return render_template("admin/scopes.html", items=items, form=form, errors=errors,
                           default=scopes.DEFAULT, by_id=by_id), 422 if errors else 200


@web.post("/admin/scopes/<scope_id>/rename")
def rename_scope(scope_id: str):
    """Change a workspace's title (admin); the ID stays."""
    require(actor(), "admin")
    try:
        with audit.unit(vault().factory) as s:
            scopes.update_scope(s, actor(), scope_id, {"title": request.form.get("title", "")})
    except ValidationError as e:
        flash(e.message, "error")
    else:
        flash(f"Workspace {scope_id} renamed.", "success")
    return redirect(url_for("web.scopes_page"))


@web.post("/admin/scopes/<scope_id>/delete")
def delete_scope(scope_id: str):
    """Delete an empty workspace (admin)."""
    require(actor(), "admin")
    try:
        with audit.unit(vault().factory) as s:
            scopes.delete_scope(s, actor(), scope_id)
    except (Conflict, PermissionDenied) as e:
        flash(e.message, "error")
    else:
        flash(f"Workspace {scope_id} deleted.", "success")
    return redirect(url_for("web.scopes_page"))
