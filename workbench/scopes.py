"""Scopes (workspaces): created, renamed and deleted explicitly, never as a side effect of
creating something in a scope that does not exist."""
from __future__ import annotations

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, literal, or_, select
from sqlalchemy.orm import Session

from . import access, audit
from .accounts import get_workspace as get_scope, require
from .audit import Actor
from .db import iso
from .errors import Conflict, ImmutableFieldError, PermissionDenied, ValidationError
from .models import ApiToken, Credential, Workspace
from .pipeline.names import CRED_ID

DEFAULT = "default"  # the scope of every request that names none; always exists
MAX_DEPTH = 32  # parents are fixed at creation, so there is no cycle; this bounds the walk
_ws = Workspace.__table__


def ancestry(name=None):
    """A recursive CTE (id, parent_id, depth): the scope called ``name`` (default: the bind
    parameter ``workspace``) at depth 0, its parent at 1, up to the root."""
    here = (select(_ws.c.id, _ws.c.parent_id, literal(0).label("depth"))
            .where(_ws.c.name == (bindparam("workspace") if name is None else name))
            .cte("chain", recursive=True))
    up = _ws.alias("up")
    return here.union_all(select(up.c.id, up.c.parent_id, here.c.depth + 1)
                          .where(up.c.id == here.c.parent_id, here.c.depth < MAX_DEPTH))


def nearest(cred_id, name=None) -> ColumnElement:
    """SQL for the primary key of the credential ``cred_id`` (a value, a bind or a column of
    the enclosing statement) that runs in the scope get: the one of
    the scope itself, else of the nearest scope above whose credential is inherited.  A
    nearer credential with the same ID shadows the ones above it."""
    # aliases: inside a statement that reads credentials and workspaces itself (resolve),
    # these subqueries must not be correlated to its rows
    cred, ws = Credential.__table__.alias("near_c"), _ws.alias("near_w")
    own = (select(cred.c.pk).select_from(cred.join(ws, ws.c.id == cred.c.workspace_id))
           .where(ws.c.name == (bindparam("workspace") if name is None else name),
                  cred.c.cred_id == cred_id).scalar_subquery())
    chain = ancestry(name)
    above = (select(cred.c.pk).select_from(cred.join(chain, chain.c.id == cred.c.workspace_id))
             .where(cred.c.cred_id == cred_id, chain.c.depth > 0, cred.c.inherit)
             .order_by(chain.c.depth).limit(1).scalar_subquery())
    # COALESCE stops at its first non-NULL argument (SQLite and PostgreSQL alike): a scope's
    # own credential, the common case, costs one index lookup and never walks the tree
    return func.coalesce(own, above)


def closure():
    """A recursive CTE (scope_id, above_id, depth) over every scope: each scope with itself at
    depth 0, its parent at 1, up to its root (the tree's closure, for statements that ask
    "which credential does each of many scopes get")."""
    here = select(_ws.c.id.label("scope_id"), _ws.c.id.label("above_id"),
                  literal(0).label("depth")).cte("closure", recursive=True)
    up = _ws.alias("closure_up")
    return here.union_all(select(here.c.scope_id, up.c.parent_id, here.c.depth + 1)
                          .where(up.c.id == here.c.above_id, up.c.parent_id.is_not(None),
                                 here.c.depth < MAX_DEPTH))


def chain(s: Session, name: str) -> list[int]:
    """The row IDs of the scope ``name`` and of each scope above it, nearest first (empty
    when there is no such scope)."""
    return list(s.scalars(_CHAIN_IDS, {"workspace": name}))


def chain_names(s: Session, name: str) -> list[str]:
    """The same chain by scope ID (name), nearest first."""
    return list(s.scalars(_CHAIN_NAMES, {"workspace": name}))


def visible(ids: list[int], inherited: bool = True) -> ColumnElement:
    """SQL condition on ``Credential``: the credentials a scope whose ``chain`` is ``ids`` sees,
    its own and (``inherited``) those it inherits, the nearest one of each ID only."""
    if not ids:
        return Credential.pk.is_(None)
    own = Credential.workspace_id == ids[0]
    if len(ids) == 1 or not inherited:
        return own  # a top-level scope inherits nothing: the plain (workspace_id, …) index
    near = Credential.__table__.alias()

    def nearer(depth: int):  # the IDs usable in the scopes nearer than ``depth``
        return select(near.c.cred_id).where(near.c.workspace_id.in_(ids[:depth]),
                                            or_(near.c.workspace_id == ids[0], near.c.inherit))
    # one branch per depth, each an uncorrelated NOT IN: both databases read the nearer
    # scopes' IDs once (a hash or a temporary index) instead of probing once per row
    return and_(Credential.workspace_id.in_(ids), or_(own, and_(Credential.inherit, or_(*(
        and_(Credential.workspace_id == wid, Credential.cred_id.not_in(nearer(depth)))
        for depth, wid in enumerate(ids) if depth)))))


def receivers(s: Session, workspace: str, cred_id: str) -> list[str]:
    """The scopes whose runs get this credential: its own, and the scopes below it where no
    nearer credential with the same ID shadows it (none if it is not inherited)."""
    row = s.execute(_CREDENTIAL, {"workspace": workspace, "cred_id": cred_id}).first()
    if row is None:
        return [workspace]
    if not row.inherit:
        return [workspace]
    return [d for d in descendants(s, workspace)
            if d == workspace or s.scalar(_NEAREST, {"cred_id": cred_id, "workspace": d})
            == row.pk]


def owner(s: Session, workspace: str, cred_id: str) -> str | None:
    """The scope whose credential ``cred_id`` runs in ``workspace`` get (None: none)."""
    return s.scalar(_OWNER, {"cred_id": cred_id, "workspace": workspace})


def explain(s: Session, workspace: str, cred_id: str) -> dict:
    """Which credential ``cred_id`` a pipeline in ``workspace`` gets, and what it shadows:
    every credential with that ID in the scope and above, nearest first."""
    rows = s.execute(_ALONG_CHAIN, {"workspace": workspace, "cred_id": cred_id}).all()
    if not rows:
        get_scope(s, workspace)  # the 404 for a workspace that does not exist
    rows = [r for r in rows if r.pk is not None]
    usable = [r.name for r in rows if r.depth == 0 or r.inherit]
    return {"id": cred_id, "workspace": workspace, "gets": usable[0] if usable else None,
            "inherited": bool(usable) and usable[0] != workspace,
            "shadowed": usable[1:], "not_inherited": [r.name for r in rows
                                                      if r.depth and not r.inherit]}


def _descendants_query():
    here = select(_ws.c.id, literal(0).label("depth")).where(_ws.c.name == bindparam("scope")) \
        .cte("down", recursive=True)
    sub = _ws.alias("sub")
    tree = here.union_all(select(sub.c.id, here.c.depth + 1)
                          .where(sub.c.parent_id == here.c.id, here.c.depth < MAX_DEPTH))
    return select(_ws.c.name).join(tree, tree.c.id == _ws.c.id).order_by(tree.c.depth,
                                                                         _ws.c.name)


def _along_chain_query():
    """Every credential ``cred_id`` in the scope and above (depth, inherit), nearest first;
    an outer join, so the scope itself is a row (with NULLs) even where it has none."""
    chain = ancestry()
    return (select(_ws.c.name, Credential.inherit, chain.c.depth, Credential.pk)
            .select_from(_ws.join(chain, chain.c.id == _ws.c.id)
                         .outerjoin(Credential, (Credential.workspace_id == _ws.c.id)
                                    & (Credential.cred_id == bindparam("cred_id"))))
            .order_by(chain.c.depth))


# Built once: building a recursive CTE costs more Python than running it.
_DESCENDANTS = _descendants_query()
_CHAIN_IDS = (lambda c: select(c.c.id).order_by(c.c.depth))(ancestry())
_CHAIN_NAMES = (lambda c: select(_ws.c.name).join(c, c.c.id == _ws.c.id)
                .order_by(c.c.depth))(ancestry())
CLOSURE = closure()
_NEAREST = select(nearest(bindparam("cred_id")))
_ALONG_CHAIN = _along_chain_query()
_OWNER = (select(Workspace.name).join(Credential, Credential.workspace_id == Workspace.id)
          .where(Credential.pk == nearest(bindparam("cred_id"))))
_CREDENTIAL = (select(Credential.pk, Credential.inherit)
               .join(Workspace, Workspace.id == Credential.workspace_id)
               .where(Workspace.name == bindparam("workspace"),
                      Credential.cred_id == bindparam("cred_id")))


def descendants(s: Session, name: str) -> list[str]:
    """The names of the scope ``name`` and of every scope below it (any depth)."""
    return list(s.scalars(_DESCENDANTS, {"scope": name}))


def ensure_default(s: Session) -> None:
    """Create the default scope if it is missing (at start-up and ``workbench init``)."""
    if s.scalar(select(Workspace.id).where(Workspace.name == DEFAULT)) is None:
        s.add(Workspace(name=DEFAULT, title="Default"))
        s.flush()


def create_scope(s: Session, actor: Actor, name: str, title: str = "",
                 parent: str | None = None) -> Workspace:
    """A new scope, top-level (instance admin) or below ``parent`` (an admin of the parent or
    above), which is fixed for good (so the tree never has a cycle).  Its ID follows the
    credential-ID rules."""
    if parent:
        access.require_on(s, actor, "admin", "scope.create", workspace=str(parent),
                          target=str(name)[:63])
    else:
        require(actor, "admin", "scope.create", workspace=str(name)[:63])
    above = get_scope(s, parent) if parent else None
    if not isinstance(name, str) or not CRED_ID.match(name):
        raise ValidationError("a workspace ID is 1–63 characters of a-z, 0-9, '.', '_', '-', "
                              "starting and ending with a letter or digit", field="id")
    _check_title(title)
    if s.scalar(select(Workspace.id).where(Workspace.name == name)):
        raise Conflict(f"workspace {name!r} already exists")
    ws = Workspace(name=name, title=title or "", created_by=actor.label,
                   parent_id=above.id if above else None)
    s.add(ws)
    s.flush()
    audit.record(s, actor, "scope.create", workspace=name, target=name,
                 details={"parent": parent} if parent else {})
    return ws


def _check_title(title) -> None:
    if not isinstance(title, str) or len(title) > 200 or "\n" in title:
        raise ValidationError("title: one line, up to 200 characters", field="title")


def list_scopes(s: Session, actor: Actor | None = None) -> list[Workspace]:
    """Every scope, or those ``actor`` may see."""
    stmt = select(Workspace).order_by(Workspace.name)
    seen = access.visible(s, actor) if actor is not None else None
    if seen is not None:
        stmt = stmt.where(Workspace.name.in_(sorted(seen)))
    return list(s.scalars(stmt))


def update_scope(s: Session, actor: Actor, name: str, changes: dict) -> Workspace:
    """Rename (the title; an admin of the scope or above); the ID never changes: credentials
    and pipelines refer to it."""
    access.require_on(s, actor, "admin", "scope.rename", workspace=str(name)[:63],
                      target=str(name)[:63])
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
    """What keeps a scope from being deleted: scopes below it, credentials, pipeline sources,
    live runner tokens (the counts of each)."""
    from .references import PipelineSource  # references imports the credential service
    return {
        "scopes": s.scalar(select(func.count()).where(Workspace.parent_id == ws.id)),
        "credentials": s.scalar(select(func.count()).where(Credential.workspace_id == ws.id)),
        "sources": s.scalar(select(func.count()).where(PipelineSource.workspace == ws.name)),
        "runner_tokens": s.scalar(select(func.count()).where(
            ApiToken.workspace_id == ws.id, ApiToken.revoked_at.is_(None)))}


def delete_scope(s: Session, actor: Actor, name: str) -> None:
    """Delete an empty scope (an admin of its parent or the instance; a top-level one: the
    instance); revoked runner tokens of it go with it."""
    access.require_on(s, actor, "viewer", "scope.delete", workspace=str(name)[:63],
                      target=str(name)[:63])  # the 404 of a scope it may not see
    ws = get_scope(s, name)
    above = s.get(Workspace, ws.parent_id) if ws.parent_id else None
    if access.rank(access.role_on(s, actor, above.name) if above else actor.role) < \
            access.RANK["admin"]:
        raise audit.refused(PermissionDenied(
            f"deleting workspace {name!r} needs the admin role on "
            + (f"its parent {above.name!r}" if above else "the instance")),
            actor, "scope.delete", workspace=name, target=name)
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


def names(s: Session) -> dict[int, str]:
    """Scope row ID → scope ID (to name parents)."""
    return dict(s.execute(select(Workspace.id, Workspace.name)).all())


def to_dict(ws: Workspace, counts: dict[str, int] | None = None,
            by_id: dict[int, str] | None = None) -> dict:
    out = {"id": ws.name, "title": ws.title, "created_by": ws.created_by,
           "created_at": iso(ws.created_at),
           "parent": (by_id or {}).get(ws.parent_id) if ws.parent_id else None}
    if counts is not None:
        out["contents"] = counts
    return out
