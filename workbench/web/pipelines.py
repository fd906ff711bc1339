"""Pipelines (from the reference index) and runs (from the run records)."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from .. import audit, background, references, serverruns, sourcelock, sources as srcs
from ..errors import Conflict, NotFound, ValidationError, WorkbenchError
from ..pipeline import records
from . import actor, default_scope, need, role_on, vault, visible_scopes, web


def _workspace() -> str:
    with vault().factory() as s:
        return default_scope(s)


def _workspaces(s) -> list[str]:
    return visible_scopes(s)


@web.get("/pipelines")
def pipelines():
    """Known pipelines with their source, commit, parse status and dangling references."""
    ws = _workspace()
    with vault().factory() as s:
        # sources first: one not syncing then has its whole sync in the reads that follow
        sources = srcs.list_sources(s, ws, sourcelock.busy(vault()))
        items = references.list_pipelines(s, ws)
        bad = references.dangling(s, ws)
        workspaces = _workspaces(s)
    return render_template("pipelines/list.html", items=items, dangling=bad, workspace=ws,
                           workspaces=workspaces, sources=sources,
                           syncing=any(x["syncing"] for x in sources))


SOURCE_LABELS = {"name": ("Name", "src-name"), "kind": ("Kind", "src-kind"),
                 "url": ("Repository URL or folder", "src-url"),
                 "branch": ("Branch", "src-branch"), "path_glob": ("Pipeline files", "src-glob"),
                 "credential_id": ("Clone with credential", "src-cred")}


@web.route("/pipelines/sources/new", methods=["GET", "POST"])
def new_source():
    """Add a git repository (editors) or a folder on the server (admins), then sync it."""
    need("editor")
    f = request.form
    form = {k: f.get(k, "").strip() for k in SOURCE_LABELS}
    form["workspace"] = (f.get("workspace") or _workspace()).strip()
    form["kind"] = form["kind"] or "git"
    errors: dict[str, str] = {}
    if request.method == "POST":
        try:
            with audit.unit(vault().factory) as s:
                src_id = srcs.add_source(
                    s, actor(), form["workspace"], kind=form["kind"], url=form["url"] or None,
                    branch=form["branch"] or "main",
                    path_glob=form["path_glob"] or "pipelines/*.yaml",
                    credential_id=form["credential_id"] or None, name=form["name"]).id
        except (ValidationError, Conflict, NotFound) as e:
            errors[getattr(e, "field", None) or
                   ("name" if isinstance(e, Conflict) else "credential_id"
                    if isinstance(e, NotFound) else "url")] = e.message
        else:
            background.start_sync(vault(), actor(), src_id)
            flash(f"Source {form['name']} added; its first sync has started.", "success")
            return redirect(url_for("web.pipelines", workspace=form["workspace"]))
    with vault().factory() as s:
        workspaces = _workspaces(s)
    return render_template("pipelines/new_source.html", form=form, errors=errors,
                           labels=SOURCE_LABELS, workspaces=workspaces,
                           clone_types=srcs.CLONE_TYPES), 422 if errors else 200


@web.post("/pipelines/sources/<int:source_id>/sync")
def sync_source(source_id: int):
    """Start syncing the source in the background (editors and admins); the page shows it."""
    need("editor")
    ws = request.form.get("workspace", "default")
    try:
        if background.start_sync(vault(), actor(), source_id):
            flash("Sync started. This page refreshes until it ends.", "success")
    except WorkbenchError as e:
        if e.status == 403:
            raise
        flash(e.message, "error")
    return redirect(url_for("web.pipelines", workspace=ws))


@web.get("/pipelines/<int:pipeline_id>")
def pipeline(pipeline_id: int):
    """One pipeline: its steps and the credentials each step uses (dangling ones flagged)."""
    ws = _workspace()
    with vault().factory() as s:
        p = references.get_pipeline(s, ws, pipeline_id)
        runs = [r for r in records.list_runs(s, ws, limit=200) if r.pipeline == p["name"]][:10]
        runs = [records.run_to_dict(r) for r in runs]
        workspaces = _workspaces(s)
    return render_template("pipelines/show.html", p=p, workspace=ws, runs=runs,
                           workspaces=workspaces)


@web.get("/runs")
def runs():
    """Runs, newest first, with per-step status."""
    ws = _workspace()
    page = min(max(1, request.args.get("page", 1, type=int) or 1), 10**6)
    with vault().factory() as s:
        total = records.count_runs(s, ws)
        page = min(page, max(1, -(-total // 50)))  # past the end: the last page
        items = [records.run_to_dict(r) for r in records.list_runs(s, ws, limit=50,
                                                                  offset=(page - 1) * 50)]
        workspaces = _workspaces(s)
    return render_template("runs/list.html", items=items, workspace=ws, page=page,
                           pages=max(1, -(-total // 50)), workspaces=workspaces)


@web.get("/runs/<run_id>")
def run(run_id: str):
    """One run: steps, their masked logs, and the credentials each step received."""
    with vault().factory() as s:
        found = records.get_run(s, run_id)
        if role_on(found.workspace) is None:  # a run of a scope it may not see: not found
            raise NotFound(f"no run {run_id!r}")
        r = records.run_to_dict(found, with_log=True)
        opened = s.get(serverruns.ServerRun, run_id)  # a run opened on the server, if it was
        server = opened and {**serverruns.run_to_dict(opened),
                             "grants": serverruns.grants_by_step(s, run_id),
                             "releases": serverruns.releases(s, run_id)}
    return render_template("runs/show.html", r=r, server=server)
