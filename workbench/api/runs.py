"""Run records: runners post them, people read them (logs are masked before they arrive)."""
from __future__ import annotations

from flask import Response, jsonify

from ..audit import unit
from ..errors import PermissionDenied
from ..pipeline import records
from . import actor, api, body, vault, workspace
from .credentials import int_arg


@api.post("/runs")
def store_run():
    """Runner tokens record a finished run (status per step, exit codes, masked logs)."""
    me = actor()
    if me.role != "runner" or me.workspace != workspace():
        raise PermissionDenied("only a runner token of this workspace can record runs")
    record = body()
    # who triggered it is what the token says, not what the runner claims
    record.update(trigger_runner=me.name, trigger_user=None)
    with unit(vault().factory) as s:
        run = records.store_run(s, workspace(), record)
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


@api.get("/runs/<run_id>/log")
def run_log(run_id: str):
    """The masked log of every step, as text."""
    _read_access()
    with vault().factory() as s:
        run = records.get_run(s, run_id, workspace())
        text = "".join(f"--- step {st.name}: {st.status} (exit {st.exit_code})\n{st.log}"
                       for st in run.steps)
    return Response(text, mimetype="text/plain")
