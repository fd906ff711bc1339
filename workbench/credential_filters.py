"""Filters on any column of the credentials table, as conditions for ``list_credentials``."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Mapping

from sqlalchemy import String, and_, cast, exists, func, not_, or_

from .errors import ValidationError
from .models import Credential, Workspace
from .pipeline.records import CredentialUse
from .references import PipelineReference, getting

# filter name → the column whose text it searches (case-insensitive "contains")
TEXT = {"id": Credential.cred_id, "name": Credential.name,
        "description": cast(Credential.description, String),
        "created_by": Credential.created_by}
CHOICES = {"used_by": ("used", "unused"), "last_used": ("ever", "never")}
DATES = ("created_from", "created_to")
NAMES = (*TEXT, *CHOICES, *DATES)


def _referenced():
    """Some pipeline gets the credential: in its scope or a scope below that receives it."""
    r = PipelineReference.__table__
    return exists().where(*getting(r, Credential.__table__))


def _ever_used():
    u = CredentialUse
    return or_(Credential.last_used_at.is_not(None),
               exists().where(u.credential_id == Credential.cred_id, u.owner == Workspace.name,
                              Workspace.id == Credential.workspace_id))


def _day(name: str, raw: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(raw), time(), tzinfo=timezone.utc)
    except ValueError:
        raise ValidationError(f"{name}: a date like 2026-01-31", field=name) from None


def conditions(args: Mapping[str, str]) -> list:
    """SQL conditions for the filters set in ``args`` (unknown names are ignored)."""
    out = []
    for name, col in TEXT.items():
        value = (args.get(name) or "").strip()[:200]
        if value:
            escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(func.lower(col).like(f"%{escaped}%", escape="\\"))
    for name, (yes, no) in CHOICES.items():
        value, cond = args.get(name) or "", _referenced if name == "used_by" else _ever_used
        if value == yes:
            out.append(cond())
        elif value == no:
            out.append(not_(cond()))
        elif value:
            raise ValidationError(f"{name}: {yes} or {no}", field=name)
    if args.get("created_from"):
        out.append(Credential.created_at >= _day("created_from", args["created_from"]))
    if args.get("created_to"):
        out.append(Credential.created_at < _day("created_to", args["created_to"])
                   + timedelta(days=1))
    return [and_(*out)] if out else []
