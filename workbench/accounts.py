"""People and tokens: users with hashed passwords and roles, personal and runner API tokens."""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from sqlalchemy import bindparam, case, delete, false, or_, select, true, update
from sqlalchemy.orm import Session

from . import audit, passwords
from .audit import Actor
from .db import iso, utcnow
from .errors import AuthenticationRequired, Conflict, NotFound, PermissionDenied, ValidationError
from .models import ApiToken, User, Workspace
from .pipeline.names import CRED_ID
from .statements import Prepared, Raw

ROLES = ("admin", "editor", "viewer", "auditor")  # on the instance, or on a scope (access)
# "none": signs in and manages their own account; everything else comes from scope grants
INSTANCE_ROLES = ROLES + ("none",)
RANK = {"viewer": 0, "auditor": 0, "editor": 1, "admin": 2}  # auditor: a viewer + the audit log
TOUCH_EVERY = timedelta(minutes=1)  # granularity of the "last used" times
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so timing does not reveal it."""
    return passwords.hash_password("workbench-no-such-user")


def require(actor: Actor, role: str, action: str = "", *, workspace: str = "",
            target: str = "") -> None:
    """Refuse (and audit the refusal of ``action``) unless the actor has at least ``role``."""
    if actor.role == "runner" or RANK.get(actor.role, -1) < RANK[role]:
        err = PermissionDenied(f"this needs the {role} role")
        if action:
            audit.refused(err, actor, action, workspace=workspace, target=target)
        raise err


def get_workspace(s: Session, name: str) -> Workspace:
    """The workspace (scope) called ``name``, or a 404 that says how to create it: nothing
    creates one implicitly (a typo must not become a new workspace)."""
    ws = s.scalar(select(Workspace).where(Workspace.name == name))
    if ws is None:
        raise no_workspace(name)
    return ws


def no_workspace(name: str) -> NotFound:
    """The 404 of a scope that does not exist, and of one the actor may not see (the same)."""
    return NotFound(f"workspace {str(name)[:63]!r} does not exist (an admin creates it: "
                    f"`workbench scope create NAME` or POST /api/v1/scopes)")


def create_user(s: Session, actor: Actor, username: str, password: str, role: str, *,
                must_change: bool = True) -> User:
    """An admin creates an account; the password they chose must be changed at first sign-in."""
    require(actor, "admin")
    if not isinstance(username, str) or not USERNAME.match(username):
        raise ValidationError("username: letters, digits, '.', '_', '@', '-'", field="username")
    if role not in INSTANCE_ROLES:
        raise ValidationError(f"role must be one of {', '.join(INSTANCE_ROLES)}", field="role")
    passwords.check(password, username)
    if s.scalar(select(User).where(User.username == username)):
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=passwords.hash_password(password), role=role,
                must_change_password=must_change)
    s.add(user)
    s.flush()
    audit.record(s, actor, "user.create", target=username, details={"role": role})
    return user


SSO_ONLY = "!sso"  # the password hash of an account that signs in only through SSO


def is_last_admin(s: Session, user: User) -> bool:
    """Whether ``user`` is the only active admin (locks the admin rows until commit)."""
    if user.role != "admin" or user.disabled:
        return False
    # FOR UPDATE on every active admin, in one order: two admins demoting each other at once
    # take turns (no deadlock), and the second sees the first's change (PostgreSQL)
    active = s.scalars(select(User.id).where(User.role == "admin", User.disabled.is_(False))
                       .order_by(User.id).with_for_update()).all()
    return not [i for i in active if i != user.id]


def _keep_an_admin(s: Session, actor: Actor, user: User, action: str) -> None:
    """Refuse to demote, disable or delete the last active admin (nobody could undo it)."""
    if is_last_admin(s, user):
        raise audit.refused(Conflict(f"{user.username!r} is the last active admin; make "
                                     "another user admin first"),
                            actor, action, target=user.username)


def set_role(s: Session, actor: Actor, username: str, role: str) -> User:
    require(actor, "admin", "user.role", target=str(username))
    user = find_user(s, username)
    if role not in INSTANCE_ROLES:
        raise ValidationError(f"role must be one of {', '.join(INSTANCE_ROLES)}", field="role")
    if role != "admin":
        _keep_an_admin(s, actor, user, "user.role")
    user.role = role
    audit.record(s, actor, "user.role", target=username, details={"role": role})
    return user


def set_disabled(s: Session, actor: Actor, username: str, disabled: bool) -> User:
    """Disable (every session and personal token stops at once) or re-enable a user."""
    require(actor, "admin", "user.disable" if disabled else "user.enable", target=str(username))
    user = find_user(s, username)
    if disabled:
        _keep_an_admin(s, actor, user, "user.disable")
        user.session_epoch += 1  # a re-enabled user signs in again: old cookies stay dead
    if user.disabled != disabled:
        user.disabled = disabled
        audit.record(s, actor, "user.disable" if disabled else "user.enable", target=username)
    return user


def delete_user(s: Session, actor: Actor, username: str) -> None:
    """Delete an account and its personal tokens (the audit log keeps its name)."""
    require(actor, "admin", "user.delete", target=str(username))
    user = find_user(s, username)
    _keep_an_admin(s, actor, user, "user.delete")
    s.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    s.delete(user)
    audit.record(s, actor, "user.delete", target=username)


def reset_password(s: Session, actor: Actor, username: str, password: str) -> User:
    """An admin sets a user's password; they must change it at their next sign-in."""
    require(actor, "admin", "user.password_reset", target=str(username))
    user = find_user(s, username)
    if user.password_hash == SSO_ONLY:
        raise ValidationError(f"{user.username!r} signs in through single sign-on: it has no "
                              "password here to reset", field="password")
    return passwords.reset(s, actor, user, password)


def find_user(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username[:64]!r} does not exist")
    return user


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.username)))


def authenticate(s: Session, username: str, password: str) -> User:
    """Check a password; the error is the same whether or not the user exists."""
    user = s.scalar(select(User).where(User.username == username))
    if not passwords.verify(user, password, _dummy_hash()):
        user = None
    if user is None or user.disabled:
        raise AuthenticationRequired("wrong username or password")
    return user


def digest(token: str) -> str:
    """What the database keeps of a token (and looks it up by)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class IssuedToken:
    """A newly created token: ``secret`` is shown once and never stored."""

    token: ApiToken
    secret: str


def create_token(s: Session, actor: Actor, name: str, *, kind: str = "personal",
                 username: str | None = None, workspace: str | None = None,
                 allow: list[str] | None = None) -> IssuedToken:
    """Personal tokens act as their user; runner tokens may only resolve in one workspace:
    in runs of indexed pipelines, and ad hoc the credential IDs of ``allow`` ("*": any)."""
    if allow is not None and kind != "runner":
        raise ValidationError("only runner tokens take an allow-list", field="allow")
    if kind == "runner":
        from . import access  # access builds on this module
        access.require_on(s, actor, "admin", "token.create", workspace=workspace or "default",
                          target=str(name)[:100])
        ws = get_workspace(s, workspace or "default")
        owner = None
        allow = _allow_list(allow)
    elif kind == "personal":
        owner = find_user(s, username or actor.name)
        if owner.username != actor.name:
            require(actor, "admin")
        ws = None
    else:
        raise ValidationError("kind must be personal or runner", field="kind")
    if not name or len(name) > 100:
        raise ValidationError("token name is required (up to 100 characters)", field="name")
    same = select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None),
                                     ApiToken.user_id == owner.id if owner else
                                     ApiToken.workspace_id == ws.id)
    if s.scalar(same):  # names are how people tell their tokens apart
        raise Conflict(f"a token named {name!r} already exists for "
                       f"{owner.username if owner else 'workspace ' + repr(ws.name)}; "
                       "choose another name or revoke that one first", field="name")
    secret = ("wbr_" if kind == "runner" else "wbp_") + secrets.token_urlsafe(32)
    tok = ApiToken(kind=kind, name=name, prefix=secret[:8], token_hash=digest(secret),
                   user=owner, workspace=ws, created_by=actor.label,
                   allow="\n".join(allow) if allow else None)
    s.add(tok)
    s.flush()
    audit.record(s, actor, "token.create", target=name,
                 workspace=ws.name if ws else "",
                 details={"kind": kind, "token_id": tok.id, **({"allow": allow} if allow else {})})
    return IssuedToken(tok, secret)


def _allow_list(allow) -> list[str]:
    """A runner token's ad-hoc allow-list: credential IDs, or "*" alone for any."""
    if allow is None:
        return []
    if not isinstance(allow, list) or not all(
            isinstance(a, str) and (a == "*" or CRED_ID.match(a)) for a in allow):
        raise ValidationError("allow is a list of credential IDs (or \"*\" for any)",
                              field="allow")
    return list(dict.fromkeys(allow))


def stale(column):
    """SQL (binds ``cutoff``): whether a ``last_used_at`` is worth rewriting.  At most once per
    TOUCH_EVERY, so a busy token or credential does not turn every read into a write."""
    return case((or_(column.is_(None), column <= bindparam("cutoff", type_=column.type)), true()),
                else_=false())


# The token check of every API request, as plain columns, and its throttled "last used" write.
_tok, _usr, _wsp = ApiToken.__table__, User.__table__, Workspace.__table__
TOKEN_QUERY = (
    select(_tok.c.id, _tok.c.kind, _tok.c.name, _tok.c.token_hash, _tok.c.allow,
           _tok.c.revoked_at.is_not(None).label("revoked"),
           stale(_tok.c.last_used_at).label("stale"), _wsp.c.name.label("workspace"),
           _usr.c.username, _usr.c.role, _usr.c.disabled, _tok.c.workspace_id.label("scope_id"))
    .select_from(_tok.outerjoin(_wsp, _wsp.c.id == _tok.c.workspace_id)
                 .outerjoin(_usr, _usr.c.id == _tok.c.user_id))
    .where(_tok.c.token_hash == bindparam("digest")))
_TOKEN_ROW = Prepared(TOKEN_QUERY)
_TOUCH_TOKEN = Prepared(update(_tok).where(_tok.c.id == bindparam("tid"))
                        .values(last_used_at=bindparam("now")))


def token_actor(raw: Raw, secret: str, source: str = "", *,
                lookup: Callable[[Raw, str, datetime], Any] | None = None) -> Actor:
    """The actor behind a bearer token, or AuthenticationRequired.  ``lookup(raw, digest,
    cutoff)`` may stand in for TOKEN_QUERY with a query that fetches more in the same trip."""
    hashed = digest(secret)
    now = utcnow()
    cutoff = now - TOUCH_EVERY
    row = lookup(raw, hashed, cutoff) if lookup else raw.one(_TOKEN_ROW, digest=hashed,
                                                             cutoff=cutoff)
    if row is None or row.revoked or not hmac.compare_digest(row.token_hash, hashed):
        raise AuthenticationRequired("invalid or revoked token")
    if row.kind != "runner" and (row.username is None or row.disabled):
        raise AuthenticationRequired("invalid or revoked token")
    if row.stale:
        raw.run(_TOUCH_TOKEN, tid=row.id, now=now)
    if row.kind == "runner":
        return Actor(row.name, role="runner", source=source, workspace=row.workspace,
                     kind="runner", allow=tuple(row.allow.split("\n")) if row.allow else ())
    return Actor(row.username, role=row.role, source=source, kind="user")


def list_tokens(s: Session, actor: Actor | None = None) -> list[ApiToken]:
    """Every token, or those ``actor`` may see: its own, and (admins of a scope) the runner
    tokens of the scopes it is admin of; an instance admin sees all."""
    toks = list(s.scalars(select(ApiToken).order_by(ApiToken.id.desc())))
    if actor is None or actor.role == "admin":
        return toks
    from . import access  # access builds on this module
    admin_of = {name for name in {t.workspace.name for t in toks if t.workspace}
                if access.role_on(s, actor, name) == "admin"}
    return [t for t in toks if (t.user and t.user.username == actor.name)
            or (t.workspace and t.workspace.name in admin_of)]


def revoke_token(s: Session, actor: Actor, token_id: int) -> ApiToken:
    tok = s.get(ApiToken, token_id)
    if tok is None:
        raise NotFound(f"token {token_id} does not exist")
    if tok.workspace is not None:
        from . import access  # access builds on this module
        try:
            access.require_on(s, actor, "admin", "token.revoke", workspace=tok.workspace.name,
                              target=tok.name)
        except NotFound:  # a token of a scope it may not see does not exist for it either
            raise audit.refused(NotFound(f"token {token_id} does not exist"), actor,
                                "token.revoke", workspace=tok.workspace.name,
                                target=tok.name) from None
    elif not (tok.user and tok.user.username == actor.name):
        require(actor, "admin")
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
        audit.record(s, actor, "token.revoke", target=tok.name, details={"token_id": tok.id})
    return tok


def token_to_dict(tok: ApiToken) -> dict:
    return {"id": tok.id, "kind": tok.kind, "name": tok.name, "prefix": tok.prefix,
            "user": tok.user.username if tok.user else None,
            "workspace": tok.workspace.name if tok.workspace else None,
            "created_at": iso(tok.created_at),
            "last_used_at": iso(tok.last_used_at),
            "revoked": tok.revoked_at is not None,
            "allow": tok.allow.split("\n") if tok.allow else ([] if tok.kind == "runner" else None)}
