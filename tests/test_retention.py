"""Run history retention: old finished runs and closed server runs go, with their steps, logs,
uses, grants and releases; recent and running ones stay; the audit log keeps everything."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from workbench import jobs, retention
from workbench.audit import SYSTEM, Actor
from workbench.db import iso, utcnow
from workbench.errors import PermissionDenied, ValidationError
from workbench.models import AuditEvent
from workbench.pipeline import records
from workbench.serverruns import RunGrant, ServerRun, StepRelease


def _record(s, run_id: str, started, finished):
    records.store_run(s, "default", {
        "id": run_id, "status": "success" if finished else "running", "pipeline": "p",
        "started_at": iso(started), "finished_at": iso(finished) if finished else None,
        "steps": [{"name": "build", "status": "success", "log": "built ****"}],
        "uses": [{"step": "build", "credential_id": "tok", "version": 1}]})


def _server_run(s, run_id: str, opened, closed):
    s.add(ServerRun(id=run_id, workspace="default", source="r", pipeline_id=1, pipeline="p",
                    path="pipelines/p.yaml", runner="ci", token_hash=run_id.ljust(64, "0"),
                    opened_at=opened, expires_at=opened + timedelta(hours=1),
                    closed_at=closed))
    s.flush()
    s.add(RunGrant(run_id=run_id, step="build", credential_id="tok", version=1))
    s.add(StepRelease(run_id=run_id, step="build", attempt=1, credentials="tok@1"))


@pytest.fixture
def history(vault):
    now = utcnow()
    old, recent = now - timedelta(days=100), now - timedelta(days=3)
    with vault.factory.begin() as s:
        _record(s, "old-done", old, old + timedelta(minutes=5))
        _record(s, "old-never-finished", old, None)  # its runner was killed
        _record(s, "recent-done", recent, recent + timedelta(minutes=5))
        _record(s, "running-now", now - timedelta(minutes=1), None)
        _server_run(s, "old-closed", old, old + timedelta(minutes=5))
        _server_run(s, "old-expired", old, None)
        _server_run(s, "recent-closed", recent, recent)
        _server_run(s, "open-now", now, None)
    return vault


def _left(vault) -> dict:
    with vault.factory() as s:
        return {"runs": sorted(s.scalars(select(records.Run.id))),
                "server_runs": sorted(s.scalars(select(ServerRun.id))),
                "steps": s.scalar(select(func.count()).select_from(records.StepRun)),
                "uses": s.scalar(select(func.count()).select_from(records.CredentialUse)),
                "grants": s.scalar(select(func.count()).select_from(RunGrant)),
                "releases": s.scalar(select(func.count()).select_from(StepRelease))}


def test_prune_deletes_old_history_with_its_rows_and_keeps_the_rest(history):
    with history.factory() as s:
        assert retention.count_old(s, 90) == {"runs": 2, "server_runs": 2}
    with history.factory.begin() as s:
        out = retention.prune(s, SYSTEM, 90)
    assert (out["runs"], out["server_runs"]) == (2, 2)
    assert _left(history) == {"runs": ["recent-done", "running-now"],
                              "server_runs": ["open-now", "recent-closed"],
                              "steps": 2, "uses": 2, "grants": 2, "releases": 2}
    with history.factory() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "runs.prune")).one()
    assert (ev.details["runs"], ev.details["server_runs"]) == (2, 2)
    with history.factory.begin() as s:  # nothing more to do: nothing more audited
        assert retention.prune(s, SYSTEM, 90)["runs"] == 0
    with history.factory() as s:
        assert s.scalar(select(func.count()).where(AuditEvent.action == "runs.prune")) == 1


def test_the_periodic_tick_prunes_by_the_configured_retention(history):
    history.settings.run_retention_days = 0  # kept for ever: the tick deletes nothing
    assert jobs.tick(history)["pruned_runs"] == 0
    assert len(_left(history)["runs"]) == 4
    history.settings.run_retention_days = 90
    assert jobs.tick(history)["pruned_runs"] == 4
    assert _left(history)["runs"] == ["recent-done", "running-now"]


def test_only_an_instance_admin_prunes_and_the_age_must_be_sane(history):
    with pytest.raises(PermissionDenied):
        with history.factory.begin() as s:
            retention.prune(s, Actor("ed", role="editor"), 90)
    for bad in (0, -1, 10**6, "90", True):
        with pytest.raises(ValidationError):
            with history.factory.begin() as s:
                retention.prune(s, SYSTEM, bad)
    assert len(_left(history)["runs"]) == 4


def test_cli_dry_run_counts_and_prune_deletes(history, app):
    from workbench.cli.history import run
    runner = app.test_cli_runner()
    dry = runner.invoke(run, ["prune", "--older-than", "30", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output) == {"runs": 2, "server_runs": 2, "dry_run": True}
    assert len(_left(history)["runs"]) == 4
    done = runner.invoke(run, ["prune", "--older-than", "30"])
    assert done.exit_code == 0, done.output
    assert "deleted 2 run(s) and 2 server run(s) older than 30 days" in done.output
    assert _left(history)["server_runs"] == ["open-now", "recent-closed"]
