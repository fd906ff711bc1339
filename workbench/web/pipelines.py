"""Pipelines (from the reference index) and runs (from the run records)."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import select

from .. import background, references, sourcelock, sources as srcs
from ..accounts import require
from ..errors import WorkbenchError
from ..models import Workspace
from ..pipeline import records
from . import actor, vault, web


def _workspace() -> str:
    return request.args.get("workspace", "default")[:63]


def _workspaces(s) -> list[str]:
    return list(s.scalars(select(Workspace.name).order_by(Workspace.name)))


@web.get("/pipelines")
def pipelines():
    """Known pipelines with their source, commit, parse status and dangling references."""
    ws = _workspace()
    with vault().factory() as s:
        # sources first: one not syncing then has its whole sync in the reads that follow
        sources = srcs.list_sources(s, ws, sourcelock.root(vault().settings))
        items = references.list_pipelines(s, ws)
        bad = references.dangling(s, ws)
        workspaces = _workspaces(s)
    return render_template("pipelines/list.html", items=items, dangling=bad, workspace=ws,
                           workspaces=workspaces, sources=sources,
                           syncing=any(x["syncing"] for x in sources))


@web.post("/pipelines/sources/<int:source_id>/sync")
def sync_source(source_id: int):
    """Start syncing the source in the background (editors and admins); the page shows it."""
    require(actor(), "editor")
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
    return render_template("pipelines/show.html", p=p, workspace=ws, runs=runs)


@web.get("/runs")
def runs():
    """Runs, newest first, with per-step status."""
    ws = _workspace()
    page = min(max(1, request.args.get("page", 1, type=int) or 1), 10**6)
    with vault().factory() as s:
        items = [records.run_to_dict(r) for r in records.list_runs(s, ws, limit=50,
                                                                  offset=(page - 1) * 50)]
        total = records.count_runs(s, ws)
        workspaces = _workspaces(s)
    return render_template("runs/list.html", items=items, workspace=ws, page=page,
                           pages=max(1, -(-total // 50)), workspaces=workspaces)


@web.get("/runs/<run_id>")
def run(run_id: str):
    """One run: steps, their masked logs, and the credentials each step received."""
    with vault().factory() as s:
        r = records.run_to_dict(records.get_run(s, run_id), with_log=True)
    return render_template("runs/show.html", r=r)
