"""Runs opened on the server: a run token per run, and what each step of it may receive.

A runner opens a run of an *indexed* pipeline (``POST /api/v1/runs``).  The server plans it
from the reference index: one grant per credential each step binds, with the release rules
(``policy``) already decided for the run's ref and event.  The run token it answers is bound
to the run (and so to its workspace, pipeline and commit), stored hashed, short-lived, and dead
once the run is closed.  ``stepresolve`` releases the grants of one step per request."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import (Boolean, DateTime, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, bindparam, func, insert, select)
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import audit, policy
from .audit import Actor
from .db import Base, aware, iso, utcnow
from .errors import Conflict, NotFound, PermissionDenied, ValidationError
from .models import Credential
from .references import PipelineReference
from .scopes import nearest

PREFIX = "wbrun_"
DEFAULT_TTL = timedelta(hours=1)
MAX_ATTEMPTS = 3
TS = DateTime(timezone=True)
OPEN_FIELDS = ("source", "pipeline", "path", "ref", "commit", "event", "fork")


class ServerRun(Base):
    """A run opened by a runner; ``token_hash`` is the SHA-256 of its run token."""

    __tablename__ = "server_runs"
    __table_args__ = (Index("ix_server_runs_workspace", "workspace", "opened_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    source: Mapped[str] = mapped_column(String(100))
    pipeline_id: Mapped[int] = mapped_column(Integer)
    pipeline: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(1000))
    steps: Mapped[str] = mapped_column(Text, default="")  # step names, "\n"-joined
    id_tokens: Mapped[str | None] = mapped_column(Text, nullable=True)  # as in the index
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ref: Mapped[str] = mapped_column(String(255), default="")
    event: Mapped[str] = mapped_column(String(32), default="")
    fork: Mapped[bool] = mapped_column(Boolean, default=False)
    runner: Mapped[str] = mapped_column(String(100))  # the runner token that opened it
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    opened_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TS)
    closed_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)


# its age for retention: closed, or past its expiry (see ``retention``)
Index("ix_server_runs_age", func.coalesce(ServerRun.closed_at, ServerRun.expires_at))


class RunGrant(Base):
    """One credential one step of the run binds; ``rule`` is set when a release rule keeps
    it from this run (its refusal ``message`` names the rule)."""

    __tablename__ = "run_grants"
    __table_args__ = (Index("ix_run_grants_step", "run_id", "step"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("server_runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[str] = mapped_column(String(63))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # pinned, or current
    rule: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class StepRelease(Base):
    """A step attempt that received its credentials: at most one per (run, step, attempt)."""

    __tablename__ = "step_releases"
    __table_args__ = (UniqueConstraint("run_id", "step", "attempt", name="uq_step_release"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("server_runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    credentials: Mapped[str] = mapped_column(Text, default="")  # "id@version", "\n"-joined
    released_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _text(data: dict, key: str, limit: int, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > limit:
        raise ValidationError(f"{key} must be text of at most {limit} characters", field=key)
    return value


def open_run(s: Session, actor: Actor, workspace: str, data: dict
             ) -> tuple[ServerRun, str, list[RunGrant]]:
    """Plan a run of an indexed pipeline and issue its run token (shown once)."""
    if actor.role != "runner" or actor.workspace != workspace:
        raise audit.refused(PermissionDenied("only a runner token of this workspace can open "
                                             "runs"), actor, "run.open", workspace=workspace)
    unknown = set(data) - set(OPEN_FIELDS)
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    source, pipeline = _text(data, "source", 100), _text(data, "pipeline", 100)
    path, ref = _text(data, "path", 1000), _text(data, "ref", 255)
    commit, event = _text(data, "commit", 64), _text(data, "event", 32, "push")
    fork = data.get("fork", False)
    if not isinstance(fork, bool):
        raise ValidationError("fork is true or false", field="fork")
    if not pipeline and not path:
        raise ValidationError("name the pipeline (and its source or path)", field="pipeline")
    if not policy.EVENT.match(event):
        raise ValidationError("event is a lowercase name such as push or pull_request",
                              field="event")
    p = policy.find_pipeline(s, workspace, pipeline, source=source or None, path=path or None)
    what = f"{source + ':' if source else ''}{path or pipeline}"[:200]
    if p is None:
        raise audit.refused(NotFound(
            f"pipeline {what!r} is not indexed in workspace {workspace!r}: add its source and "
            "sync it, or resolve ad hoc with a runner token that allows the credentials",
            indexed=False), actor, "run.open", workspace=workspace, target=what,
            details={"rule": "not-indexed"})
    if p.error is not None:
        raise Conflict(f"pipeline {p.path!r} of source {p.source!r} does not parse at the "
                       f"indexed commit: {p.error[:300]}")
    if commit and p.commit and commit != p.commit:
        raise Conflict(f"pipeline {p.path!r} is indexed at commit {p.commit[:12]}, not "
                       f"{commit[:12]}: sync source {p.source!r} first", indexed_commit=p.commit)
    now = utcnow()
    ttl = DEFAULT_TTL
    if p.run_timeout:  # no run of this pipeline can last longer than its steps' timeouts
        ttl = min(ttl, timedelta(seconds=p.run_timeout))
    secret = PREFIX + secrets.token_urlsafe(32)
    run = ServerRun(id=str(uuid.uuid4()), workspace=workspace, source=p.source,
                    pipeline_id=p.id, pipeline=p.name, path=p.path, steps=p.steps or "",
                    id_tokens=p.id_tokens,
                    commit=p.commit or (commit or None), ref=ref, event=event, fork=fork,
                    runner=actor.name, token_hash=hash_token(secret), opened_at=now,
                    expires_at=now + ttl, closed_at=None)
    patterns = None  # read only when a credential is protected
    grants = []
    for r in s.execute(_REFS_WITH_RULES, {"workspace": workspace, "pipeline_id": p.id}):
        if r.protected and patterns is None:
            patterns = policy.protected_refs(s, p.source_id)
        no = policy.refusal(r.credential_id, bool(r.protected), r.exclude_events or "",
                            source=p.source, patterns=patterns or [], ref=ref, event=event,
                            fork=fork)
        grants.append(RunGrant(run_id=run.id, step=r.step, credential_id=r.credential_id,
                               version=r.version, rule=no and no[0], message=no and no[1]))
    # Core inserts: the unit of work's bookkeeping cost more than these three statements
    s.execute(insert(ServerRun.__table__), [_columns(run)])
    if grants:
        s.execute(insert(RunGrant.__table__), [_columns(g) for g in grants])
    audit.record(s, actor, "run.open", workspace=workspace, target=run.id, details={
        "pipeline": p.name, "source": p.source, "commit": run.commit, "ref": ref,
        "event": event, "fork": fork, "grants": len(grants),
        "withheld": sorted({f"{g.step}:{g.credential_id} ({g.rule})" for g in grants
                            if g.rule})})
    return run, secret, grants


def _refs_with_rules_query():
    """The pipeline's references in order, each with the release rules of the credential a
    run in the workspace gets (its own, or the nearest inherited one: its rules go with it)."""
    R, CP = PipelineReference, policy.CredentialPolicy
    return (select(R.step, R.credential_id, R.version, CP.protected, CP.exclude_events)
            .select_from(R)
            .outerjoin(Credential, Credential.pk == nearest(R.credential_id))
            .outerjoin(CP, CP.credential_pk == Credential.pk)
            .where(R.pipeline_id == bindparam("pipeline_id")).order_by(R.position))


_REFS_WITH_RULES = _refs_with_rules_query()  # built once: a recursive CTE costs Python to build


def _columns(obj) -> dict:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.c if c.key != "id"
            or getattr(obj, "id", None) is not None}


def close_run(s: Session, actor: Actor, workspace: str, run_id: str) -> ServerRun | None:
    """End a run: its token stops working.  None when no such run was opened on the server."""
    run = s.get(ServerRun, run_id)
    if run is None or run.workspace != workspace:
        return None
    if run.closed_at is None:
        run.closed_at = utcnow()
        audit.record(s, actor, "run.close", workspace=workspace, target=run.id,
                     details={"pipeline": run.pipeline})
    return run


def run_to_dict(run: ServerRun, token: str | None = None) -> dict:
    out = {"id": run.id, "workspace": run.workspace, "source": run.source,
           "pipeline": run.pipeline, "path": run.path, "commit": run.commit, "ref": run.ref,
           "event": run.event, "fork": run.fork, "runner": run.runner,
           "steps": [n for n in run.steps.split("\n") if n],
           "opened_at": iso(run.opened_at), "expires_at": iso(aware(run.expires_at)),
           "closed_at": iso(run.closed_at), "max_attempts": MAX_ATTEMPTS}
    if token is not None:
        out["token"] = token
    return out


def grants_by_step(s: Session, run_id: str, grants: list[RunGrant] | None = None
                   ) -> dict[str, list[dict]]:
    """step → the credentials it binds in this run (``grants``, or read), and the rule
    withholding any."""
    if grants is None:
        grants = s.scalars(select(RunGrant).where(RunGrant.run_id == run_id)
                           .order_by(RunGrant.id))
    out: dict[str, list[dict]] = {}
    for g in grants:
        out.setdefault(g.step, []).append({"credential_id": g.credential_id,
                                           "version": g.version, "rule": g.rule})
    return out


def releases(s: Session, run_id: str) -> list[dict]:
    """Which credentials (and versions) each step attempt received, in order."""
    q = select(StepRelease).where(StepRelease.run_id == run_id).order_by(StepRelease.id)
    return [{"step": r.step, "attempt": r.attempt, "released_at": iso(r.released_at),
             "credentials": [c for c in r.credentials.split("\n") if c]} for r in s.scalars(q)]
