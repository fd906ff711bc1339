"""One credential: create, show, rename, new secret version, delete, test connection."""
from __future__ import annotations

import importlib
from datetime import datetime

from flask import abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from .. import audit, auditors, checking, checks, credentials as svc, credtypes, policy, references, status
from ..errors import (Busy, Conflict, CredentialInUse, NotFound, ValidationError,
                      WorkbenchError)
from ..pipeline.records import CredentialUse, Run
from ..db import aware
from . import actor, forms, need, pairs, vault, visible_scopes, web

META_LABELS = {"id": ("ID", "id"), "name": ("Name", "name"),
               "description": ("Description", "description"),
               "workspace": ("Workspace", "workspace")}


def _workspaces(s) -> list[str]:
    return visible_scopes(s)


def _reads_audit(s, workspace: str) -> bool:
    """Whether the user may read the audit rows of ``workspace`` (a credential's trail)."""
    seen = auditors.readable(s, actor())
    return seen is None or workspace in seen


def _field_of(err: WorkbenchError) -> str:
    if isinstance(err, Conflict):
        return "id"
    return getattr(err, "field", None) or "_form"


@web.route("/credentials/new", methods=["GET", "POST"])
def new_credential():
    """Choose a type, then fill in exactly that type's fields."""
    need("editor")
    type_name = request.values.get("type", "")
    if type_name not in credtypes.TYPES:
        return render_template("credentials/choose.html", types=credtypes.TYPES)
    ctype = credtypes.TYPES[type_name]
    f = request.form
    meta = {"id": f.get("id", "").strip(), "name": f.get("name", ""),
            "description": f.get("description", ""),
            "workspace": f.get("workspace", "").strip() or request.args.get("workspace",
                                                                             "default"),
            "no_inherit": bool(f.get("no_inherit"))}
    errors: dict[str, str] = {}
    shown: dict = {}
    if request.method == "POST":
        try:
            values = forms.read_values(ctype, f, request.files)
            with audit.unit(vault().factory) as s:
                svc.create_credential(s, vault().barrier, actor(), workspace=meta["workspace"],
                                      cred_id=meta["id"], type=type_name, values=values,
                                      name=meta["name"].strip(),
                                      description=meta["description"],
                                      inherit=not meta["no_inherit"])
        except (ValidationError, Conflict, NotFound) as e:
            # a NotFound here is the workspace: nothing creates one by accident
            errors["workspace" if isinstance(e, NotFound) else _field_of(e)] = e.message
            shown = forms.shown_on_error(ctype, f, request.files)
        else:
            flash(f"Credential {meta['id']} created.", "success")
            return redirect(url_for("web.credentials"))
    with vault().factory() as s:
        workspaces = _workspaces(s)
    status = 422 if errors else 200
    return render_template("credentials/new.html", ctype=ctype, meta=meta, errors=errors,
                           widgets=forms.widgets(ctype, shown), workspaces=workspaces,
                           labels={**forms.labels(ctype), **META_LABELS}), status


def recent_runs(s, workspace: str, cred_id: str, limit: int = 10) -> list[tuple]:
    """(run, step, version) for the latest runs that received this credential: in its own
    scope and in the scopes below that inherit it (a role on a scope holds below it too)."""
    q = (select(Run, CredentialUse.step, CredentialUse.version)
         .join(CredentialUse, CredentialUse.run_id == Run.id)
         .where(CredentialUse.owner == workspace, CredentialUse.credential_id == cred_id)
         .order_by(CredentialUse.used_at.desc()).limit(limit))
    return list(s.execute(q))


def last_used(s, c) -> tuple[datetime | None, bool]:
    """(when the credential was last handed out, whether by a recorded run): the later of its
    own "last used" (any resolve: runs, ``workbench exec``, API, source clones) and its last use
    by a recorded run, as in the credentials table."""
    by_run = references.last_used(s, c.workspace.name, [c.cred_id]).get(c.cred_id)
    own = aware(c.last_used_at) if c.last_used_at else None
    if by_run and (own is None or by_run >= own):
        return by_run, True
    return own, False


@web.get("/credentials/<workspace>/<cred_id>")
def credential(workspace: str, cred_id: str):
    """Metadata, status, versions, users, runs and audit trail; never a value."""
    with vault().factory() as s:
        c = svc.get_credential(s, workspace, cred_id)
        used_at, by_run = last_used(s, c)
        ctx = dict(c=c, ctype=credtypes.TYPES.get(c.type), testable=c.type in checks.CHECKS,
                   checking=status.running_since(c) is not None,
                   versions=svc.list_versions(s, workspace, cred_id),
                   refs=svc.references(s, workspace, cred_id),
                   runs=recent_runs(s, workspace, cred_id), used_at=used_at, by_run=by_run,
                   keys=pairs.key_names(s, c) if c.type == pairs.GENERIC else [],
                   receivers=policy.receivers(s, workspace, cred_id),
                   reads_audit=_reads_audit(s, workspace))
        ctx["events"] = audit.query(s, workspace=workspace, target=cred_id, limit=50) \
            if ctx["reads_audit"] else []
    return render_template("credentials/show.html", **ctx)


@web.route("/credentials/<workspace>/<cred_id>/edit", methods=["GET", "POST"])
def edit_credential(workspace: str, cred_id: str):
    """Rename: name and description only; the ID is shown read-only and refused if changed."""
    need("editor", workspace)
    errors: dict[str, str] = {}
    with vault().factory() as s:
        c = svc.get_credential(s, workspace, cred_id)
    form = {"id": cred_id, "name": c.name, "description": c.description}
    if request.method == "POST":
        form = {k: request.form.get(k, form[k]) for k in form}
        changes = {"name": form["name"].strip(), "description": form["description"]}
        if "id" in request.form:
            changes["id"] = request.form["id"]
        try:
            with audit.unit(vault().factory) as s:
                svc.update_credential(s, vault().barrier, actor(), workspace=workspace,
                                      cred_id=cred_id, changes=changes)
        except ValidationError as e:
            errors[_field_of(e)] = e.message
        else:
            flash(f"Credential {cred_id} saved.", "success")
            return redirect(url_for("web.credential", workspace=workspace, cred_id=cred_id))
    return render_template("credentials/edit.html", c=c, form=form,
                           errors=errors), 422 if errors else 200


@web.route("/credentials/<workspace>/<cred_id>/secret", methods=["GET", "POST"])
def update_secret(workspace: str, cred_id: str):
    """New values become version N+1; empty secret fields keep their current value."""
    need("editor", workspace)
    errors: dict[str, str] = {}
    with vault().factory() as s:
        c = svc.get_credential(s, workspace, cred_id)
    ctype = credtypes.get(c.type)
    if ctype.name == pairs.GENERIC:
        return pairs.update_pairs(workspace, cred_id)
    shown = dict(c.public or {})
    if request.method == "POST":
        try:
            values = forms.read_values(ctype, request.form, request.files,
                                       keep_blank_secrets=True)
            # only what changed: the audit record lists the fields this version changes
            values = {k: v for k, v in values.items()
                      if ctype.field(k).secret or v != (c.public or {}).get(k, "")}
            if not values:
                raise ValidationError("Nothing to save: enter a new value for at least one "
                                      "field.")
            with audit.unit(vault().factory) as s:
                c = svc.update_credential(s, vault().barrier, actor(), workspace=workspace,
                                          cred_id=cred_id, changes={"values": values})
        except ValidationError as e:
            known = {f.name for f in ctype.fields}
            errors[_field_of(e) if _field_of(e) in known else "_form"] = e.message
            shown = forms.shown_on_error(ctype, request.form, request.files)
        else:
            flash(f"Saved version {c.current_version} of {cred_id}.", "success")
            return redirect(url_for("web.credential", workspace=workspace, cred_id=cred_id))
    return render_template("credentials/secret.html", c=c, ctype=ctype, errors=errors,
                           labels=forms.labels(ctype),
                           widgets=forms.widgets(ctype, shown)), 422 if errors else 200


@web.route("/credentials/<workspace>/<cred_id>/delete", methods=["GET", "POST"])
def delete_credential(workspace: str, cred_id: str):
    """Confirm (GET, the no-script fallback of the dialog) or delete (POST)."""
    need("editor", workspace)
    if request.method == "GET":
        with vault().factory() as s:
            c = svc.get_credential(s, workspace, cred_id)
            refs = svc.references(s, workspace, cred_id)
        return render_template("credentials/delete.html", c=c, refs=refs, standalone=True)
    force = request.form.get("force") == "1"
    try:
        with audit.unit(vault().factory) as s:
            refs = svc.delete_credential(s, actor(), workspace=workspace, cred_id=cred_id,
                                         force=force)
    except CredentialInUse as e:
        flash(f"Not deleted: {e.message}. Only an admin can force it.", "error")
        return redirect(url_for("web.credential", workspace=workspace, cred_id=cred_id))
    note = f" {len(refs)} reference(s) are now broken." if refs else ""
    flash(f"Credential {cred_id} deleted.{note}", "success")
    return redirect(url_for("web.credentials"))


@web.post("/credentials/<workspace>/<cred_id>/test")
def test_credential(workspace: str, cred_id: str):
    """Start the type's connectivity check; the page shows ``Checking…`` until it is done."""
    need("editor", workspace)
    try:
        with vault().factory() as s:
            type_name = svc.get_credential(s, workspace, cred_id).type
        started = type_name in checks.CHECKS and \
            checking.start(vault(), actor(), workspace, cred_id)
    except NotFound:
        abort(404)
    except Busy as e:
        flash(e.message, "error")
    else:
        flash(f"There is no connectivity test for {type_name} credentials."
              if started is False else f"Testing {cred_id}…" if started
              else f"{cred_id} is already being tested.", "info")
    return redirect(url_for("web.credential", workspace=workspace, cred_id=cred_id))
