"""ORM models of the vault: workspaces, credentials and versions, keys, people, tokens, audit."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint, event, false, func, true)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import Base, utcnow
from .errors import PermissionDenied

TS = DateTime(timezone=True)


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)  # the ID: never changes
    title: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_by: Mapped[str] = mapped_column(String(100), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    # the scope tree: credentials of a scope are visible in every scope below it
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id"), nullable=True,
                                                  index=True)


class Credential(Base):
    __tablename__ = "credentials"
    # (column, pk) indexes serve the credentials table's sort orders and deep pages
    __table_args__ = (UniqueConstraint("workspace_id", "cred_id", name="uq_credential_id"),
                      Index("ix_credentials_created", "created_at", "pk"),
                      Index("ix_credentials_ws_created", "workspace_id", "created_at", "pk"),
                      Index("ix_credentials_type", "type", "created_at", "pk"),
                      Index("ix_credentials_status", "status", "created_at", "pk"),
                      Index("ix_credentials_name", "name", "pk"),
                      Index("ix_credentials_cred_id", "cred_id", "pk"))
    pk: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"))
    cred_id: Mapped[str] = mapped_column(String(63))  # the immutable ID pipelines refer to
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(32))
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    public: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # non-secret fields
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(32), default="Not tested")
    status_message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # False: only runs of this very scope see it, not those of the scopes below
    inherit: Mapped[bool] = mapped_column(default=True, server_default=true())

    workspace: Mapped[Workspace] = relationship(lazy="joined")
    versions: Mapped[list["CredentialVersion"]] = relationship(
        back_populates="credential", cascade="all, delete-orphan", passive_deletes=True,
        order_by="CredentialVersion.version")


# the credentials table sorts names case-insensitively
Index("ix_credentials_name_ci", func.lower(Credential.name), Credential.pk)


class CredentialVersion(Base):
    __tablename__ = "credential_versions"
    __table_args__ = (UniqueConstraint("credential_pk", "version", name="uq_version"),
                      Index("ix_versions_term", "key_term"))
    pk: Mapped[int] = mapped_column(primary_key=True)
    credential_pk: Mapped[int] = mapped_column(ForeignKey("credentials.pk", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    key_term: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    public: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)

    credential: Mapped[Credential] = relationship(back_populates="versions")


class KeyCheck(Base):
    """One row per master-key term: proves at start-up that the configured key is right."""

    __tablename__ = "key_checks"
    term: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin|editor|viewer|auditor|none
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    disabled: Mapped[bool] = mapped_column(default=False)
    # part of the session cookie's user ID; signing out bumps it, so a copied cookie dies too
    session_epoch: Mapped[int] = mapped_column(default=0, server_default="0")
    # set for a generated or admin-chosen password: the next sign-in must change it
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())

    # Flask-Login protocol, kept here so the web layer needs no wrapper class
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return not self.disabled

    def get_id(self) -> str:
        return f"{self.id}.{self.session_epoch}"


class ScopeRole(Base):
    """A user's role on one scope and, through inheritance, on every scope below it."""

    __tablename__ = "scope_roles"
    __table_args__ = (UniqueConstraint("user_id", "workspace_id", name="uq_scope_role"),
                      Index("ix_scope_roles_workspace", "workspace_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # admin | editor | viewer | auditor
    source: Mapped[str] = mapped_column(String(8), default="manual")  # manual | sso
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")

    user: Mapped[User] = relationship(lazy="joined")
    workspace: Mapped[Workspace] = relationship(lazy="joined")
    fresh = False  # set by access.grant when the row is new (not a column)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # personal | runner
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # shown to identify a token, never enough to use
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                                nullable=True)
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id"), nullable=True)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    # runner tokens: credential IDs ("\n"-joined, "*" for any) resolvable ad hoc, outside a
    # run of an indexed pipeline (policy.py, serverruns.py); None: none
    allow: Mapped[str | None] = mapped_column(Text, nullable=True)

    user: Mapped[User | None] = relationship(lazy="joined")
    workspace: Mapped[Workspace | None] = relationship(lazy="joined")


class AuditEvent(Base):
    """Append-only: the ORM refuses updates and deletes (see the listeners below)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_target", "target"))
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(TS, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied | failed
    workspace: Mapped[str] = mapped_column(String(63), default="")
    target: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(100), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _append_only(*_args):
    raise PermissionDenied("the audit log is append-only")
