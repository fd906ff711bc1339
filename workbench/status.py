"""Keeping a credential's status conditions: on every save, and after a connectivity test."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit, checks, credtypes
from .accounts import require
from .audit import Actor
from .checks import Condition, now_iso
from .crypto import Barrier
from .models import Credential, Workspace


def _static(ctype: credtypes.CredentialType, values: dict[str, Any],
            problems: list[credtypes.Problem]) -> list[Condition]:
    validate = getattr(checks, "validate", None)
    conds = list(validate(ctype.name, values)) if validate else [
        Condition("Valid", "True", "Valid", "well-formed")]
    notes = [p.message for p in problems]
    short = ctype.short_values(values)
    if short:
        notes.append(f"too short to mask safely in logs: {', '.join(short)}")
    if notes:
        conds = [c for c in conds if c.type != "Valid"] + [Condition(
            "Valid", next((c.status for c in conds if c.type == "Valid"), "True"),
            problems[0].reason if problems else "ShortValue", "; ".join(notes))]
    return conds


def summarize(conds: list[dict]) -> tuple[str, str]:
    """The table's summary: No issues found / Issues found / Not tested / Checking…"""
    summary = getattr(checks, "summary", None)
    if summary:
        return summary([Condition(**c) for c in conds])
    bad = [c for c in conds if c["status"] == "False" or c["type"] == "Expiring" and
           c["status"] == "True" or c["reason"] in ("ExecPlugin", "LocalFilePath", "ShortValue")]
    if bad:
        return "Issues found", bad[0]["message"]
    if not any(c["type"] == "Reachable" for c in conds):
        return "Not tested", ""
    return "No issues found", ""


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


def on_save(c: Credential, ctype: credtypes.CredentialType, values: dict[str, Any],
            problems: list[credtypes.Problem]) -> None:
    """A new version: static conditions are recomputed, any reachability result is stale."""
    c.conditions = [d for d in (c.conditions or []) if d["type"] not in ("Reachable",)]
    c.conditions = [d for d in c.conditions if d["type"] not in ("Valid", "Expiring")]
    set_conditions(c, _static(ctype, values, problems))


def _run_check(type_name: str, values: dict[str, Any], timeout: float) -> Condition:
    verify = getattr(checks, "verify", None)
    if verify:
        return verify(type_name, values, timeout)
    return Condition("Reachable", "Unknown", "NotTestable",
                     f"{type_name} credentials have no connectivity test")


def verify_credential(s: Session, barrier: Barrier, actor: Actor, workspace: str, cred_id: str,
                      timeout: float = 10.0) -> Credential:
    """Test the credential against the target stored with it (never one from the request)."""
    from .credentials import current_values, get_credential
    require(actor, "editor", "credential.verify", workspace=workspace, target=cred_id)
    c = get_credential(s, workspace, cred_id)
    _, values = current_values(s, barrier, c)
    ctype = credtypes.get(c.type)
    _, problems = ctype.validate(values)
    c.conditions = [d for d in (c.conditions or []) if d["type"] == "Reachable"]
    set_conditions(c, _static(ctype, values, problems) + [_run_check(c.type, values, timeout)])
    audit.record(s, actor, "credential.verify", workspace=workspace, target=cred_id,
                 details={"status": c.status, "reason": next(
                     (d["reason"] for d in c.conditions if d["type"] == "Reachable"), "")})
    return c


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
