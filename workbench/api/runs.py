"""Run records: runners post them, people read them (logs are masked before they arrive)."""
from __future__ import annotations

from flask import Response, jsonify

from .. import serverruns
from ..audit import unit
from ..errors import NotFound, PermissionDenied
from ..pipeline import records
from . import actor, api, body, vault, workspace
from .credentials import int_arg


@api.post("/runs")
def store_run():
    """Runner tokens open a run of an indexed pipeline (source, pipeline or path, ref, commit,
    event, fork: answers its run token, once), or record a finished run (a body with
    ``status``: steps, exit codes, masked logs), which closes the run opened for it."""
    me = actor()
    record = body()
    if "status" not in record:
        with unit(vault().factory) as s:
            run, token, grants = serverruns.open_run(s, me, workspace(), record)
            out = serverruns.run_to_dict(run, token)
            out["grants"] = serverruns.grants_by_step(s, run.id, grants)
        resp = jsonify(out)
        resp.headers["Cache-Control"] = "no-store"
        return resp, 201
    if me.role != "runner" or me.workspace != workspace():
        raise PermissionDenied("only a runner token of this workspace can record runs")
    # who triggered it is what the token says, not what the runner claims
    record.update(trigger_runner=me.name, trigger_user=None)
    with unit(vault().factory) as s:
        run = records.store_run(s, workspace(), record)
        serverruns.close_run(s, me, workspace(), run.id)
        return jsonify(records.run_to_dict(run)), 201


def _read_access():
    me = actor()
    if me.role == "runner" and me.workspace != workspace():
        raise PermissionDenied(f"this runner token is scoped to workspace {me.workspace!r}")


@api.get("/runs")
def list_runs():
    """Runs, newest first."""
    _read_access()
    with vault().factory() as s:
        runs = records.list_runs(s, workspace(), int_arg("limit", 50, 1, 500),
                                 int_arg("offset", 0))
        return jsonify({"items": [records.run_to_dict(r) for r in runs],
                        "total": records.count_runs(s, workspace())})


@api.get("/runs/<run_id>")
def get_run(run_id: str):
    """One run with its steps."""
    _read_access()
    with vault().factory() as s:
        return jsonify(records.run_to_dict(records.get_run(s, run_id, workspace())))


@api.get("/runs/<run_id>/grants")
def run_grants(run_id: str):
    """A run opened on the server: what each step binds, the rules withholding any, and
    which credentials each step attempt received."""
    _read_access()
    with vault().factory() as s:
        run = s.get(serverruns.ServerRun, run_id)
        if run is None or run.workspace != workspace():
            raise NotFound(f"no run {run_id!r} was opened on the server")
        return jsonify({**serverruns.run_to_dict(run),
                        "grants": serverruns.grants_by_step(s, run.id),
                        "releases": serverruns.releases(s, run.id)})


@api.get("/runs/<run_id>/log")
def run_log(run_id: str):
    """The masked log of every step, as text."""
    _read_access()
    with vault().factory() as s:
        run = records.get_run(s, run_id, workspace())
        text = "".join(f"--- step {st.name}: {st.status} (exit {st.exit_code})\n{st.log}"
                       for st in run.steps)
    return Response(text, mimetype="text/plain")
