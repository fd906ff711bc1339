"""The Workspaces pages: the workspaces a user may see and what they hold; admins create,
rename and delete them, and give people roles on them."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from .. import access, accounts, audit, scopes
from ..errors import Conflict, NotFound, PermissionDenied, ValidationError
from . import actor, instance, need, vault, web


@web.route("/admin/scopes", methods=["GET", "POST"])
def scopes_page():
    """List workspaces; create one (an instance admin, or an admin of the parent)."""
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
        items = [(ws, scopes.contents(s, ws)) for ws in scopes.list_scopes(s, actor())]
        by_id = scopes.names(s)
    return render_template("admin/scopes.html", items=items, form=form, errors=errors,
                           default=scopes.DEFAULT, by_id=by_id,
                           top_level=instance("admin")), 422 if errors else 200


@web.get("/admin/scopes/<scope_id>")
def scope_page(scope_id: str):
    """One workspace: what it holds and who has which role on it."""
    with vault().factory() as s:
        ws = scopes.get_scope(s, scope_id)
        ctx = dict(ws=ws, counts=scopes.contents(s, ws), by_id=scopes.names(s),
                   members=access.members(s, scope_id),
                   inherited=access.inherited_members(s, scope_id),
                   roles=accounts.ROLES)
    return render_template("admin/scope.html", **ctx)


@web.post("/admin/scopes/<scope_id>/members")
def grant_member(scope_id: str):
    """Give a user a role on the workspace (an admin of it or above)."""
    username = request.form.get("username", "").strip()
    try:
        with audit.unit(vault().factory) as s:
            access.grant(s, actor(), scope_id, username, request.form.get("role", ""))
    except (ValidationError, NotFound) as e:
        flash(e.message, "error")
    else:
        flash(f"{username} is now {request.form.get('role')} of {scope_id}.", "success")
    return redirect(url_for("web.scope_page", scope_id=scope_id))


@web.post("/admin/scopes/<scope_id>/members/<username>/revoke")
def revoke_member(scope_id: str, username: str):
    """Take a user's role on the workspace away (an admin of it or above)."""
    try:
        with audit.unit(vault().factory) as s:
            access.revoke(s, actor(), scope_id, username)
    except NotFound as e:
        flash(e.message, "error")
    else:
        flash(f"{username} no longer has a role on {scope_id}.", "success")
    return redirect(url_for("web.scope_page", scope_id=scope_id))


@web.post("/admin/scopes/<scope_id>/rename")
def rename_scope(scope_id: str):
    """Change a workspace's title (an admin of it or above); the ID stays."""
    need("admin", scope_id)
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
    """Delete an empty workspace (an admin of its parent, or of the instance)."""
    need("admin")  # of some scope; the service says whether of the right one
    try:
        with audit.unit(vault().factory) as s:
            scopes.delete_scope(s, actor(), scope_id)
    except (Conflict, PermissionDenied) as e:
        flash(e.message, "error")
    else:
        flash(f"Workspace {scope_id} deleted.", "success")
    return redirect(url_for("web.scopes_page"))
