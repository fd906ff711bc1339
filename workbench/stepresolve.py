"""``POST /api/v1/resolve`` with a run token: one step's credentials, once per step attempt.

On the hot path (``api.hotpath.resolve_request`` hands run tokens here): one statement reads
the run by its token together with the step's grants, their credentials and versions; nothing
is decrypted before the token, the run's state and the step's grants are checked.  Then the
step attempt is claimed (a unique row: a second claim fails) and the audit rows are committed,
before any value leaves."""
from __future__ import annotations

import hmac
import json
from typing import Any

from sqlalchemy import and_, bindparam, func, select

from . import audit, credtypes, crypto, idtokens
from .accounts import TOUCH_EVERY, stale
from .audit import Actor
from .credentials import decode_values
from .db import utcnow
from .errors import (AuthenticationRequired, BadRequest, CryptoError, NotFound,
                     PermissionDenied, ValidationError, WorkbenchError)
from .models import Credential, CredentialVersion, Workspace
from .pipeline.resolve import Ref, ResolvedCredential
from .resolution import _TOUCH, parse_ref
from .scopes import nearest
from .serverruns import MAX_ATTEMPTS, PREFIX, RunGrant, ServerRun, StepRelease, hash_token  # noqa: F401 - PREFIX re-exported
from .statements import Prepared, Raw


def _grants_query():
    r, g = ServerRun.__table__.c, RunGrant.__table__.c
    c, v = Credential.__table__.c, CredentialVersion.__table__.c
    grant = and_(g.run_id == r.id, g.step == bindparam("step"))
    # the credential a run in the requested workspace gets: its own, else the nearest
    # inherited one (``scopes.nearest``, as a plain resolve).  The request's workspace must be
    # the run's (checked before anything is decrypted), so it stands for the run's here and
    # the tree walk needs no correlation with the run's row.
    cred = c.pk == nearest(g.credential_id)
    owner = Workspace.__table__.alias("owner")
    ver = and_(v.credential_pk == c.pk, v.version == func.coalesce(g.version, c.current_version))
    return (select(r.id, r.workspace, r.pipeline, r.steps, r.runner, r.token_hash, r.source,
                   r.ref, r.event, r.commit, r.id_tokens,
                   r.closed_at.is_not(None).label("closed"),
                   (r.expires_at > bindparam("now", type_=r.expires_at.type)).label("live"),
                   g.credential_id, g.version.label("pinned"), g.rule, g.message,
                   c.pk, stale(c.last_used_at).label("stale"), owner.c.name.label("owner"),
                   v.version, v.type, v.wrapped_key, v.ciphertext)
            .select_from(ServerRun.__table__.outerjoin(RunGrant.__table__, grant)
                         .outerjoin(Credential.__table__, cred)
                         .outerjoin(owner, owner.c.id == c.workspace_id)
                         .outerjoin(CredentialVersion.__table__, ver))
            .where(r.token_hash == bindparam("digest")).order_by(g.id))


_GRANTS = Prepared(_grants_query())
_CLAIM = Prepared(StepRelease.__table__.insert().values(
    run_id=bindparam("run_id"), step=bindparam("step"), attempt=bindparam("attempt"),
    credentials=bindparam("credentials"), released_at=bindparam("now")))


def parse_step_body(data: Any) -> tuple[str, int, list[Ref] | None]:
    """(step, attempt, refs or None for "everything the step binds"), or the 4xx error."""
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    step, attempt, refs = data.get("step"), data.get("attempt", 1), data.get("refs")
    if not isinstance(step, str) or not step or len(step) > 64:
        raise ValidationError("a run token resolves for one step: name it in 'step'",
                              field="step")
    if isinstance(attempt, bool) or not isinstance(attempt, int) \
            or not 1 <= attempt <= MAX_ATTEMPTS:
        raise ValidationError(f"attempt is a number from 1 to {MAX_ATTEMPTS}", field="attempt")
    if refs is not None:
        if not isinstance(refs, list) or not refs or len(refs) > 100:
            raise ValidationError("refs must be a list of 1–100 references", field="refs")
        refs = [parse_ref(r if isinstance(r, str) else "") for r in refs]
    return step, attempt, refs


def resolve_step(vault, data: Any, *, workspace: str, secret: str, source: str,
                 issuer: str = "") -> dict[str, Any]:
    """The answer to a run token's resolve request, or an error (audited)."""
    problem = None
    try:
        step, attempt, refs = parse_step_body(data)
    except WorkbenchError as e:
        step, attempt, refs, problem = "", 1, None, e
    digest = hash_token(secret)
    now = utcnow()
    with audit.hot_unit(vault) as raw:
        rows = raw.all(_GRANTS, digest=digest, step=step, now=now, cutoff=now - TOUCH_EVERY,
                       workspace=workspace)
        if not rows or not hmac.compare_digest(rows[0].token_hash, digest):
            raise audit.refused(AuthenticationRequired("invalid or revoked token"),
                                Actor("anonymous", source=source, kind="token"), "auth.token",
                                target="/api/v1/resolve")
        run = rows[0]
        who = Actor(run.runner, role="runner", source=source, workspace=run.workspace,
                    kind="runner")
        ctx = {"run": run.id, "pipeline": run.pipeline, "step": step[:64]}

        def refuse(err, target="", rule="", outcome="denied", **more):
            return audit.refused(err, who, "credential.resolve", workspace=run.workspace,
                                 target=target, outcome=outcome,
                                 details={**ctx, **({"rule": rule} if rule else {}), **more})
        if run.closed:
            raise refuse(AuthenticationRequired(f"run {run.id} is closed: its token no longer "
                                                "resolves"), rule="run-closed")
        if not run.live:
            raise refuse(AuthenticationRequired(f"the token of run {run.id} has expired"),
                         rule="run-expired")
        if workspace != run.workspace:
            raise refuse(PermissionDenied(f"this run token is scoped to workspace "
                                          f"{run.workspace!r}"), rule="workspace")
        if problem is not None:
            raise problem
        if step not in run.steps.split("\n"):
            raise refuse(PermissionDenied(f"pipeline {run.pipeline!r} has no step {step!r}"),
                         rule="no-such-step")
        bound = {str(Ref(g.credential_id, g.pinned)): g for g in rows if g.credential_id}
        wanted = list(bound) if refs is None else list(dict.fromkeys(map(str, refs)))
        extra = [ref for ref in wanted if ref not in bound]
        if extra:
            raise refuse(PermissionDenied(
                f"step {step!r} of pipeline {run.pipeline!r} does not bind "
                f"{', '.join(map(repr, extra))}: a run token releases only what the step's "
                "indexed definition binds"), target=",".join(extra), rule="not-bound")
        for ref in wanted:
            g = bound[ref]
            if g.rule:
                raise refuse(PermissionDenied(g.message), target=g.credential_id, rule=g.rule)
        out = _open(raw, vault.barrier, [bound[ref] for ref in wanted], refuse)
        came = {g.credential_id: g.owner for g in map(bound.get, wanted)
                if g.owner != run.workspace}  # inherited from a scope above
        claim = {"run_id": run.id, "step": step, "attempt": attempt, "now": now,
                 "credentials": "\n".join(f"{rc.id}@{rc.version}" for rc in out.values())}
        rows = audit.appending(who, "credential.resolve",
                               [(rc.id, {**ctx, "attempt": attempt, "version": rc.version,
                                         **({"from": came[rc.id]} if rc.id in came else {})})
                                for rc in out.values()], workspace=run.workspace)
        try:  # the claim (a unique row) and the audit rows: one commit, before any value
            raw.together((_CLAIM, [claim]), *([rows] if out else []))
        except raw.dialect.loaded_dbapi.IntegrityError:
            raise refuse(PermissionDenied(
                f"step {step!r} attempt {attempt} of run {run.id} has already received its "
                f"credentials (at most {MAX_ATTEMPTS} attempts, once each)"),
                target=",".join(wanted), rule="once-per-attempt", attempt=attempt) from None
        touch = [{"pk": g.pk, "now": now} for g in map(bound.get, wanted) if g.stale]
        if touch:
            raw.many(_TOUCH, touch)
    answer = {"run": run.id, "step": step, "attempt": attempt,
              "credentials": [{"ref": ref, "id": rc.id, "version": rc.version,
                               "type": rc.type, "values": credtypes.to_json(rc.values)}
                              for ref, rc in out.items()]}
    asks = json.loads(run.id_tokens).get(step) if run.id_tokens else None
    if asks:  # after the claim and its audit: one identity token per step attempt
        answer["id_token"] = _identity(vault, run, step, asks, who,
                                       vault.settings.id_token_issuer or issuer, attempt)
    return answer


def _identity(vault, run, step: str, asks: list, who: Actor, issuer: str, attempt: int) -> str:
    """Sign the step's identity token; its issue is audited (the token itself never is)."""
    audience, timeout = asks
    with audit.unit(vault.factory) as s:
        token = idtokens.issue(s, vault.barrier, issuer=issuer, workspace=run.workspace,
                               source=run.source, pipeline=run.pipeline, ref=run.ref,
                               step=step, audience=audience, run_id=run.id, sha=run.commit,
                               event=run.event, timeout=timeout)
        audit.record(s, who, "id_token.issue", workspace=run.workspace, target=step,
                     details={"run": run.id, "pipeline": run.pipeline, "aud": audience,
                              "attempt": attempt})
    return token


def _open(raw: Raw, barrier, grants, refuse) -> dict[str, ResolvedCredential]:
    """Decrypt the grants' versions (all or nothing); each is bound to its own scope."""
    missing = [str(Ref(g.credential_id, g.pinned)) for g in grants if g.wrapped_key is None]
    if missing:
        raise refuse(NotFound(f"unknown credential reference(s): {', '.join(missing)}",
                              missing=missing), target=",".join(missing), outcome="failed")
    out = {}
    for g in grants:
        aad = crypto.binding(g.owner, g.credential_id, g.version, g.type)
        try:
            plaintext = barrier.open(g.wrapped_key, g.ciphertext, aad)
        except CryptoError:
            raise refuse(CryptoError(f"credential {g.credential_id!r} version {g.version} does "
                                     "not decrypt (wrong key, or data moved or altered)"),
                         target=g.credential_id, outcome="failed", version=g.version) from None
        out[str(Ref(g.credential_id, g.pinned))] = ResolvedCredential(
            g.credential_id, g.version, g.type, decode_values(plaintext))
    return out

