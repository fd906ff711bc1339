"""Resolving references to values: the one read path that decrypts, for runners only."""
from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from typing import Sequence

from sqlalchemy import bindparam, false, func, select, true, update

from . import audit, crypto
from .accounts import TOKEN_QUERY, TOUCH_EVERY, stale
from .audit import Actor
from .credentials import decode_values
from .crypto import Barrier
from .db import utcnow
from .errors import CryptoError, NotFound, PermissionDenied, ValidationError
from .models import Credential, CredentialVersion, Workspace
from .pipeline import names
from .pipeline.resolve import Ref, ResolvedCredential, Resolver
from .policy import CredentialPolicy
from .scopes import nearest
from .statements import Prepared, Raw
from .vault import Vault

def parse_ref(text: str) -> Ref:
    """``id`` or ``id@N`` by the pipelines' own rules; a clear 422 when malformed."""
    ref = names.parse_ref(text)
    if ref is None:
        raise ValidationError(f"bad credential reference {str(text)[:80]!r} (ID or ID@N)",
                              field="refs")
    return ref


def resolve(raw: Raw, barrier: Barrier, actor: Actor, *, workspace: str, refs: Sequence[Ref],
            context: dict | None = None,
            prefetch: Prefetch | None = None) -> dict[Ref, ResolvedCredential]:
    """Decrypt the referenced versions: only runner tokens (of this workspace) and the embedded
    runner may do this.  Every resolve, and every refusal, is audited."""
    ctx = {k: str(v)[:200] for k, v in (context or {}).items() if k in ("pipeline", "step", "run")}
    target = ",".join(map(str, refs))[:200]
    if actor.role != "runner" and actor.kind != "system":
        raise audit.refused(PermissionDenied("only runner tokens can resolve credential values"),
                            actor, "credential.resolve", workspace=workspace, target=target,
                            details=ctx)
    if actor.workspace is not None and actor.workspace != workspace:
        raise audit.refused(PermissionDenied(
            f"this runner token is scoped to workspace {actor.workspace!r}"),
            actor, "credential.resolve", workspace=workspace, target=target, details=ctx)
    if actor.kind == "runner" and "*" not in actor.allow:
        # outside a run (no run token), a runner token resolves only what it was created for
        denied = [r.id for r in refs if r.id not in actor.allow]
        if denied:
            raise audit.refused(PermissionDenied(
                f"runner token {actor.name!r} may not resolve {', '.join(map(repr, denied))} "
                "ad hoc: open a run of an indexed pipeline (POST /api/v1/runs), or have an "
                "admin create the token with --allow for it"),
                actor, "credential.resolve", workspace=workspace, target=",".join(denied),
                details={**ctx, "rule": "allow-list"})
    out: dict[Ref, ResolvedCredential] = {}
    missing: list[str] = []
    touch: list[int] = []  # credential pks whose "last used" is worth rewriting
    inherited: dict[str, str] = {}  # credential ID → the scope above it came from
    now = utcnow()
    cutoff = now - TOUCH_EVERY
    for ref in refs:
        if prefetch is not None and prefetch.done and (workspace, ref) == prefetch.key:
            row = prefetch.row
        else:
            row = raw.one(_VERSION_ROW[bool(ref.version)], workspace=workspace, cred_id=ref.id,
                          version=ref.version, cutoff=cutoff)
        if row is None:
            missing.append(str(ref))
            continue
        if row.protected and actor.kind == "runner":
            raise audit.refused(PermissionDenied(
                f"credential {row.cred_id!r} is protected: it is released only to runs on "
                "protected refs, never ad hoc"), actor, "credential.resolve",
                workspace=workspace, target=row.cred_id, details={**ctx, "rule": "protected"})
        aad = crypto.binding(row.owner, row.cred_id, row.version, row.type)  # its own scope
        try:
            plaintext = barrier.open(row.wrapped_key, row.ciphertext, aad)
        except CryptoError:
            raise audit.refused(
                CryptoError(f"credential {row.cred_id!r} version {row.version} does not decrypt "
                            "(wrong key, or data moved or altered)"),
                actor, "credential.resolve", workspace=workspace, target=row.cred_id,
                details={**ctx, "version": row.version}, outcome="failed") from None
        out[ref] = ResolvedCredential(row.cred_id, row.version, row.type,
                                      decode_values(plaintext))
        if row.owner != workspace:
            inherited[row.cred_id] = row.owner
        if row.stale:
            touch.append(row.pk)
    if missing:
        raise audit.refused(
            NotFound(f"unknown credential reference(s): {', '.join(missing)}", missing=missing),
            actor, "credential.resolve", workspace=workspace, target=",".join(missing),
            details={**ctx, "missing": missing}, outcome="failed")
    if touch:
        raw.many(_TOUCH, [{"pk": pk, "now": now} for pk in touch])
    audit.append(raw, actor, "credential.resolve",
                 [(rc.id, {**ctx, "version": rc.version,
                           **({"from": inherited[rc.id]} if rc.id in inherited else {})})
                  for rc in out.values()],
                 workspace=workspace)
    return out


def _version_query(pinned: bool):
    """The pinned (or current) version of the credential a run in the scope gets (its own,
    else the nearest inherited one: ``scopes.nearest``), with what resolve needs of it."""
    c, v, w = Credential.__table__.c, CredentialVersion.__table__.c, Workspace.__table__.c
    p = CredentialPolicy.__table__.c
    want = bindparam("version") if pinned else c.current_version
    return (select(c.pk, c.cred_id, w.name.label("owner"), stale(c.last_used_at).label("stale"),
                   v.version, v.type, v.wrapped_key, v.ciphertext,
                   func.coalesce(p.protected, false()).label("protected"))
            .select_from(Credential.__table__
                         .join(Workspace.__table__, w.id == c.workspace_id)
                         .join(CredentialVersion.__table__,
                               (v.credential_pk == c.pk) & (v.version == want))
                         .outerjoin(CredentialPolicy.__table__, p.credential_pk == c.pk))
            .where(c.pk == nearest(bindparam("cred_id"))))


def _with_token(pinned: bool) -> Prepared:
    """The token check's row, and the version's columns (``v_…``, NULL when there is none)."""
    version = _version_query(pinned).subquery("v")
    return Prepared(TOKEN_QUERY.add_columns(*(col.label(f"v_{col.name}") for col in version.c))
                    .outerjoin(version, true()))


# Keyed by "is the version pinned".
_VERSION_ROW = {pinned: Prepared(_version_query(pinned)) for pinned in (False, True)}
_WITH_TOKEN = {pinned: _with_token(pinned) for pinned in (False, True)}
_TOUCH = Prepared(update(Credential.__table__).where(Credential.__table__.c.pk == bindparam("pk"))
                  .values(last_used_at=bindparam("now")))
_VersionRow = namedtuple("_VersionRow", _version_query(False).selected_columns.keys())


class Prefetch:
    """A token lookup (``accounts.token_actor(lookup=…)``) that reads one reference in the same
    statement: a step usually asks for one credential, so this saves a round trip to
    PostgreSQL, or a read on SQLite, on every resolve.  Nothing is decrypted or returned
    before the token and its scope are checked."""

    def __init__(self, workspace: str, ref: Ref):
        self.key = (workspace, ref)
        self.done, self.row = False, None

    def __call__(self, raw: Raw, digest: str, cutoff: datetime):
        workspace, ref = self.key
        row = raw.one(_WITH_TOKEN[bool(ref.version)], digest=digest, cutoff=cutoff,
                      workspace=workspace, cred_id=ref.id, version=ref.version)
        if row is not None:
            self.done = True
            n = len(_VersionRow._fields)
            self.row = None if row.v_pk is None else _VersionRow._make(row[-n:])
        return row


class VaultResolver(Resolver):
    """The embedded runner's resolver: reads the local vault directly."""

    def __init__(self, vault: Vault, workspace: str, actor: Actor = audit.SYSTEM):
        self.vault, self.workspace, self.actor = vault, workspace, actor

    def resolve(self, refs, *, context=None):
        with audit.hot_unit(self.vault) as raw:
            return resolve(raw, self.vault.barrier, self.actor, workspace=self.workspace, refs=refs,
                           context=context)
