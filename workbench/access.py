"""Access: who may do what on which scope.  An actor's role on a scope is the highest of its
instance role and its grants on that scope or any scope above it (a grant covers every scope
below, current and future).  A scope the actor has no role on does not exist for it (404)."""
from __future__ import annotations

from dataclasses import replace

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from . import audit, scopes
from .accounts import RANK, ROLES, find_user, no_workspace
from .audit import Actor
from .db import iso
from .errors import NotFound, PermissionDenied, ValidationError
from .models import ScopeRole, User, Workspace

SOURCES = ("manual", "sso")


def rank(role: str | None) -> int:
    """A role's rank; -1 for none (``none``, ``runner``, unknown)."""
    return RANK.get(role or "", -1)


def highest(roles) -> str | None:
    """The highest of ``roles`` (None when there is none with a rank)."""
    ranked = [r for r in roles if rank(r) >= 0]
    return max(ranked, key=rank) if ranked else None


_GRANTS = (select(Workspace.name, ScopeRole.role)
           .join(ScopeRole, ScopeRole.workspace_id == Workspace.id)
           .join(User, User.id == ScopeRole.user_id))


def load_grants(s: Session, username: str) -> tuple[tuple[str, str], ...]:
    """A user's grants as (scope, role) pairs: once per request, kept on the actor."""
    return tuple((scope, role) for scope, role in
                 s.execute(_GRANTS.where(User.username == username).order_by(Workspace.name)))


def grants_of(s: Session, actor: Actor) -> tuple[tuple[str, str], ...]:
    """The actor's grants: those loaded with it, else from the database (users only)."""
    if actor.grants is not None:
        return actor.grants
    if actor.kind != "user":
        return ()
    return load_grants(s, actor.name)


def with_grants(s: Session, actor: Actor) -> Actor:
    """The actor with its grants loaded (so later checks need no query for them)."""
    if actor.grants is not None or actor.kind != "user" or actor.role == "admin":
        return actor  # (an instance admin's grants change nothing)
    return replace(actor, grants=load_grants(s, actor.name))


def role_on(s: Session, actor: Actor, workspace: str) -> str | None:
    """The actor's role on ``workspace`` (None: it may not even see it).  Runner tokens have
    none: they only resolve and report runs, checked where they do."""
    if actor.kind == "runner" or actor.role == "runner":
        return None
    base = actor.role if rank(actor.role) >= 0 else None
    if base == "admin":
        return base
    grants = grants_of(s, actor)
    if not grants:
        return base
    chain = set(scopes.chain_names(s, workspace))
    return highest([base] + [role for scope, role in grants if scope in chain])


def require_on(s: Session, actor: Actor, role: str, action: str = "", *, workspace: str,
               target: str = "") -> str:
    """The actor's role on ``workspace`` if it is at least ``role``.  Else refused (audited):
    403 if it may see the scope, else the very 404 of a scope that does not exist."""
    have = role_on(s, actor, workspace)
    if have is None and actor.kind != "runner" and actor.role != "runner":
        err = no_workspace(workspace)
    elif have is None or rank(have) < RANK[role]:
        err = PermissionDenied(f"this needs the {role} role on workspace "
                               f"{str(workspace)[:63]!r}")
    else:
        return have
    if action:
        audit.refused(err, actor, action, workspace=str(workspace)[:63], target=target)
    raise err


def visible(s: Session, actor: Actor) -> set[str] | None:
    """The scopes the actor may see; None means every scope (an instance viewer or higher)."""
    if actor.kind == "runner" or actor.role == "runner":
        return {actor.workspace} if actor.workspace else set()
    if rank(actor.role) >= 0:
        return None
    seen: set[str] = set()
    for scope, _role in grants_of(s, actor):
        if scope not in seen:
            seen.update(scopes.descendants(s, scope))
    return seen


def may_see(s: Session, actor: Actor, workspace: str) -> bool:
    return role_on(s, actor, workspace) is not None


def members(s: Session, workspace: str) -> list[ScopeRole]:
    """The grants on ``workspace`` itself (not those inherited from above), by username."""
    ws = scopes.get_scope(s, workspace)
    return list(s.scalars(select(ScopeRole).join(User, User.id == ScopeRole.user_id)
                          .where(ScopeRole.workspace_id == ws.id).order_by(User.username)))


def inherited_members(s: Session, workspace: str) -> list[ScopeRole]:
    """The grants on the scopes above ``workspace`` (they apply to it too), nearest first."""
    chain = scopes.ancestry()
    return list(s.scalars(select(ScopeRole).join(chain, chain.c.id == ScopeRole.workspace_id)
                          .where(chain.c.depth > 0).order_by(chain.c.depth, ScopeRole.id),
                          {"workspace": workspace}))


def grant(s: Session, actor: Actor, workspace: str, username: str, role: str, *,
          source: str = "manual") -> ScopeRole:
    """Give ``username`` ``role`` on ``workspace`` (replacing the role it had there): for an
    instance admin or an admin of the scope or above.  ``fresh`` on the row: it is new."""
    require_on(s, actor, "admin", "scope.grant", workspace=workspace, target=str(username)[:64])
    ws = scopes.get_scope(s, workspace)
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
    user = find_user(s, str(username))
    row = s.scalar(select(ScopeRole).where(ScopeRole.user_id == user.id,
                                           ScopeRole.workspace_id == ws.id))
    if row is not None and row.role == role and row.source == source:
        return row
    was = row.role if row is not None else None
    if row is None:
        row = ScopeRole(user_id=user.id, workspace_id=ws.id, created_by=actor.label)
        row.fresh = True
        s.add(row)
    row.role, row.source = role, source  # a manual grant overrides (and outlives) SSO's
    s.flush()
    audit.record(s, actor, "scope.grant", workspace=workspace, target=user.username,
                 details={"role": role, **({"was": was} if was else {}),
                          **({"via": "sso"} if source == "sso" else {})})
    return row


def revoke(s: Session, actor: Actor, workspace: str, username: str) -> None:
    """Take away ``username``'s grant on ``workspace`` (grants above it stay)."""
    require_on(s, actor, "admin", "scope.revoke", workspace=workspace, target=str(username)[:64])
    ws = scopes.get_scope(s, workspace)
    user = find_user(s, str(username))
    gone = s.execute(delete(ScopeRole).where(ScopeRole.user_id == user.id,
                                             ScopeRole.workspace_id == ws.id))
    if not gone.rowcount:
        raise NotFound(f"{user.username!r} has no role on workspace {workspace!r} itself")
    audit.record(s, actor, "scope.revoke", workspace=workspace, target=user.username)


def member_to_dict(row: ScopeRole) -> dict:
    return {"username": row.user.username, "role": row.role, "source": row.source,
            "workspace": row.workspace.name, "created_at": iso(row.created_at),
            "created_by": row.created_by}
