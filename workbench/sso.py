"""Single sign-on through an OpenID Connect provider: its settings, the group → role mapping
(instance roles and roles on scopes), and the accounts it signs in (created at the first
sign-in, their roles re-derived at each)."""
from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from sqlalchemy import DateTime, ForeignKey, String, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import accounts, audit
from .audit import Actor
from .db import Base, utcnow
from .errors import ConfigError, PermissionDenied
from .models import ScopeRole, User, Workspace

PREFIX = "WORKBENCH_OIDC_"
# Not an argon2 hash, so no password ever verifies against it: SSO accounts have no password.
NO_PASSWORD = accounts.SSO_ONLY
ANY_GROUP = "*"
log = logging.getLogger(__name__)


class SsoIdentity(Base):
    """Which provider account (issuer, subject) a Workbench user is: names can be reused at
    the provider, subjects cannot, so a sign-in is matched by subject, never by name."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject", name="uq_sso_subject"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    issuer: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_sign_in_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class Grant:
    """A role a group gives: on the whole instance (``scope`` None) or on one scope (and the
    scopes below it)."""

    role: str
    scope: str | None = None


@dataclass(frozen=True)
class Grants:
    """What one sign-in's groups give: the instance role and the groups that gave it."""

    role: str
    groups: tuple[str, ...]
    scoped: tuple[tuple[str, Grant], ...] = ()


@dataclass(frozen=True)
class Provider:
    """The OpenID Connect provider, from ``WORKBENCH_OIDC_*`` (see README, Configuration)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    roles: tuple[tuple[str, Grant], ...]
    name: str = ""
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    scopes: str = "openid profile email"

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_roles(text: str) -> tuple[tuple[str, Grant], ...]:
    """``ops=admin,dev=editor,*=viewer`` → rules; ``group=scope:role`` is the per-scope form."""
    rules = []
    for entry in filter(None, (e.strip() for e in (text or "").split(","))):
        group, eq, value = entry.rpartition("=")
        group, value = group.strip(), value.strip()
        if not eq or not group:
            raise ConfigError(f"{PREFIX}ROLES: {entry!r} is not group=role")
        scope, _, role = value.rpartition(":")
        if role not in accounts.ROLES:
            raise ConfigError(f"{PREFIX}ROLES: {entry!r}: the role must be one of "
                              f"{', '.join(accounts.ROLES)}")
        rules.append((group, Grant(role, scope or None)))
    if not rules:
        raise ConfigError(f"{PREFIX}ROLES is required with {PREFIX}ISSUER, e.g. "
                          "ops=admin,dev=editor (a '*' group matches everyone)")
    return tuple(rules)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(env: Mapping[str, str]) -> Provider | None:
    """The configured provider, or None when SSO is off; ConfigError when half-configured."""
    issuer = env.get(PREFIX + "ISSUER", "").strip()
    if not issuer:
        return None
    parts = urlsplit(issuer)
    local = parts.scheme == "http" and _loopback(parts.hostname or "")
    if parts.scheme != "https" and not local:
        raise ConfigError(f"{PREFIX}ISSUER must be an https:// URL (http only on this machine)")
    secret = env.get(PREFIX + "CLIENT_SECRET", "")
    if env.get(PREFIX + "CLIENT_SECRET_FILE"):
        try:
            secret = Path(env[PREFIX + "CLIENT_SECRET_FILE"]).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{PREFIX}CLIENT_SECRET_FILE cannot be read "
                              f"({e.strerror})") from None
    client_id = env.get(PREFIX + "CLIENT_ID", "").strip()
    if not client_id or not secret:
        raise ConfigError(f"{PREFIX}ISSUER needs {PREFIX}CLIENT_ID and {PREFIX}CLIENT_SECRET "
                          f"(or {PREFIX}CLIENT_SECRET_FILE)")
    optional = {k: env[PREFIX + k.upper()].strip() for k in
                ("name", "groups_claim", "username_claim", "scopes")
                if env.get(PREFIX + k.upper())}
    optional.setdefault("name", parts.hostname or issuer)
    if "openid" not in optional.get("scopes", "openid").split():
        raise ConfigError(f"{PREFIX}SCOPES must include openid")
    return Provider(issuer=issuer, client_id=client_id, client_secret=secret,
                    roles=parse_roles(env.get(PREFIX + "ROLES", "")), **optional)


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def groups_of(claims: Mapping[str, Any], provider: Provider) -> list[str]:
    value = claim(claims, provider.groups_claim)
    if isinstance(value, str):
        return [value]
    return [g for g in value if isinstance(g, str)] if isinstance(value, list) else []


def derive(rules: tuple[tuple[str, Grant], ...], groups: list[str]) -> Grants | None:
    """The highest instance role any of ``groups`` (or ``*``) is mapped to (``none`` if they
    are mapped to scope roles only) and the scope roles; None if no group is mapped at all."""
    matched = [(g, grant) for g, grant in rules if g == ANY_GROUP or g in groups]
    if not matched:
        return None
    instance = [grant.role for _, grant in matched if grant.scope is None]
    return Grants(role=max(instance, key=accounts.RANK.__getitem__) if instance else "none",
                  groups=tuple(dict.fromkeys(g for g, _ in matched)),
                  scoped=tuple((g, grant) for g, grant in matched if grant.scope))


def apply_grants(s: Session, user: User, grants: Grants, actor: Actor) -> None:
    """The one place a sign-in's grants become roles: the instance role, and the scope roles
    SSO gave (``source='sso'``: re-derived each time; grants made by hand are left alone)."""
    _apply_scoped(s, user, grants, actor)
    if user.role != grants.role:
        if grants.role != "admin" and accounts.is_last_admin(s, user):
            # the provider would leave no active admin, and nobody could undo it: keep this one
            audit.record(s, actor, "user.role", outcome="denied", target=user.username,
                         details={"role": grants.role, "was": user.role, "via": "sso",
                                  "reason": "last active admin"})
            return
        audit.record(s, actor, "user.role", target=user.username,
                     details={"role": grants.role, "was": user.role, "via": "sso"})
        user.role = grants.role


def _apply_scoped(s: Session, user: User, grants: Grants, actor: Actor) -> None:
    wanted: dict[str, str] = {}
    for _group, grant in grants.scoped:
        if accounts.RANK[grant.role] >= accounts.RANK.get(wanted.get(grant.scope, ""), -1):
            wanted[grant.scope] = grant.role
    ids = {name: ws_id for name, ws_id in s.execute(
        select(Workspace.name, Workspace.id).where(Workspace.name.in_(sorted(wanted))))}
    for name in sorted(set(wanted) - set(ids)):
        # a mapping may name a scope before an admin creates it: not a reason to refuse
        log.warning("%sROLES names workspace %r, which does not exist: skipped", PREFIX, name)
    have = {row.workspace_id: row for row in
            s.scalars(select(ScopeRole).where(ScopeRole.user_id == user.id))}
    for name, ws_id in sorted(ids.items()):
        row = have.get(ws_id)
        if row is not None and (row.source != "sso" or row.role == wanted[name]):
            continue  # a grant made by hand wins; an unchanged one stays
        if row is None:
            row = ScopeRole(user_id=user.id, workspace_id=ws_id, source="sso",
                            created_by=actor.label)
            s.add(row)
        row.role = wanted[name]
        audit.record(s, actor, "scope.grant", workspace=name, target=user.username,
                     details={"role": wanted[name], "via": "sso"})
    kept = set(ids.values())
    stale = [row for ws_id, row in have.items() if row.source == "sso" and ws_id not in kept]
    for row in stale:
        audit.record(s, actor, "scope.revoke", target=user.username,
                     workspace=row.workspace.name, details={"via": "sso"})
    if stale:
        s.execute(delete(ScopeRole).where(ScopeRole.id.in_([r.id for r in stale])))


def username_for(claims: Mapping[str, Any], provider: Provider) -> str:
    """A Workbench username from the provider's name claim (else email, else subject)."""
    raw = claim(claims, provider.username_claim) or claims.get("email") or claims.get("sub")
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", str(raw or "")).lstrip("._@-")[:64]
    return name if accounts.USERNAME.match(name) else ""


def sign_in(s: Session, provider: Provider, claims: Mapping[str, Any], source: str) -> User:
    """The user for verified ID-token claims: found by (issuer, subject) or created, with the
    role their groups give now.  Refusals raise PermissionDenied carrying their audit event."""
    anonymous = Actor("anonymous", source=source)
    username = username_for(claims, provider)
    target = username or str(claims.get("sub", ""))[:200]

    def refuse(message: str, reason: str) -> PermissionDenied:
        return audit.refused(PermissionDenied(message), anonymous, "auth.sso", target=target,
                             details={"provider": provider.name, "reason": reason})

    groups = groups_of(claims, provider)
    grants = derive(provider.roles, groups)
    if grants is None:
        raise refuse(f"Your {provider.name} account is in no group that has a role in "
                     "Workbench. Ask an administrator to add you to one.", "no mapped group")
    ident = s.scalar(select(SsoIdentity).where(SsoIdentity.issuer == claims["iss"],
                                               SsoIdentity.subject == str(claims["sub"])))
    if ident is not None:
        user = s.get(User, ident.user_id)
        ident.last_sign_in_at = utcnow()
    else:
        if not username:
            raise refuse(f"{provider.name} sent no usable user name.", "no username")
        if s.scalar(select(User.id).where(User.username == username)) is not None:
            raise refuse(f"A Workbench account named {username!r} already exists and is not "
                         f"linked to {provider.name}. Ask an administrator.", "name taken")
        user = User(username=username, password_hash=NO_PASSWORD, role=grants.role)
        s.add(user)
        s.flush()
        s.add(SsoIdentity(user_id=user.id, issuer=claims["iss"], subject=str(claims["sub"])))
        audit.record(s, Actor(provider.name, role="admin", source=source, kind="sso"),
                     "user.create", target=username,
                     details={"role": grants.role, "via": "sso"})
    if user.disabled:
        raise refuse("This Workbench account is disabled.", "disabled")
    me = Actor(user.username, role=grants.role, source=source)
    apply_grants(s, user, grants, me)
    audit.record(s, me, "auth.sso", target=user.username,
                 details={"provider": provider.name, "role": grants.role,
                          "groups": list(grants.groups)})
    return user
