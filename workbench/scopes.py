"""Scopes (workspaces): created, renamed and deleted explicitly, never as a side effect of
creating something in a scope that does not exist."""
from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from . import audit
from .accounts import get_workspace as get_scope, require
from .audit import Actor
from .db import iso
from .errors import Conflict, ImmutableFieldError, PermissionDenied, ValidationError
from .models import ApiToken, Credential, Workspace
from .pipeline.names import CRED_ID

DEFAULT = "default"  # the scope of every request that names none; always exists


def ensure_default(s: Session) -> None:
    """Create the default scope if it is missing (at start-up and ``workbench init``)."""
    if s.scalar(select(Workspace.id).where(Workspace.name == DEFAULT)) is None:
        s.add(Workspace(name=DEFAULT, title="Default"))
        s.flush()


def create_scope(s: Session, actor: Actor, name: str, title: str = "") -> Workspace:
    """A new top-level scope (admin).  Its ID follows the credential-ID rules."""
    require(actor, "admin", "scope.create", workspace=str(name)[:63])
    if not isinstance(name, str) or not CRED_ID.match(name):
        raise ValidationError("a workspace ID is 1–63 characters of a-z, 0-9, '.', '_', '-', "
                              "starting and ending with a letter or digit", field="id")
    _check_title(title)
    if s.scalar(select(Workspace.id).where(Workspace.name == name)):
        raise Conflict(f"workspace {name!r} already exists")
    ws = Workspace(name=name, title=title or "", created_by=actor.label)
    s.add(ws)
    s.flush()
    audit.record(s, actor, "scope.create", workspace=name, target=name)
    return ws


def _check_title(title) -> None:
    if not isinstance(title, str) or len(title) > 200 or "\n" in title:
        raise ValidationError("title: one line, up to 200 characters", field="title")


def list_scopes(s: Session) -> list[Workspace]:
    return list(s.scalars(select(Workspace).order_by(Workspace.name)))


def update_scope(s: Session, actor: Actor, name: str, changes: dict) -> Workspace:
    """Rename (the title); the ID never changes: credentials and pipelines refer to it."""
    require(actor, "admin", "scope.rename", workspace=str(name)[:63])
    ws = get_scope(s, name)
    unknown = set(changes) - {"id", "title"}
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    if "id" in changes and changes["id"] != name:
        raise audit.refused(ImmutableFieldError(
            f"the ID of workspace {name!r} cannot be changed; change its title", field="id"),
            actor, "scope.rename", workspace=name, target=name)
    if "title" in changes and changes["title"] != ws.title:
        _check_title(changes["title"])
        ws.title = changes["title"]
        audit.record(s, actor, "scope.rename", workspace=name, target=name)
    return ws


def contents(s: Session, ws: Workspace) -> dict[str, int]:
    """What keeps a scope from being deleted: credentials, pipeline sources, live runner
    tokens (the counts of each)."""
    from .references import PipelineSource  # references imports the credential service
    return {
        "credentials": s.scalar(select(func.count()).where(Credential.workspace_id == ws.id)),
        "sources": s.scalar(select(func.count()).where(PipelineSource.workspace == ws.name)),
        "runner_tokens": s.scalar(select(func.count()).where(
            ApiToken.workspace_id == ws.id, ApiToken.revoked_at.is_(None)))}


def delete_scope(s: Session, actor: Actor, name: str) -> None:
    """Delete an empty scope (admin); revoked runner tokens of it go with it."""
    require(actor, "admin", "scope.delete", workspace=str(name)[:63])
    ws = get_scope(s, name)
    if name == DEFAULT:
        raise audit.refused(PermissionDenied("the default workspace cannot be deleted"),
                            actor, "scope.delete", workspace=name, target=name)
    left = {k: n for k, n in contents(s, ws).items() if n}
    if left:
        what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in left.items())
        raise audit.refused(Conflict(f"workspace {name!r} is not empty ({what}); delete or "
                                     "move them first", contents=left),
                            actor, "scope.delete", workspace=name, target=name, details=left)
    s.execute(delete(ApiToken).where(ApiToken.workspace_id == ws.id))
    s.delete(ws)
    audit.record(s, actor, "scope.delete", workspace=name, target=name)


def to_dict(ws: Workspace, counts: dict[str, int] | None = None) -> dict:
    out = {"id": ws.name, "title": ws.title, "created_by": ws.created_by,
           "created_at": iso(ws.created_at)}
    if counts is not None:
        out["contents"] = counts
    return out
