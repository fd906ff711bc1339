"""The credential service: create, change, delete and list typed credentials (values are
read back only through ``resolution``)."""
from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterable

from sqlalchemy import Select, String, cast, delete, func, or_, select
from sqlalchemy.orm import Session

from . import audit, credtypes, crypto, keyterms, scopes
from . import access
from .accounts import get_workspace
from .audit import Actor
from .crypto import Barrier
from .db import iso, utcnow
from .errors import (Conflict, CredentialInUse, ImmutableFieldError, NotFound, PermissionDenied,
                     ValidationError)
from .models import Credential, CredentialVersion, Workspace
from .pipeline.names import CRED_ID
from . import status as status_service

# names sort case-insensitively ("alpha" next to "Alpha"), using ix_credentials_name_ci
SORTABLE = {"id": Credential.cred_id, "name": func.lower(Credential.name), "type": Credential.type,
            "status": Credential.status, "created_at": Credential.created_at,
            "created_by": Credential.created_by, "last_used_at": Credential.last_used_at,
            "description": Credential.description, "updated_at": Credential.updated_at}

# Sort keys that need a join: key -> f(ids select) -> (the select joined, the column to sort
# by).  Other modules may register more (the reference index adds "used_by").
SORT_JOINS: dict[str, Callable[[Select], tuple[Select, Any]]] = {
    "workspace": lambda ids: (ids.join(Workspace, Workspace.id == Credential.workspace_id),
                              Workspace.name)}


def sortable(key: str) -> bool:
    return key in SORTABLE or key in SORT_JOINS


# Registry of functions (session, workspace, cred_id) -> list of reference dicts
# ({"pipeline", "step", "version", "binding", ...}); the reference index registers itself here.
REFERENCE_FINDERS: list[Callable[[Session, str, str], list[dict]]] = []


def check_id(cred_id: Any) -> str:
    if not isinstance(cred_id, str) or not CRED_ID.match(cred_id):
        raise ValidationError("ID must be 1–63 characters of a-z, 0-9, '.', '_', '-', starting "
                              "and ending with a letter or digit", field="id")
    return cred_id




def encode_values(values: dict[str, Any]) -> bytes:
    """Payload serialization; bytes become {"$b64": …} so the JSON stays lossless."""
    return json.dumps({k: {"$b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
                       for k, v in values.items()}, separators=(",", ":")).encode()


def decode_values(data: bytes) -> dict[str, Any]:
    raw = json.loads(data)
    return {k: base64.b64decode(v["$b64"]) if isinstance(v, dict) and "$b64" in v else v
            for k, v in raw.items()}


def _public(ctype: credtypes.CredentialType, values: dict[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in ctype.public_fields if k in values}


def get_credential(s: Session, workspace: str, cred_id: str) -> Credential:
    c = s.scalar(select(Credential).join(Workspace)
                 .where(Workspace.name == workspace, Credential.cred_id == cred_id))
    if c is None:
        raise NotFound(f"credential {str(cred_id)[:63]!r} does not exist in workspace "
                       f"{workspace!r}")
    return c


def _add_version(s: Session, barrier: Barrier, actor: Actor, c: Credential, ws: str,
                 version: int, type_name: str, values: dict[str, Any]) -> CredentialVersion:
    barrier = keyterms.writable(s, barrier)  # the newest key term, even mid-rotation
    sealed = barrier.seal(encode_values(values), crypto.binding(ws, c.cred_id, version, type_name))
    v = CredentialVersion(version=version, type=type_name, key_term=sealed.term,
                          wrapped_key=sealed.wrapped_key, ciphertext=sealed.ciphertext,
                          public=_public(credtypes.get(type_name), values),
                          created_by=actor.label)
    c.versions.append(v)
    return v


def create_credential(s: Session, barrier: Barrier, actor: Actor, *, workspace: str,
                      cred_id: str, type: str, values: dict[str, Any], name: str = "",
                      description: str = "", inherit: bool = True) -> Credential:
    """Validate everything first; nothing is stored on failure."""
    access.require_on(s, actor, "editor", "credential.create", workspace=workspace,
                      target=str(cred_id)[:200])
    check_id(cred_id)
    ctype = credtypes.get(type)
    clean, _ = ctype.validate(values)
    _check_text(name, description)
    if not isinstance(inherit, bool):
        raise ValidationError("inherit must be true or false", field="inherit")
    ws = get_workspace(s, workspace)
    if s.scalar(select(Credential.pk).where(Credential.workspace_id == ws.id,
                                             Credential.cred_id == cred_id)):
        raise Conflict(f"credential {cred_id!r} already exists in workspace {workspace!r}")
    c = Credential(workspace=ws, cred_id=cred_id, name=name or cred_id, description=description,
                   type=type, current_version=1, public=_public(ctype, clean),
                   created_by=actor.label, inherit=inherit)
    s.add(c)
    _add_version(s, barrier, actor, c, workspace, 1, type, clean)
    status_service.on_save(c, ctype, clean)
    s.flush()
    audit.record(s, actor, "credential.create", workspace=workspace, target=cred_id,
                 details={"type": type, "version": 1, "fields": sorted(clean),
                          **({} if inherit else {"inherit": False})})
    return c


def _check_text(name: str | None, description: str | None) -> None:
    if name is not None and (not isinstance(name, str) or len(name) > 200 or "\n" in name):
        raise ValidationError("name: one line, up to 200 characters", field="name")
    if description is not None and (not isinstance(description, str) or len(description) > 2000):
        raise ValidationError("description: up to 2,000 characters", field="description")


def current_values(s: Session, barrier: Barrier, c: Credential,
                   version: int | None = None) -> tuple[CredentialVersion, dict[str, Any]]:
    want = version or c.current_version
    v = s.scalar(select(CredentialVersion).where(CredentialVersion.credential_pk == c.pk,
                                                 CredentialVersion.version == want))
    if v is None:
        raise NotFound(f"credential {c.cred_id!r} has no version {want}")
    aad = crypto.binding(c.workspace.name, c.cred_id, v.version, v.type)
    return v, decode_values(barrier.open(v.wrapped_key, v.ciphertext, aad))


def update_credential(s: Session, barrier: Barrier, actor: Actor, *, workspace: str,
                      cred_id: str, changes: dict[str, Any], force: bool = False) -> Credential:
    """PATCH semantics: ``name``/``description`` rename; ``values`` (merged over the current
    ones) and ``type`` create version N+1.  ``id`` and ``workspace`` can never change."""
    access.require_on(s, actor, "editor", "credential.update", workspace=workspace,
                      target=cred_id)
    c = get_credential(s, workspace, cred_id)
    unknown = set(changes) - {"id", "workspace", "name", "description", "values", "type",
                              "inherit"}
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    for key, current in (("id", c.cred_id), ("workspace", workspace)):
        if key in changes and changes[key] != current:
            raise audit.refused(ImmutableFieldError(
                f"the {key} of credential {cred_id!r} cannot be changed; create a new "
                "credential instead", field=key), actor, "credential.update",
                workspace=workspace, target=cred_id, details={"field": key})
    _check_text(changes.get("name"), changes.get("description"))
    new_type = changes.get("type", c.type)
    if "values" in changes or new_type != c.type:
        new_values = changes.get("values") or {}
        if not isinstance(new_values, dict):
            raise ValidationError("values must be an object", field="values")
        ctype = credtypes.get(new_type)
        if new_type != c.type:
            guard_references(s, actor, workspace, cred_id, force=force, change="type change")
            merged = dict(new_values)
        else:
            _, old = current_values(s, barrier, c)
            _require_secret_for_target(ctype, old, new_values)
            merged = {**old, **new_values}
        clean, _ = ctype.validate(merged)
        version = (s.scalar(select(func.max(CredentialVersion.version))
                            .where(CredentialVersion.credential_pk == c.pk)) or 0) + 1
        _add_version(s, barrier, actor, c, workspace, version, new_type, clean)
        c.type, c.current_version, c.public = new_type, version, _public(ctype, clean)
        status_service.on_save(c, ctype, clean)
        audit.record(s, actor, "credential.update", workspace=workspace, target=cred_id,
                     details={"version": version, "type": new_type,
                              "fields": sorted(new_values)})
    if "inherit" in changes and changes["inherit"] != c.inherit:
        _change_inheritance(s, actor, c, workspace, changes["inherit"], force)
    renamed = {k: changes[k] for k in ("name", "description")
               if k in changes and changes[k] != getattr(c, k)}
    if renamed:
        for k, v in renamed.items():
            setattr(c, k, v)
        audit.record(s, actor, "credential.rename", workspace=workspace, target=cred_id,
                     details={"changed": sorted(renamed)})
    c.updated_at = utcnow()
    s.flush()
    return c


def _require_secret_for_target(ctype, old: dict, new: dict) -> None:
    """Changing where a secret is sent needs the secret again, so a stolen editor session
    cannot redirect a stored password to another host."""
    tf = ctype.target_field
    if tf and tf in new and new[tf] != old.get(tf):
        missing = [f for f in ctype.secret_fields if f not in new and ctype.field(f).required]
        if missing:
            raise ValidationError(f"changing {tf} requires entering {', '.join(missing)} again",
                                  field=missing[0])


def _change_inheritance(s: Session, actor: Actor, c: Credential, workspace: str,
                        inherit: Any, force: bool) -> None:
    """Stop (or start) handing the credential to the scopes below; stopping is guarded by
    the pipelines there that use it."""
    if not isinstance(inherit, bool):
        raise ValidationError("inherit must be true or false", field="inherit")
    if not inherit:
        below = [r for r in references(s, workspace, c.cred_id) if r["workspace"] != workspace]
        if below:
            guard_references(s, actor, workspace, c.cred_id, force=force,
                             change="inheritance change", refs=below)
    c.inherit = inherit
    audit.record(s, actor, "credential.inherit", workspace=workspace, target=c.cred_id,
                 details={"inherit": inherit})


def references(s: Session, workspace: str, cred_id: str) -> list[dict]:
    """Pipeline steps that get this credential, in its scope and in the scopes below."""
    return [{**r, "workspace": scope} for scope in scopes.receivers(s, workspace, cred_id)
            for finder in REFERENCE_FINDERS for r in finder(s, scope, cred_id)]


def guard_references(s: Session, actor: Actor, workspace: str, cred_id: str, *, force: bool,
                     change: str, versions: set[int] | None = None,
                     refs: list[dict] | None = None) -> list[dict]:
    """Refuse a breaking change while pipelines reference the credential (admins may force)."""
    refs = references(s, workspace, cred_id) if refs is None else refs
    if versions is not None:
        refs = [r for r in refs if r.get("version") in versions]
    if refs and not force:
        raise audit.refused(CredentialInUse(
            f"{change} of credential {cred_id!r} would break {len(refs)} reference(s) in "
            f"{len({(r.get('workspace'), r.get('pipeline')) for r in refs})} pipeline(s)",
            references=refs),
            actor, f"credential.{change.split()[0]}", workspace=workspace, target=cred_id,
            details={"references": refs}, outcome="refused")
    if refs and force and access.role_on(s, actor, workspace) != "admin":
        raise audit.refused(PermissionDenied(
            "only an admin can force a change to a referenced credential"),
            actor, f"credential.{change.split()[0]}", workspace=workspace, target=cred_id)
    return refs


def delete_credential(s: Session, actor: Actor, *, workspace: str, cred_id: str,
                      force: bool = False) -> list[dict]:
    access.require_on(s, actor, "editor", "credential.delete", workspace=workspace,
                      target=cred_id)
    c = get_credential(s, workspace, cred_id)
    refs = guard_references(s, actor, workspace, cred_id, force=force, change="deletion")
    s.execute(delete(CredentialVersion).where(CredentialVersion.credential_pk == c.pk))
    s.delete(c)
    audit.record(s, actor, "credential.delete", workspace=workspace, target=cred_id,
                 details={"forced": bool(refs), "references": refs} if refs else {})
    if refs:
        from . import webhooks  # here: it imports the reference index, which imports us
        webhooks.emit(s, "credential.delete_forced", workspace=workspace, target=cred_id,
                      details={"references": refs})
    s.flush()
    return refs


def list_versions(s: Session, workspace: str, cred_id: str) -> list[CredentialVersion]:
    c = get_credential(s, workspace, cred_id)
    return list(s.scalars(select(CredentialVersion).where(CredentialVersion.credential_pk == c.pk)
                          .order_by(CredentialVersion.version.desc())))


def prune_versions(s: Session, actor: Actor, *, workspace: str, cred_id: str, keep: int,
                   force: bool = False) -> list[int]:
    """Delete all but the newest ``keep`` versions; pinned versions are guarded."""
    access.require_on(s, actor, "editor", "credential.prune", workspace=workspace,
                      target=cred_id)
    if keep < 1:
        raise ValidationError("keep must be at least 1", field="keep")
    doomed = list_versions(s, workspace, cred_id)[keep:]
    nums = {v.version for v in doomed}
    if nums:
        guard_references(s, actor, workspace, cred_id, force=force, change="pruning",
                         versions=nums)
        for v in doomed:
            s.delete(v)
        audit.record(s, actor, "credential.prune", workspace=workspace, target=cred_id,
                     details={"versions": sorted(nums)})
    s.flush()
    return sorted(nums)


def list_credentials(s: Session, *, workspace: str | None = "default", q: str | None = None,
                     type: str | None = None, status: str | None = None, sort: str = "-created_at",
                     limit: int = 50, offset: int = 0, where: Iterable = (),
                     workspaces: set[str] | None = None) -> tuple[list[Credential], int]:
    """One page of credentials and the total count.  Pages are found by primary key alone (a
    deferred join), so a deep page walks an index instead of whole rows.  ``where`` adds SQL
    conditions (see ``credential_filters``); ``workspaces``: only those of these scopes (the
    ones a user may see; None: all)."""
    key = sort.lstrip("-")
    if not sortable(key):
        raise ValidationError(f"cannot sort by {key[:32]!r}; use one of "
                              f"{sorted([*SORTABLE, *SORT_JOINS])}", field="sort")
    ids = select(Credential.pk)
    if workspace:
        ids = ids.where(Credential.workspace_id == select(Workspace.id)
                        .where(Workspace.name == workspace).scalar_subquery())
    if workspaces is not None:
        ids = ids.where(Credential.workspace_id.in_(
            select(Workspace.id).where(Workspace.name.in_(sorted(workspaces)))))
    if type:
        ids = ids.where(Credential.type == type)
    if status:
        ids = ids.where(Credential.status == status)
    for cond in where:
        ids = ids.where(cond)
    if q:
        like = f"%{q.lower()}%"
        ids = ids.where(or_(func.lower(Credential.cred_id).like(like),
                            func.lower(Credential.name).like(like),
                            func.lower(cast(Credential.description, String)).like(like)))
    total = s.scalar(select(func.count()).select_from(ids.subquery())) or 0
    if key in SORT_JOINS:
        ids, col = SORT_JOINS[key](ids)
    else:
        col = SORTABLE[key]
    # the tie-breaker runs the same way as the sort, so one (column, pk) index serves both
    order = (col.desc(), Credential.pk.desc()) if sort.startswith("-") else \
        (col.asc(), Credential.pk.asc())
    pks = list(s.scalars(ids.order_by(*order).limit(max(1, min(limit, 500)))
                         .offset(max(0, offset))))
    if not pks:
        return [], total
    rows = {c.pk: c for c in s.scalars(select(Credential).where(Credential.pk.in_(pks)))}
    return [rows[pk] for pk in pks], total


def to_dict(c: Credential) -> dict:
    """Metadata only: secret fields are never part of any response."""
    return {"id": c.cred_id, "workspace": c.workspace.name, "name": c.name,
            "description": c.description, "type": c.type, "version": c.current_version,
            "fields": c.public, "status": c.status, "status_message": c.status_message,
            "conditions": c.conditions, "inherit": c.inherit, "created_by": c.created_by,
            "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
            "last_used_at": iso(c.last_used_at)}


def version_to_dict(v: CredentialVersion) -> dict:
    return {"version": v.version, "type": v.type, "fields": v.public,
            "created_by": v.created_by, "created_at": iso(v.created_at)}
