"""Resolving references to values: the one read path that decrypts, for runners only."""
from __future__ import annotations

from collections import namedtuple
from datetime import datetime
from time import monotonic
from typing import Sequence

from sqlalchemy import and_, bindparam, false, func, insert, literal, select, true, update

from . import audit, crypto
from .accounts import TOKEN_QUERY, TOUCH_EVERY, stale
from .audit import Actor
from .credentials import decode_values
from .crypto import Barrier
from .db import utcnow
from .errors import CryptoError, NotFound, PermissionDenied, ValidationError
from .models import ApiToken, AuditEvent, Credential, CredentialVersion, Workspace
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
    audit.append(raw, actor, "credential.resolve",
                 [(rc.id, {**ctx, "version": rc.version,
                           **({"from": inherited[rc.id]} if rc.id in inherited else {})})
                  for rc in out.values()],
                 workspace=workspace)
    return out


def _version_query(pinned: bool, own: bool = False, by_id: bool = False):
    """The pinned (or current) version of the credential a run in the scope gets (its own,
    else the nearest inherited one: ``scopes.nearest``), with what resolve needs of it;
    ``own``: the scope's own credential only (none when it has none); ``by_id`` (with ``own``,
    for ``_confirm``): that scope by its id (``g_owner_id``), without the join that looks it up
    by name, and so without the owner's columns."""
    c, v, w = Credential.__table__.c, CredentialVersion.__table__.c, Workspace.__table__.c
    p = CredentialPolicy.__table__.c
    want = bindparam("version") if pinned else c.current_version
    creds = Credential.__table__ if by_id else \
        Credential.__table__.join(Workspace.__table__, w.id == c.workspace_id)
    if by_id:
        where = and_(c.workspace_id == bindparam("g_owner_id"), c.cred_id == bindparam("cred_id"))
    elif own:
        where = and_(w.name == bindparam("workspace"), c.cred_id == bindparam("cred_id"))
    else:
        where = c.pk == nearest(bindparam("cred_id"))
    owner = () if by_id else (w.name.label("owner"),)
    owner_id = () if by_id else (c.workspace_id.label("owner_id"),)
    return (select(c.pk, c.cred_id, *owner, stale(c.last_used_at).label("stale"),
                   v.version, v.type, v.wrapped_key, v.ciphertext,
                   func.coalesce(p.protected, false()).label("protected"), *owner_id)
            .select_from(creds.join(CredentialVersion.__table__,
                                    (v.credential_pk == c.pk) & (v.version == want))
                         .outerjoin(CredentialPolicy.__table__, p.credential_pk == c.pk))
            .where(where))


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


def _runner_token():
    """TOKEN_QUERY's columns a runner token's check needs: no user (runner tokens have none),
    and its scope by id (ids and names of scopes never change: no join to compare names)."""
    t = ApiToken.__table__.c
    return (select(t.kind, t.name, t.allow, t.revoked_at.is_not(None).label("revoked"),
                   stale(t.last_used_at).label("stale"), t.workspace_id.label("scope_id"))
            .where(t.token_hash == bindparam("digest")))


_RUNNER_TOKEN = _runner_token()


def _confirm(pinned: bool, own: bool) -> Prepared:
    """The audit row of a resolve ``Answers`` holds the answer to, inserted only when every
    check ``resolve`` and ``accounts.token_actor`` make would pass today and the version is
    byte for byte the one that answer was decrypted from (``g_…``); returns its id, or no row.
    One statement and one commit, as the floor makes.  Neither "last used" time may be due for
    a rewrite (those resolves take the full path, which writes it).  ``own``: the version was
    the scope's own credential, which shadows any other: a plain lookup finds it, without the
    walk up the tree."""
    tok, e = _RUNNER_TOKEN.subquery("t"), AuditEvent.__table__
    ver = _version_query(pinned, own, by_id=own).subquery("v")
    checks = and_(
        tok.c.kind == "runner", ~tok.c.revoked, ~tok.c.stale,
        tok.c.name == bindparam("g_name"), tok.c.allow.is_not_distinct_from(bindparam("g_allow")),
        tok.c.scope_id.is_not_distinct_from(bindparam("g_scope_id")),
        ~ver.c.protected, ~ver.c.stale, ver.c.pk == bindparam("g_pk"),
        *(() if own else (ver.c.owner_id == bindparam("g_owner_id"),)),
        ver.c.version == bindparam("g_version"), ver.c.type == bindparam("g_type"),
        ver.c.wrapped_key == bindparam("g_wrapped_key"),
        ver.c.ciphertext == bindparam("g_ciphertext"))
    row = (select(bindparam("at", type_=e.c.at.type), literal("runner:") + tok.c.name,
                  literal("credential.resolve"), literal("ok"), bindparam("workspace"),
                  ver.c.cred_id, bindparam("source"), bindparam("details", type_=e.c.details.type))
           .select_from(tok.join(ver, true())).where(checks))
    return Prepared(insert(e).from_select(["at", "actor", "action", "outcome", "workspace",
                                           "target", "source", "details"], row)
                    .returning(e.c.id))


# What differs from one repeat of a resolve to the next; the rest is encoded once per answer.
_PER_REQUEST = ("workspace", "cutoff", "at", "source", "details")
# Keyed by (is the version pinned, is it the scope's own credential).
_CONFIRM = {(pinned, own): _confirm(pinned, own) for pinned in (False, True)
            for own in (False, True)}


class Answers:
    """The answers this process gave to one-reference resolves, by token digest, scope and
    reference, each with the version row it decrypted and the token facts it was checked
    against: a repeat of the request takes one statement (``_confirm``) that re-checks all of
    it in the database and commits the audit row, and then the same answer, without reading,
    decrypting or encoding again.  Anything changed (token revoked, new version, policy, key
    rotation, a nearer credential) makes that statement insert nothing, and the full path
    answers.  Answers hold values in memory: each for ``seconds`` at most, ``LIMIT`` at most
    (the process holds the key that opens every value anyway: docs/security.md)."""

    LIMIT = 1_000

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._got: dict[tuple, tuple[float, dict, dict]] = {}

    def get(self, key: tuple) -> tuple[dict, dict] | None:
        """(statement values, answer) of a live entry."""
        got = self._got.get(key)
        if got is None:
            return None
        if got[0] < monotonic():
            del self._got[key]
            return None
        return got[1], got[2]

    def put(self, key: tuple, values: dict, answer: dict) -> None:
        if self.seconds <= 0:
            return
        now = monotonic()
        if len(self._got) >= self.LIMIT:  # drop the expired; if none are, all
            self._got = {k: v for k, v in self._got.items() if v[0] >= now}
            if len(self._got) >= self.LIMIT:
                self._got.clear()
        self._got[key] = (now + self.seconds, values, answer)

    def drop(self, key: tuple) -> None:
        self._got.pop(key, None)


def answers(vault: Vault) -> Answers:
    """The vault's ``Answers`` in this process: kept on the vault, as its job queue is, not in
    a module-level map."""
    got = vault.__dict__.get("_answers")
    if got is None:
        got = vault.__dict__["_answers"] = Answers(vault.settings.resolve_cache_seconds)
    return got


def answer_again(raw: Raw, got: tuple[dict, dict], *, workspace: str, context: dict | None,
                 source: str) -> dict | None:
    """``got``'s answer if its one statement audited this resolve, else None (nothing written)."""
    values, answer = got
    own = values["g_owner"] == workspace
    details = {**audit_context(context), "version": values["g_version"],
               **({} if own else {"from": values["g_owner"]})}
    bound = values.get("bound")
    if bound is None:  # the entry's first repeat
        fixed = {k: v for k, v in values.items() if k not in ("pinned", "bound")}
        bound = values["bound"] = raw.bind(_CONFIRM[values["pinned"], own], fixed, _PER_REQUEST)
    now = utcnow()
    ids = raw.write_bound(bound, workspace=workspace, cutoff=now - TOUCH_EVERY, at=now,
                          source=source, details=details)
    return answer if ids else None


def to_remember(actor: Actor, digest: str, prefetch: Prefetch, ref: Ref) -> dict:
    """The values ``answer_again`` checks a repeat of this resolve against."""
    row = prefetch.row
    return dict(digest=digest, cred_id=ref.id, version=ref.version, pinned=bool(ref.version),
                g_name=actor.name, g_allow="\n".join(actor.allow) or None,
                g_scope_id=prefetch.scope_id, g_pk=row.pk, g_owner=row.owner,
                g_owner_id=row.owner_id,
                g_version=row.version, g_type=row.type, g_wrapped_key=row.wrapped_key,
                g_ciphertext=row.ciphertext)


class Prefetch:
    """A token lookup (``accounts.token_actor(lookup=…)``) that reads one reference in the same
    statement: a step usually asks for one credential, so this saves a round trip to
    PostgreSQL, or a read on SQLite, on every resolve.  Nothing is decrypted or returned
    before the token and its scope are checked."""

    def __init__(self, workspace: str, ref: Ref):
        self.key = (workspace, ref)
        self.done, self.row, self.scope_id = False, None, None

    def __call__(self, raw: Raw, digest: str, cutoff: datetime):
        workspace, ref = self.key
        row = raw.one(_WITH_TOKEN[bool(ref.version)], digest=digest, cutoff=cutoff,
                      workspace=workspace, cred_id=ref.id, version=ref.version)
        if row is not None:
            version = row[-len(_VersionRow._fields):]
            self.done, self.scope_id = True, row.scope_id  # the token's
            self.row = None if version[0] is None else _VersionRow._make(version)
        return row


class VaultResolver(Resolver):
    """The embedded runner's resolver: reads the local vault directly."""

    def __init__(self, vault: Vault, workspace: str, actor: Actor = audit.SYSTEM):
        self.vault, self.workspace, self.actor = vault, workspace, actor

    def resolve(self, refs, *, context=None):
        with audit.hot_unit(self.vault) as raw:
            return resolve(raw, self.vault.barrier, self.actor, workspace=self.workspace, refs=refs,
                           context=context)
