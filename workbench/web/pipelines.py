"""Pipelines (from the reference index) and runs (from the run records)."""
from __future__ import annotations

from flask import render_template, request
from sqlalchemy import select

from ..errors import NotFound
from ..models import Workspace
from ..pipeline import records
from . import references, vault, web


def _workspace() -> str:
    return request.args.get("workspace", "default")[:63]


def _workspaces(s) -> list[str]:
    return list(s.scalars(select(Workspace.name).order_by(Workspace.name)))


def _as_dict(obj) -> dict:
    """Index rows may be dicts or objects; templates read them as dicts."""
    if isinstance(obj, dict):
        return obj
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


@web.get("/pipelines")
def pipelines():
    """Known pipelines with their source, commit, status and dangling references."""
    ws = _workspace()
    refs = references()
    items, dangling = [], {}
    with vault().factory() as s:
        if refs is not None:
            items = [_as_dict(p) for p in refs.list_pipelines(s, ws)]
            for d in refs.dangling(s, ws):
                d = _as_dict(d)
                key = d.get("pipeline_id") or d.get("pipeline")
                dangling.setdefault(key, []).append(d)
        workspaces = _workspaces(s)
    return render_template("pipelines/list.html", items=items, dangling=dangling, workspace=ws,
                           workspaces=workspaces, refs_available=refs is not None)


@web.get("/pipelines/<int:pipeline_id>")
def pipeline(pipeline_id: int):
    """One pipeline: its steps and the credentials each step uses."""
    ws = _workspace()
    refs = references()
    if refs is None:
        raise NotFound("the reference index is not installed")
    with vault().factory() as s:
        p = _as_dict(refs.get_pipeline(s, ws, pipeline_id))
        dangling = [_as_dict(d) for d in refs.dangling(s, ws)]
    mine = {(d.get("step"), d.get("credential") or d.get("credential_id") or d.get("id"))
            for d in dangling if (d.get("pipeline_id") or d.get("pipeline")) in
            (pipeline_id, p.get("name"))}
    return render_template("pipelines/show.html", p=p, workspace=ws, dangling=mine)


@web.get("/runs")
def runs():
    """Runs, newest first, with per-step status."""
    ws = _workspace()
    page = max(1, request.args.get("page", 1, type=int) or 1)
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
