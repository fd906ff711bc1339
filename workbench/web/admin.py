"""Administration: users and roles, API and runner tokens, the audit log."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import accounts, audit, auditors
from ..accounts import require
from ..errors import Conflict, NotFound, ValidationError
from . import actor, can, vault, visible_scopes, web

AUDIT_FILTERS = ("actor", "action", "outcome", "workspace", "target")


@web.app_context_processor
def _audit_link():
    """``can_read_audit()`` in templates: the same rule as the page and the API."""
    return {"can_read_audit": lambda: current_user.is_authenticated and (
        auditors.may_read(actor()) or any(r in auditors.READERS for _, r in
                                          getattr(current_user, "scope_grants", ()) or ()))}


@web.route("/admin/users", methods=["GET", "POST"])
def users():
    """List users; create one (admin)."""
    require(actor(), "admin")
    errors: dict[str, str] = {}
    form = {"username": "", "role": "viewer"}
    if request.method == "POST":
        form = {"username": request.form.get("username", "").strip(),
                "role": request.form.get("role", "viewer")}
        try:
            with audit.unit(vault().factory) as s:
                accounts.create_user(s, actor(), form["username"],
                                     request.form.get("password", ""), form["role"])
        except (ValidationError, Conflict) as e:
            errors[getattr(e, "field", None) or "username"] = e.message
        else:
            flash(f"User {form['username']} created.", "success")
            return redirect(url_for("web.users"))
    with vault().factory() as s:
        items = accounts.list_users(s)
    return render_template("admin/users.html", items=items, roles=accounts.INSTANCE_ROLES,
                           form=form,
                           errors=errors), 422 if errors else 200


@web.post("/admin/users/<username>/role")
def set_role(username: str):
    """Change a user's role (admin)."""
    require(actor(), "admin")
    try:
        with audit.unit(vault().factory) as s:
            accounts.set_role(s, actor(), username, request.form.get("role", ""))
    except (ValidationError, Conflict) as e:
        flash(e.message, "error")
    else:
        flash(f"{username} is now {request.form.get('role')}.", "success")
    return redirect(url_for("web.users"))


# user actions of the Users page: (service call, message); each is one POST with a CSRF token
USER_ACTIONS = {
    "disable": (lambda s, name: accounts.set_disabled(s, actor(), name, True),
                "{} is disabled: their sessions and tokens stopped working."),
    "enable": (lambda s, name: accounts.set_disabled(s, actor(), name, False),
               "{} is enabled again."),
    "delete": (lambda s, name: accounts.delete_user(s, actor(), name), "{} is deleted."),
    "password": (lambda s, name: accounts.reset_password(s, actor(), name,
                                                         request.form.get("password", "")),
                 "{}'s password is set; they must change it at their next sign-in."),
}


@web.post("/admin/users/<username>/<any(disable, enable, delete, password):action>")
def user_action(username: str, action: str):
    """Disable, enable, delete a user or set their password (admin)."""
    require(actor(), "admin")
    call, message = USER_ACTIONS[action]
    try:
        with audit.unit(vault().factory) as s:
            call(s, username)
    except (ValidationError, Conflict) as e:
        flash(e.message, "error")
    else:
        flash(message.format(username), "success")
    return redirect(url_for("web.users"))


def _visible_tokens(s):
    return accounts.list_tokens(s, actor())


@web.route("/admin/tokens", methods=["GET", "POST"])
def tokens():
    """Personal tokens (everyone, their own) and runner tokens (admin); secrets shown once."""
    issued = None
    errors: dict[str, str] = {}
    if request.method == "POST":
        kind = request.form.get("kind", "personal")
        try:
            with audit.unit(vault().factory) as s:
                out = accounts.create_token(s, actor(), request.form.get("name", "").strip(),
                                            kind=kind,
                                            workspace=request.form.get("workspace") or None,
                                            allow=request.form.get("allow", "").replace(
                                                ",", " ").split() or None)
                issued = (out.token.name, out.secret)
        except (ValidationError, Conflict) as e:
            errors[getattr(e, "field", None) or "name"] = e.message
        except NotFound as e:  # the workspace: never created by a typo
            errors["workspace"] = e.message
    with vault().factory() as s:
        items = [accounts.token_to_dict(t) for t in _visible_tokens(s)]
        workspaces = [w for w in visible_scopes(s) if can("admin", w)]
    return render_template("admin/tokens.html", items=items, issued=issued, errors=errors,
                           workspaces=workspaces), 422 if errors else 200


@web.route("/admin/tokens/<int:token_id>/revoke", methods=["GET", "POST"])
def revoke_token(token_id: int):
    """Ask first (GET), then revoke (POST) a token: its owner, or an admin."""
    if request.method == "GET":
        with vault().factory() as s:
            tok = next((accounts.token_to_dict(t) for t in _visible_tokens(s)
                        if t.id == token_id and not t.revoked_at), None)
        if tok is None:
            raise NotFound(f"no active token {token_id} of yours")
        return render_template("admin/revoke.html", t=tok)
    with audit.unit(vault().factory) as s:
        tok = accounts.revoke_token(s, actor(), token_id)
        name = tok.name
    flash(f"Token {name} revoked.", "success")
    return redirect(url_for("web.tokens"))


@web.get("/admin/audit")
def audit_log():
    """The audit log with filters (admins and auditors)."""
    seen = auditors.require_reader(vault().factory, actor())
    filters = {k: request.args.get(k, "").strip()[:200] for k in AUDIT_FILTERS}
    page = min(max(1, request.args.get("page", 1, type=int) or 1), 10**6)
    with vault().factory() as s:
        events = audit.query(s, **{k: v or None for k, v in filters.items()}, limit=101,
                             offset=(page - 1) * 100, workspaces=seen)
        actions = audit.actions(s)
    return render_template("admin/audit.html", events=events[:100], more=len(events) > 100,
                           filters=filters, page=page, actions=actions)
