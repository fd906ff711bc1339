"""Keeping a credential's status conditions: on every save, and after a connectivity test."""
from __future__ import annotations

from typing import Any

from . import checks, credtypes
from .checks import Condition, now_iso
from .models import Credential


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
