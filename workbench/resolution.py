"""Resolving references to values: the one read path that decrypts, for runners only."""
from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from typing import Sequence

from sqlalchemy import and_, any_, bindparam, exists, false, func, insert, literal, or_, select, \
    true, update

from . import audit, crypto
from .accounts import TOKEN_QUERY, TOUCH_EVERY, stale
from .audit import Actor
from .credentials import decode_values
from .crypto import Barrier
from .db import utcnow
from .errors import CryptoError, NotFound, PermissionDenied, ValidationError
from .models import AuditEvent, Credential, CredentialVersion, Workspace
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


def audit_context(context: dict | None) -> dict[str, str]:
    """What of a request's context goes into its audit rows."""
    return {k: str(v)[:200] for k, v in (context or {}).items() if k in ("pipeline", "step", "run")}


def resolve(raw: Raw, barrier: Barrier, actor: Actor, *, workspace: str, refs: Sequence[Ref],
            context: dict | None = None,
            prefetch: Prefetch | None = None) -> dict[Ref, ResolvedCredential]:
    """Decrypt the referenced versions: only runner tokens (of this workspace) and the embedded
    runner may do this.  Every resolve, and every refusal, is audited."""
    ctx = audit_context(context)
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
    if prefetch is not None and len(refs) == 1 and prefetch.done:
        prefetch.opened(prefetch.row)  # decrypted: the next resolve of it may take one statement
        if prefetch.audited:
            # that statement committed this very row already: its conditions are the checks
            # above, and it matched the version against one that decrypted before
            return out
    audit.append(raw, actor, "credential.resolve",
                 [(rc.id, {**ctx, "version": rc.version,
                           **({"from": inherited[rc.id]} if rc.id in inherited else {})})
                  for rc in out.values()],
                 workspace=workspace)
    return out


def _version_query(pinned: bool, own: bool = False):
    """The pinned (or current) version of the credential a run in the scope gets (its own,
    else the nearest inherited one: ``scopes.nearest``), with what resolve needs of it;
    ``own``: the scope's own credential only (none when it has none)."""
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
            .where(and_(w.name == bindparam("workspace"), c.cred_id == bindparam("cred_id"))
                   if own else c.pk == nearest(bindparam("cred_id"))))


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


def _audited(pinned: bool, own: bool) -> Prepared:
    """PostgreSQL: ``_with_token``'s row, and in the same statement the audit row of resolving
    that version, inserted only when every check ``resolve`` makes would pass and the version
    is byte for byte the one given (``g_…``), which this process has decrypted before.  One
    round trip, one commit, as many as the floor makes.  ``own``: the version given is of the
    scope's own credential, which shadows any other: a plain lookup finds it, without the
    walk up the tree (``Prefetch`` reads anew when it is gone)."""
    tok, e = TOKEN_QUERY.cte("t"), AuditEvent.__table__
    ver = _version_query(pinned, own).cte("v")
    allowed = func.string_to_array(tok.c.allow, literal("\n"))
    checks = and_(  # token_actor's and resolve's checks of a runner token's ad-hoc resolve
        tok.c.kind == "runner", ~tok.c.revoked, tok.c.workspace == bindparam("workspace"),
        or_(literal("*") == any_(allowed), bindparam("cred_id") == any_(allowed)),
        ~ver.c.protected,
        # the version that decrypted before (the AAD's parts and both ciphertexts)
        ver.c.pk == bindparam("g_pk"), ver.c.owner == bindparam("g_owner"),
        ver.c.version == bindparam("g_version"), ver.c.type == bindparam("g_type"),
        ver.c.wrapped_key == bindparam("g_wrapped_key"),
        ver.c.ciphertext == bindparam("g_ciphertext"))
    row = (select(bindparam("at", type_=e.c.at.type), literal("runner:") + tok.c.name,
                  literal("credential.resolve"), literal("ok"), bindparam("workspace"),
                  ver.c.cred_id, bindparam("source"), bindparam("details", type_=e.c.details.type))
           .select_from(tok.join(ver, true())).where(checks))
    added = (insert(e).from_select(["at", "actor", "action", "outcome", "workspace", "target",
                                    "source", "details"], row)
             .returning(e.c.id).cte("added"))
    return Prepared(select(*tok.c, *(col.label(f"v_{col.name}") for col in ver.c),
                           exists(select(added.c.id)).label("audited"))
                    .select_from(tok.outerjoin(ver, true())))


# Keyed by (is the version pinned, is it the scope's own credential).
_AUDITED = {(pinned, own): _audited(pinned, own) for pinned in (False, True)
            for own in (False, True)}


class Opened:
    """The versions this process decrypted last, by workspace and reference: what the one
    statement of ``Prefetch`` checks a version against before it audits a resolve of it.
    Only a check: what a resolve returns is always read and decrypted anew."""

    LIMIT = 1_000  # rows hold ciphertexts (a kubeconfig's is kilobytes): forgotten past this

    def __init__(self):
        self._rows: dict[tuple[str, Ref], _VersionRow] = {}

    def get(self, workspace: str, ref: Ref) -> _VersionRow | None:
        return self._rows.get((workspace, ref))

    def put(self, workspace: str, ref: Ref, row: _VersionRow) -> None:
        if len(self._rows) >= self.LIMIT:
            self._rows.clear()
        self._rows[(workspace, ref)] = row


def opened(vault: Vault) -> Opened:
    """The vault's ``Opened`` in this process: kept on the vault, as its job queue is, not in
    a module-level map."""
    return vault.__dict__.setdefault("_opened", Opened())


class Prefetch:
    """A token lookup (``accounts.token_actor(lookup=…)``) that reads one reference in the same
    statement: a step usually asks for one credential, so this saves a round trip to
    PostgreSQL, or a read on SQLite, on every resolve.  Nothing is decrypted or returned
    before the token and its scope are checked.

    On PostgreSQL, for a request of that one reference whose version this process has
    decrypted before (``opened``), the same statement also commits its audit row
    (``_audited``), so a resolve makes one round trip.  ``audited`` says it did."""

    def __init__(self, workspace: str, ref: Ref, *, opened: Opened | None = None,
                 context: dict | None = None, source: str = ""):
        self.key = (workspace, ref)
        self.done, self.row, self.audited = False, None, False
        self._opened, self.context, self.source = opened, context, source

    def __call__(self, raw: Raw, digest: str, cutoff: datetime):
        workspace, ref = self.key
        known = self._opened.get(workspace, ref) \
            if self._opened is not None and raw.dialect.name == "postgresql" else None
        values = dict(digest=digest, cutoff=cutoff, workspace=workspace, cred_id=ref.id,
                      version=ref.version)
        n = len(_VersionRow._fields)
        if known is None:
            row = raw.one(_WITH_TOKEN[bool(ref.version)], **values)
            version = row[-n:] if row is not None else None
        else:
            details = {**audit_context(self.context), "version": known.version,
                       **({"from": known.owner} if known.owner != workspace else {})}
            own = known.owner == workspace
            row = raw.one(_AUDITED[bool(ref.version), own], **values, at=utcnow(),
                          source=self.source, details=details,
                          **{f"g_{k}": getattr(known, k) for k in
                             ("pk", "owner", "version", "type", "wrapped_key", "ciphertext")})
            version = row[-n - 1:-1] if row is not None else None
            self.audited = row is not None and row.audited
            if own and row is not None and version[0] is None:
                return row  # no own credential (any more): resolve reads the nearest one
        if row is not None:
            self.done = True
            self.row = None if version[0] is None else _VersionRow._make(version)
        return row

    def opened(self, row: _VersionRow) -> None:
        """``row`` decrypted (and was answered)."""
        if self._opened is not None:
            self._opened.put(*self.key, row)


class VaultResolver(Resolver):
    """The embedded runner's resolver: reads the local vault directly."""

    def __init__(self, vault: Vault, workspace: str, actor: Actor = audit.SYSTEM):
        self.vault, self.workspace, self.actor = vault, workspace, actor

    def resolve(self, refs, *, context=None):
        with audit.hot_unit(self.vault) as raw:
            return resolve(raw, self.vault.barrier, self.actor, workspace=self.workspace, refs=refs,
                           context=context)
