"""Keeping a credential's status conditions: on every save, and after a connectivity test."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import access, audit, checks, credtypes
from .audit import Actor
from .checks import Condition, now_iso
from .checks.deadline import DEADLINE
from .checks.verdict import CHECKING, ISSUES, WARNING, is_problem
from .crypto import Barrier
from .models import Credential, Workspace

RUNNING = "Checking"  # the condition type that marks a connectivity test in progress
STALE = timedelta(seconds=DEADLINE + 60)


def _static(ctype: credtypes.CredentialType, values: dict[str, Any]) -> list[Condition]:
    """Validation conditions, plus a warning for values too short to mask in logs."""
    conds = list(checks.validate(ctype.name, values))
    short = ctype.short_values(values)
    valid = next(c for c in conds if c.type == "Valid")
    if short and valid.status == "True":
        note = f"too short to mask safely in logs: {', '.join(short)}"
        plain = valid.reason == "WellFormed"
        conds = [c for c in conds if c.type != "Valid"] + [Condition(
            "Valid", "True", "ShortValue" if plain else valid.reason,
            note if plain else f"{valid.message}; {note}")]
    return conds


def summarize(conds: list[dict]) -> tuple[str, str]:
    """The table's summary: No issues found / Issues found / Warning / Not tested / Checking…

    A warning is not a failure: the credential works here but may not elsewhere or for long — a
    ``Valid`` condition that is True with a note (exec plugin, local file paths, a value too
    short to mask) or an expiry date that is near but not past.  A failure wins over a warning;
    a test in progress wins over both."""
    objs = [Condition(**c) for c in conds if c["type"] != RUNNING]
    status, message = checks.summary(objs, checking=len(objs) < len(conds))
    if status == CHECKING:
        return status, message
    problems = [c for c in objs if is_problem(c)]
    if problems and all(c.type == "Expiring" for c in problems):
        return WARNING, problems[0].message
    if status != ISSUES:
        warning = next((c for c in objs if c.type == "Valid" and c.status == "True"
                        and c.reason not in ("WellFormed", "Valid")), None)
        if warning:
            return WARNING, warning.message
    return status, message


def set_conditions(c: Credential, new: list[Condition]) -> None:
    """Merge conditions by type, keeping last_transition unless the status changed."""
    old = {d["type"]: d for d in c.conditions or []}
    merged = dict(old)
    for cond in new:
        d = cond.to_dict()
        prev = old.get(cond.type)
        d["last_transition"] = prev["last_transition"] if prev and prev["status"] == d["status"] \
            and prev.get("last_transition") else (d.get("last_transition") or now_iso())
        merged[cond.type] = d
    c.conditions = list(merged.values())
    c.status, c.status_message = summarize(c.conditions)


def on_save(c: Credential, ctype: credtypes.CredentialType, values: dict[str, Any]) -> None:
    """A new version: static conditions are recomputed, any reachability result is stale."""
    c.conditions = []
    set_conditions(c, _static(ctype, values))


def mark_running(c: Credential) -> None:
    """Show ``Checking…`` (on every instance) while a connectivity test runs."""
    c.conditions = [d for d in (c.conditions or []) if d["type"] != RUNNING] + [Condition(
        RUNNING, "True", "Running", "a connectivity test is running", now_iso()).to_dict()]
    c.status, c.status_message = summarize(c.conditions)


def running_since(c: Credential) -> datetime | None:
    """When the connectivity test now running started; None when none runs (or the process
    that ran it died: a mark older than the deadline and a minute)."""
    d = next((d for d in c.conditions or [] if d["type"] == RUNNING), None)
    if d is None:
        return None
    since = datetime.fromisoformat(d["last_transition"])
    return since if datetime.now(timezone.utc) - since < STALE else None


def verify_credential(s: Session, barrier: Barrier, actor: Actor, workspace: str, cred_id: str,
                      timeout: float = DEADLINE) -> Credential:
    """Test the credential against the target stored with it (never one from the request)."""
    from .credentials import current_values, get_credential
    access.require_on(s, actor, "editor", "credential.verify", workspace=workspace,
                      target=cred_id)
    c = get_credential(s, workspace, cred_id)
    _, values = current_values(s, barrier, c)
    return record_check(s, actor, c, values, checks.verify(c.type, values, timeout))


def record_check(s: Session, actor: Actor, c: Credential, values: dict[str, Any],
                 outcome: Condition) -> Credential:
    """Store a connectivity test's outcome (and the static conditions) as ``c``'s status."""
    ctype = credtypes.get(c.type)
    workspace, cred_id = c.workspace.name, c.cred_id
    c.conditions = [d for d in (c.conditions or []) if d["type"] == "Reachable"]
    set_conditions(c, _static(ctype, values) + [outcome])
    audit.record(s, actor, "credential.verify", workspace=workspace, target=cred_id,
                 details={"status": c.status, "reason": next(
                     (d["reason"] for d in c.conditions if d["type"] == "Reachable"), "")})
    return c


def recheck(s: Session, barrier: Barrier, actor: Actor, workspace: str, c: Credential) -> None:
    """Recompute the static conditions (validity, expiry) from the current values."""
    from .credentials import current_values
    _, values = current_values(s, barrier, c)
    set_conditions(c, _static(credtypes.get(c.type), values))
    audit.record(s, actor, "credential.check", workspace=workspace, target=c.cred_id,
                 details={"status": c.status})


def verify_all(factory, barrier: Barrier, actor: Actor, workspace: str | None = None,
               timeout: float = 10.0) -> dict[str, int]:
    """Re-check every credential (for cron); one transaction per credential."""
    with factory() as s:
        stmt = select(Workspace.name, Credential.cred_id).join(
            Credential, Credential.workspace_id == Workspace.id)
        if workspace:
            stmt = stmt.where(Workspace.name == workspace)
        targets = s.execute(stmt.order_by(Workspace.name, Credential.cred_id)).all()
    counts: dict[str, int] = {}
    for ws, cid in targets:
        with audit.unit(factory) as s:
            status = verify_credential(s, barrier, actor, ws, cid, timeout).status
        counts[status] = counts.get(status, 0) + 1
    return counts
