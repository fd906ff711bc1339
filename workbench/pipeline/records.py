"""Run records: runs, their steps (masked logs) and credential uses; models and services."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import (DateTime, Float, ForeignKey, Index, Integer, String, Text, func,
                        select)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from .. import scopes
from ..db import Base, aware, iso, utcnow
from ..errors import NotFound, ValidationError

RUN_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
MAX_LOG_CHARS = 1024 * 1024  # per step; the tail is kept, it holds the failure
RUN_STATUSES = ("success", "failed", "cancelled", "error", "running")
STEP_STATUSES = ("success", "failed", "timeout", "cancelled", "error", "skipped")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(64), index=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    file: Mapped[str] = mapped_column(String(512), default="")
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    trigger_user: Mapped[str | None] = mapped_column(String(128), nullable=True)
    trigger_runner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    steps: Mapped[list["StepRun"]] = relationship(
        back_populates="run", order_by="StepRun.position", cascade="all, delete-orphan")
    uses: Mapped[list["CredentialUse"]] = relationship(
        back_populates="run", cascade="all, delete-orphan")


# a run's age for retention (``retention.prune``, every minute in the job engine): its finish,
# else its start; without it each prune reads the whole table
Index("ix_runs_age", func.coalesce(Run.finished_at, Run.started_at))


class StepRun(Base):
    __tablename__ = "step_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")  # masked before it ever gets here
    run: Mapped[Run] = relationship(back_populates="steps")


class CredentialUse(Base):
    """A credential version handed to a step; feeds the reference index's "last used"."""

    __tablename__ = "credential_uses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    workspace: Mapped[str] = mapped_column(String(64))  # the run's
    # the scope whose credential the step got: the run's own, or one above it that the run
    # inherits from; that credential's page lists the run
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    step: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[str] = mapped_column(String(63), index=True)
    version: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    run: Mapped[Run] = relationship(back_populates="uses")


def store_run(session: Session, workspace: str, record: dict) -> Run:
    """Insert (or replace) the run described by ``record`` as ``runner.run_pipeline`` builds it."""
    if not isinstance(record, dict):
        raise ValidationError("a run record must be an object", field="record")
    run_id, status = str(record.get("id") or ""), str(record.get("status") or "")
    if not RUN_ID.match(run_id):
        raise ValidationError("a run record needs an id of 1-36 letters, digits or '-'",
                              field="id")
    if status not in RUN_STATUSES:
        raise ValidationError(f"unknown run status {status[:16]!r}", field="status")
    old = session.get(Run, run_id)
    if old is not None:
        if old.workspace != workspace:
            raise NotFound(f"no run {run_id!r} in workspace {workspace!r}")
        session.delete(old)
        session.flush()
    try:
        run = _build(workspace, run_id, status, record)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValidationError("malformed run record: steps need name and status, uses need "
                              "step, credential_id and version", field="steps") from None
    # which scope's credential each got, as the run's scope sees it now: the record comes from
    # the runner right after the steps, and it only knows the IDs it resolved
    owners = {cid: scopes.owner(session, workspace, cid) or workspace  # or: gone since
              for cid in {u.credential_id for u in run.uses}}
    for use in run.uses:
        use.owner = owners[use.credential_id]
    session.add(run)
    session.flush()
    return run


def _build(workspace: str, run_id: str, status: str, record: dict) -> Run:
    source = record.get("source")
    run = Run(id=run_id, workspace=workspace, pipeline=_text(record.get("pipeline"), 128),
              file=_text(record.get("file"), 512),
              source=source[:MAX_LOG_CHARS] if isinstance(source, str) else None,
              status=status, message=_text(record.get("message"), 4000),
              started_at=_time(record.get("started_at")) or utcnow(),
              finished_at=_time(record.get("finished_at")),
              trigger_user=_text(record.get("trigger_user"), 128) or None,
              trigger_runner=_text(record.get("trigger_runner"), 128) or None)
    for i, s in enumerate(record.get("steps") or []):
        if s["status"] not in STEP_STATUSES:
            raise ValidationError(f"unknown step status {str(s['status'])[:16]!r}",
                                  field="steps.status")
        code = s.get("exit_code")
        run.steps.append(StepRun(
            position=i, name=_text(s["name"], 64), status=s["status"],
            exit_code=None if code is None else int(code),
            duration=float(s.get("duration") or 0.0), message=_text(s.get("message"), 4000),
            log=_text(s.get("log"), None)[-MAX_LOG_CHARS:]))
    for u in record.get("uses") or []:
        run.uses.append(CredentialUse(
            workspace=workspace, step=_text(u["step"], 64),
            credential_id=_text(u["credential_id"], 63), version=int(u["version"]),
            used_at=_time(u.get("used_at")) or utcnow()))
    return run


def _text(value, limit: int | None) -> str:
    text = "" if value is None else str(value)
    return text if limit is None else text[:limit]


def list_runs(session: Session, workspace: str, limit: int = 50, offset: int = 0) -> list[Run]:
    """Newest first."""
    q = (select(Run).where(Run.workspace == workspace)
         .order_by(Run.started_at.desc(), Run.id).limit(max(1, min(limit, 500)))
         .offset(max(0, offset)))
    return list(session.scalars(q))


def count_runs(session: Session, workspace: str) -> int:
    return session.scalar(select(func.count()).select_from(Run)
                          .where(Run.workspace == workspace)) or 0


def get_run(session: Session, run_id: str, workspace: str | None = None) -> Run:
    run = session.get(Run, run_id)
    if run is None or (workspace is not None and run.workspace != workspace):
        raise NotFound(f"no run {run_id!r}")
    return run


def run_to_dict(run: Run, with_log: bool = False) -> dict[str, Any]:
    steps = []
    for s in run.steps:
        d = {"name": s.name, "status": s.status, "exit_code": s.exit_code,
             "duration": s.duration, "message": s.message}
        if with_log:
            d["log"] = s.log
        steps.append(d)
    return {
        "id": run.id, "workspace": run.workspace, "pipeline": run.pipeline, "file": run.file,
        "status": run.status, "message": run.message,
        "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "trigger_user": run.trigger_user, "trigger_runner": run.trigger_runner, "steps": steps,
        "uses": [{"step": u.step, "credential_id": u.credential_id, "version": u.version,
                  "used_at": iso(u.used_at)} for u in run.uses],
    }


def _time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return aware(value)
    try:
        return aware(datetime.fromisoformat(str(value)))
    except ValueError:
        raise ValidationError("times must be ISO-8601", field="started_at") from None
