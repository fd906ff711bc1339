"""Release rules per credential (protected refs, excluded events) and ``policy explain``."""
from __future__ import annotations

import fnmatch
import re
from datetime import datetime

from sqlalchemy import (Boolean, DateTime, ForeignKey, String, Text, UniqueConstraint, delete,
                        select)
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import access, audit, credentials
from .audit import Actor
from .db import Base, utcnow
from .errors import ValidationError
from .models import ApiToken
from .references import IndexedPipeline, PipelineReference, PipelineSource, find_references

EVENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
EXCLUSION = re.compile(r"^[a-z][a-z0-9_]{0,31}(:fork)?$")
PATTERN = re.compile(r"^[A-Za-z0-9._/*?\[\]-]{1,200}$")


class CredentialPolicy(Base):
    """How a credential may be released beyond "the step binds it": ``protected`` (only to
    runs on a protected ref of their source) and events it is never released to
    (``exclude_events``: "\\n"-joined ``event`` or ``event:fork``)."""

    __tablename__ = "credential_policies"
    __table_args__ = (UniqueConstraint("credential_pk", name="uq_policy_credential"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    credential_pk: Mapped[int] = mapped_column(ForeignKey("credentials.pk", ondelete="CASCADE"))
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    exclude_events: Mapped[str] = mapped_column(Text, default="")
    updated_by: Mapped[str] = mapped_column(String(100), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProtectedRef(Base):
    """A branch or tag glob (``main``, ``release/*``, ``v*``) that is protected in a source."""

    __tablename__ = "protected_refs"
    __table_args__ = (UniqueConstraint("source_id", "pattern", name="uq_protected_ref"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("pipeline_sources.id", ondelete="CASCADE"))
    pattern: Mapped[str] = mapped_column(String(200))


# ---- the rules ------------------------------------------------------------------------------

def short_ref(ref: str | None) -> str:
    """``refs/heads/main`` → ``main``, ``refs/tags/v1`` → ``v1``."""
    ref = ref or ""
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def is_protected(patterns: list[str], ref: str | None) -> bool:
    name = short_ref(ref)
    return bool(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def refusal(cred_id: str, protected: bool, exclude_events: str, *, source: str,
            patterns: list[str], ref: str | None, event: str | None, fork: bool
            ) -> tuple[str, str] | None:
    """(rule, message) that keeps ``cred_id`` from a run with this ref and event, or None."""
    if protected and not is_protected(patterns, ref):
        where = f"ref {short_ref(ref)!r}" if ref else "a run without a ref"
        return ("protected", f"credential {cred_id!r} is protected: it is released only to "
                f"runs on protected refs of source {source!r} ({where} is not one)")
    for rule in filter(None, (exclude_events or "").split("\n")):
        name, _, qualifier = rule.partition(":")
        if name == event and (not qualifier or fork):
            whom = f"{event} events from forks" if qualifier else f"{event} events"
            return (f"exclude_events {rule}",
                    f"credential {cred_id!r} is never released to {whom}")
    return None


# ---- settings -------------------------------------------------------------------------------

def get_policy(s: Session, workspace: str, cred_id: str) -> dict:
    c = credentials.get_credential(s, workspace, cred_id)
    p = s.scalar(select(CredentialPolicy).where(CredentialPolicy.credential_pk == c.pk))
    return {"credential_id": c.cred_id, "protected": bool(p and p.protected),
            "exclude_events": [e for e in (p.exclude_events if p else "").split("\n") if e]}


def set_policy(s: Session, actor: Actor, workspace: str, cred_id: str, *,
               protected: bool | None = None, exclude_events: list[str] | None = None) -> dict:
    """Change a credential's release rules (admins); audited."""
    access.require_on(s, actor, "admin", "credential.policy", workspace=workspace,
                      target=cred_id)
    c = credentials.get_credential(s, workspace, cred_id)
    p = s.scalar(select(CredentialPolicy).where(CredentialPolicy.credential_pk == c.pk))
    if p is None:
        p = CredentialPolicy(credential_pk=c.pk, protected=False, exclude_events="")
        s.add(p)
    if protected is not None:
        if not isinstance(protected, bool):
            raise ValidationError("protected is true or false", field="protected")
        p.protected = protected
    if exclude_events is not None:
        if not isinstance(exclude_events, list) or not all(
                isinstance(e, str) and EXCLUSION.match(e) for e in exclude_events):
            raise ValidationError("exclude_events is a list of event names, each optionally "
                                  "followed by ':fork' (e.g. pull_request:fork)",
                                  field="exclude_events")
        p.exclude_events = "\n".join(dict.fromkeys(exclude_events))
    p.updated_by, p.updated_at = actor.label, utcnow()
    s.flush()
    out = get_policy(s, workspace, cred_id)
    audit.record(s, actor, "credential.policy", workspace=workspace, target=c.cred_id,
                 details={k: out[k] for k in ("protected", "exclude_events")})
    return out


def protected_refs(s: Session, source_id: int) -> list[str]:
    return list(s.scalars(select(ProtectedRef.pattern).where(ProtectedRef.source_id == source_id)
                          .order_by(ProtectedRef.pattern)))


def set_protected_refs(s: Session, actor: Actor, workspace: str, source: PipelineSource,
                       patterns: list[str]) -> list[str]:
    """Replace a source's protected branch/tag globs (admins); audited."""
    access.require_on(s, actor, "admin", "source.protect", workspace=workspace,
                      target=source.name)
    if not isinstance(patterns, list) or not all(
            isinstance(p, str) and PATTERN.match(p) for p in patterns):
        raise ValidationError("patterns is a list of branch or tag globs such as main, "
                              "release/*", field="patterns")
    s.execute(delete(ProtectedRef).where(ProtectedRef.source_id == source.id))
    for p in dict.fromkeys(patterns):
        s.add(ProtectedRef(source_id=source.id, pattern=p))
    s.flush()
    audit.record(s, actor, "source.protect", workspace=workspace, target=source.name,
                 details={"patterns": list(dict.fromkeys(patterns))})
    return protected_refs(s, source.id)


# ---- explain --------------------------------------------------------------------------------

def find_pipeline(s: Session, workspace: str, pipeline: str, *, source: str | None = None,
                  path: str | None = None):
    """The indexed pipeline (its columns, and ``source`` and ``source_id``) by path (within
    ``source``) or by name, in one query; None when not indexed.  A name that several indexed
    pipelines carry must be told apart by its source."""
    P, path = IndexedPipeline, (path or "").removeprefix("./")
    q = (select(P.id, P.name, P.path, P.steps, P.commit, P.error, P.run_timeout, P.id_tokens,
                PipelineSource.name.label("source"), PipelineSource.id.label("source_id"))
         .join(PipelineSource, PipelineSource.id == P.source_id)
         .where(P.workspace == workspace, (P.path == path) | (P.name == (pipeline or ""))))
    if source:
        q = q.where(PipelineSource.name == source)
    rows = s.execute(q).all()
    by_path = [r for r in rows if path and r.path == path]
    if by_path:
        return by_path[0]
    rows = [r for r in rows if r.name == pipeline]
    if len(rows) > 1:
        raise ValidationError(f"{len(rows)} indexed pipelines are named {pipeline!r}: name "
                              "the source", field="source")
    return rows[0] if rows else None


def explain(s: Session, workspace: str, pipeline: str, step: str, cred_id: str, *,
            ref: str | None = None, event: str | None = None, fork: bool = False,
            source: str | None = None) -> dict:
    """Would step ``step`` of ``pipeline`` receive ``cred_id`` in a run on ``ref`` for
    ``event``?  The decision and the rule that made it."""
    out = {"pipeline": pipeline, "step": step, "credential_id": cred_id, "ref": ref,
           "event": event, "fork": fork}
    c = credentials.get_credential(s, workspace, cred_id)  # 404 for an unknown credential
    p = find_pipeline(s, workspace, pipeline, source=source)
    if p is None:
        return {**out, "decision": "deny", "rule": "not-indexed",
                "reason": f"pipeline {pipeline!r} is not indexed: only runner tokens that "
                          f"allow {cred_id!r} explicitly can resolve it (ad hoc)"}
    steps = [n for n in (p.steps or "").split("\n") if n]
    if step not in steps:
        return {**out, "decision": "deny", "rule": "no-such-step",
                "reason": f"pipeline {p.name!r} has no step {step!r}"}
    bound = s.execute(select(PipelineReference.version, PipelineReference.kind).where(
        PipelineReference.pipeline_id == p.id, PipelineReference.step == step,
        PipelineReference.credential_id == cred_id)).first()
    if bound is None:
        return {**out, "decision": "deny", "rule": "not-bound",
                "reason": f"step {step!r} of pipeline {p.name!r} does not bind {cred_id!r}"}
    pol = s.scalar(select(CredentialPolicy).where(CredentialPolicy.credential_pk == c.pk))
    no = refusal(cred_id, bool(pol and pol.protected), pol.exclude_events if pol else "",
                 source=p.source, patterns=protected_refs(s, p.source_id), ref=ref, event=event,
                 fork=fork)
    if no is not None:
        return {**out, "decision": "deny", "rule": no[0], "reason": no[1]}
    version = f"version {bound.version}" if bound.version else "its current version"
    return {**out, "decision": "allow", "rule": "bound",
            "reason": f"step {step!r} of pipeline {p.name!r} (source {p.source!r}) binds "
                      f"{cred_id!r}: {version} is released, once per step attempt"}


def receivers(s: Session, workspace: str, cred_id: str) -> dict:
    """Who may receive a credential: binding steps, its rules, allow-listed runner tokens."""
    c = credentials.get_credential(s, workspace, cred_id)
    steps = [{"pipeline": r["pipeline"], "source": r["source"], "step": r["step"],
              "version": r["version"], "protected_refs": None}
             for r in find_references(s, workspace, cred_id) if r["kind"] != "source"]
    by_source = {name: protected_refs(s, sid) for sid, name in s.execute(
        select(PipelineSource.id, PipelineSource.name)
        .where(PipelineSource.workspace == workspace))}
    for st in steps:
        st["protected_refs"] = by_source.get(st["source"], [])
    tokens = [t.name for t in s.scalars(select(ApiToken).where(
        ApiToken.kind == "runner", ApiToken.revoked_at.is_(None), ApiToken.allow.is_not(None)))
        if t.workspace and t.workspace.name == workspace
        and (cred_id in t.allow.split("\n") or "*" in t.allow.split("\n"))]
    return {**get_policy(s, workspace, c.cred_id), "steps": steps, "runner_tokens": tokens}

