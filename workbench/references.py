"""The reference index: pipeline sources, their pipelines, and every credential each step uses."""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from sqlalchemy import (DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
                        and_, delete, exists, func, insert, or_, select, text)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from . import credentials, scopes
from .db import Base, aware, iso, utcnow
from .errors import NotFound
from .models import Credential, CredentialVersion, Workspace
from .pipeline import records
from .pipeline.parse import Pipeline as ParsedPipeline

TS = DateTime(timezone=True)


class PipelineSource(Base):
    """Where pipelines come from: a local folder or a git repository (``url`` is the folder
    for ``local``); ``commit`` is the last commit indexed."""

    __tablename__ = "pipeline_sources"
    __table_args__ = (UniqueConstraint("workspace", "name", name="uq_source_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workspace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(8))  # local | git
    url: Mapped[str] = mapped_column(Text)  # never holds credentials (checked on add)
    branch: Mapped[str] = mapped_column(String(200), default="main")
    path_glob: Mapped[str] = mapped_column(String(300), default="pipelines/*.yaml")
    credential_id: Mapped[str | None] = mapped_column(String(63), nullable=True)
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(TS, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")  # the last sync failure, if any
    sync_interval: Mapped[int | None] = mapped_column(nullable=True)  # seconds; None: on demand
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class IndexedPipeline(Base):
    """One pipeline file as last read; ``error`` is set (and no references kept) if it failed."""

    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("source_id", "path", name="uq_pipeline_path"),
                      Index("ix_pipelines_workspace", "workspace"))
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("pipeline_sources.id", ondelete="CASCADE"))
    workspace: Mapped[str] = mapped_column(String(63))
    path: Mapped[str] = mapped_column(String(1000))
    name: Mapped[str] = mapped_column(String(100))
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    blob: Mapped[str] = mapped_column(String(64))  # git blob id of the content read
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    steps: Mapped[str | None] = mapped_column(Text, nullable=True)  # step names, "\n"-joined
    # seconds a run can last (the sum of its step timeouts); None when a step has none
    run_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # steps that ask for an OIDC identity token: JSON {step: [audience, timeout or null]}
    id_tokens: Mapped[str | None] = mapped_column(Text, nullable=True)
    indexed_at: Mapped[datetime] = mapped_column(TS, default=utcnow)


class PipelineReference(Base):
    """One credential reference of one step (``kind`` credential or image_pull)."""

    __tablename__ = "pipeline_references"
    __table_args__ = (Index("ix_refs_credential", "workspace", "credential_id"),
                      Index("ix_refs_pipeline", "pipeline_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    workspace: Mapped[str] = mapped_column(String(63))
    step: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)  # order within the pipeline
    credential_id: Mapped[str] = mapped_column(String(63))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    binding: Mapped[str] = mapped_column(String(300), default="default")
    kind: Mapped[str] = mapped_column(String(16), default="credential")
    line: Mapped[int | None] = mapped_column(Integer, nullable=True)


def binding_of(use) -> str:
    """A short, value-free description of how a step receives a credential."""
    parts = []
    if isinstance(use.env, dict):
        parts.append("env " + ",".join(f"{k}={v}" for k, v in use.env.items()))
    elif use.env:
        parts.append(f"env {use.env}")
    if use.file:
        parts.append(f"file {use.file}" + (f" ({use.filename})" if use.filename else ""))
    return "; ".join(parts)[:300] or "default"


def reference_rows(p: ParsedPipeline) -> list[dict]:
    """The rows to index for one parsed pipeline (without pipeline_id/workspace)."""
    rows, pos = [], 0
    for step in p.steps:
        if step.image_pull_credential is not None:
            rows.append(dict(step=step.name, position=pos, kind="image_pull",
                             credential_id=step.image_pull_credential.id,
                             version=step.image_pull_credential.version, binding="image pull",
                             line=step.line))
            pos += 1
        for use in step.credentials:
            rows.append(dict(step=step.name, position=pos, kind="credential",
                             credential_id=use.ref.id, version=use.ref.version,
                             binding=binding_of(use), line=use.line))
            pos += 1
    return rows


def replace_references(s: Session, parsed: list[tuple[IndexedPipeline, list[dict]]],
                       existing: Iterable[int] = ()) -> None:
    """Swap in the rows of each (pipeline, rows); ``existing`` IDs may hold old rows."""
    old = list(existing)
    for i in range(0, len(old), 500):
        s.execute(delete(PipelineReference).where(PipelineReference.pipeline_id.in_(
            old[i:i + 500])))
    rows = [{**r, "pipeline_id": p.id, "workspace": p.workspace} for p, refs in parsed
            for r in refs]
    if rows:
        s.execute(insert(PipelineReference), rows)


def refresh_statistics(s: Session) -> None:
    """After a bulk load: without fresh statistics PostgreSQL scans the whole workspace's
    references instead of using (workspace, credential_id) until autovacuum runs."""
    for table in ("pipelines", "pipeline_references"):
        s.execute(text(f"ANALYZE {table}"))


# ---- queries --------------------------------------------------------------------------------

R = PipelineReference
# plain columns, not ORM entities: the delete check builds one dict per row and nothing else
# ``stale``: the file does not parse now; the reference is from the last version that did
_REF_COLUMNS = (IndexedPipeline.name, R.pipeline_id, IndexedPipeline.path,
                PipelineSource.name.label("source"), R.step, R.credential_id, R.version,
                R.binding, R.kind, R.line, IndexedPipeline.error.is_not(None).label("stale"))
_REF_KEYS = ("pipeline", "pipeline_id", "path", "source", "step", "credential_id", "version",
             "binding", "kind", "line", "stale")


def _ref_select():
    return (select(*_REF_COLUMNS)
            .join(IndexedPipeline, IndexedPipeline.id == R.pipeline_id)
            .join(PipelineSource, PipelineSource.id == IndexedPipeline.source_id))


def find_references(s: Session, workspace: str, cred_id: str) -> list[dict]:
    """Every step (of every indexed pipeline) that references ``cred_id``."""
    q = (_ref_select().where(PipelineReference.workspace == workspace,
                             PipelineReference.credential_id == cred_id)
         .order_by(IndexedPipeline.name, PipelineReference.pipeline_id,
                   PipelineReference.position))
    out = [dict(zip(_REF_KEYS, row)) for row in s.execute(q)]
    # a source that clones with this credential stops syncing without it
    for name, url in s.execute(select(PipelineSource.name, PipelineSource.url).where(
            PipelineSource.workspace == workspace, PipelineSource.credential_id == cred_id)):
        out.append({"pipeline": f"(source {name})", "pipeline_id": None, "path": url,
                    "source": name, "step": "clone", "credential_id": cred_id, "version": None,
                    "binding": "git clone", "kind": "source", "line": None, "stale": False})
    return out


def usage_counts(s: Session, workspace: str, cred_ids: Iterable[str]) -> dict[str, int]:
    """credential ID → number of distinct pipelines referencing it (one query)."""
    ids = list(dict.fromkeys(cred_ids))
    out = dict.fromkeys(ids, 0)
    if ids:
        q = (select(PipelineReference.credential_id,
                    func.count(PipelineReference.pipeline_id.distinct()))
             .where(PipelineReference.workspace == workspace,
                    PipelineReference.credential_id.in_(ids))
             .group_by(PipelineReference.credential_id))
        out.update({cid: n for cid, n in s.execute(q)})
    return out


def getting(refs, cred) -> list:
    """Conditions pairing rows of ``refs`` (a table or subquery with ``workspace`` and
    ``credential_id`` columns) with the credential ``cred`` (a table or alias) that runs in
    their workspace get: ``cred`` lives in that scope, or above it, inherited and not shadowed
    by a nearer credential with the same ID (``scopes.nearest``, for many scopes at once)."""
    here, near = scopes.CLOSURE.alias(), scopes.CLOSURE.alias()
    nc, rw = Credential.__table__.alias(), Workspace.__table__.alias()
    shadowed = exists().where(near.c.scope_id == here.c.scope_id, near.c.depth < here.c.depth,
                              nc.c.workspace_id == near.c.above_id,
                              nc.c.cred_id == cred.c.cred_id, or_(near.c.depth == 0,
                                                                  nc.c.inherit)
                              ).correlate_except(near, nc)  # ``cred`` may be two levels out
    # depth 0 first: a scope's own credential is never shadowed, and OR stops there
    return [here.c.above_id == cred.c.workspace_id, rw.c.id == here.c.scope_id,
            refs.c.workspace == rw.c.name, refs.c.credential_id == cred.c.cred_id,
            or_(here.c.depth == 0, and_(cred.c.inherit, ~shadowed))]


def receiving_counts(s: Session, creds: Iterable[Credential]) -> dict[int, int]:
    """credential pk → number of distinct pipelines that get it: those of its own scope and
    of every scope below it that receives it (``scopes.receivers``), in one query."""
    creds = list(creds)
    out = dict.fromkeys((x.pk for x in creds), 0)
    if creds:
        r, c = PipelineReference.__table__, Credential.__table__
        # the literal lists keep the plan on (workspace, credential_id) even where the
        # planner's statistics are stale (PostgreSQL, right after a bulk load)
        below = sorted({name for ws in {x.workspace.name for x in creds}
                        for name in scopes.descendants(s, ws)})
        q = (select(c.c.pk, func.count(r.c.pipeline_id.distinct()))
             .where(c.c.pk.in_(list(out)), r.c.workspace.in_(below),
                    r.c.credential_id.in_(sorted({x.cred_id for x in creds})),
                    *getting(r, c))
             .group_by(c.c.pk))
        out.update({pk: n for pk, n in s.execute(q)})
    return out


def last_used(s: Session, workspace: str, cred_ids: Iterable[str]) -> dict[str, datetime | None]:
    """credential ID → when a run last handed the credential of ``workspace`` to a step, in
    that scope or one below that inherits it (None: never)."""
    ids = list(dict.fromkeys(cred_ids))
    out: dict[str, datetime | None] = dict.fromkeys(ids)
    if ids:
        CU = records.CredentialUse
        q = (select(CU.credential_id, func.max(CU.used_at))
             .where(CU.owner == workspace, CU.credential_id.in_(ids))
             .group_by(CU.credential_id))
        out.update({cid: aware(when) for cid, when in s.execute(q)})
    return out


def _dangling_clause(s: Session, workspace: str):
    """(join, missing, pruned): outer-join each reference to the credential a run in the
    workspace gets and its pinned version; ``missing``/``pruned`` make it dangle."""
    cred = aliased(Credential)
    ver = aliased(CredentialVersion)
    ws_id, parent = s.execute(select(Workspace.id, Workspace.parent_id)
                              .where(Workspace.name == workspace)).first() or (None, None)
    if parent is None:  # a top-level workspace has its own credentials only: a plain join
        on = and_(cred.workspace_id == ws_id, cred.cred_id == PipelineReference.credential_id)
    else:  # its own, or the nearest inherited one (a subquery per reference)
        on = cred.pk == scopes.nearest(PipelineReference.credential_id, workspace)

    def join(stmt):
        return (stmt.outerjoin(cred, on)
                .outerjoin(ver, and_(ver.credential_pk == cred.pk,
                                     ver.version == PipelineReference.version)))
    missing = cred.pk.is_(None)
    pruned = and_(PipelineReference.version.is_not(None), ver.pk.is_(None))
    return join, missing, pruned


def dangling(s: Session, workspace: str, pipeline_id: int | None = None) -> list[dict]:
    """References to IDs that do not exist, or to pinned versions that do not (any longer)."""
    join, missing, pruned = _dangling_clause(s, workspace)
    q = join(_ref_select().add_columns(missing.label("missing"))) \
        .where(PipelineReference.workspace == workspace, missing | pruned)
    if pipeline_id is not None:
        q = q.where(PipelineReference.pipeline_id == pipeline_id)
    q = q.order_by(IndexedPipeline.path, PipelineReference.position)
    out = []
    for *row, is_missing in s.execute(q):
        d = dict(zip(_REF_KEYS, row))
        d["reason"] = ("credential does not exist" if is_missing
                       else f"version {d['version']} does not exist")
        out.append(d)
    return out


def check_refs(s: Session, workspace: str, refs: Iterable[tuple[str, int | None]]
               ) -> dict[tuple[str, int | None], str]:
    """Why each (credential ID, pinned version) would dangle; resolvable ones are left out."""
    refs = set(refs)
    have: dict[str, set] = {}
    nearest: dict[str, int] = {}  # credential ID → depth of the scope it comes from
    ids = sorted({cid for cid, _ in refs})
    for i in range(0, len(ids), 500):
        chain = scopes.ancestry(workspace)
        q = (select(Credential.cred_id, CredentialVersion.version, chain.c.depth)
             .join(chain, chain.c.id == Credential.workspace_id)
             .outerjoin(CredentialVersion, CredentialVersion.credential_pk == Credential.pk)
             .where(Credential.cred_id.in_(ids[i:i + 500]),
                    or_(chain.c.depth == 0, Credential.inherit)))
        for cid, version, depth in s.execute(q):
            if depth < nearest.get(cid, depth + 1):  # a nearer one shadows what was seen
                nearest[cid] = depth
                have[cid] = set()
            if depth == nearest[cid]:
                have[cid].add(version)
    out = {}
    for cid, version in refs:
        if cid not in have:
            out[(cid, version)] = "credential does not exist"
        elif version is not None and version not in have[cid]:
            out[(cid, version)] = f"version {version} does not exist"
    return out


def _pipeline_dict(p, source: str, n_dangling: int = 0) -> dict:
    """``p``: an IndexedPipeline or a row with the same column names."""
    return {"id": p.id, "name": p.name, "path": p.path, "source": source,
            "source_id": p.source_id, "workspace": p.workspace, "commit": p.commit,
            "error": p.error, "error_line": p.error_line, "dangling": n_dangling,
            "indexed_at": iso(p.indexed_at)}


def list_pipelines(s: Session, workspace: str) -> list[dict]:
    """Every indexed pipeline with its source, commit, parse error and dangling count."""
    join, missing, pruned = _dangling_clause(s, workspace)
    counts = dict(s.execute(join(select(PipelineReference.pipeline_id, func.count())
                                 .select_from(PipelineReference))
                            .where(PipelineReference.workspace == workspace, missing | pruned)
                            .group_by(PipelineReference.pipeline_id)).all())
    P = IndexedPipeline
    q = (select(P.id, P.name, P.path, P.source_id, P.workspace, P.commit, P.error, P.error_line,
                P.indexed_at, PipelineSource.name.label("source"))
         .join(PipelineSource, PipelineSource.id == P.source_id)
         .where(P.workspace == workspace).order_by(P.name, P.path))
    return [_pipeline_dict(row, row.source, counts.get(row.id, 0)) for row in s.execute(q)]


def get_pipeline(s: Session, workspace: str, pipeline_id: int) -> dict:
    """One pipeline: its steps, the credentials each uses, and which references dangle."""
    row = s.execute(select(IndexedPipeline, PipelineSource.name)
                    .join(PipelineSource, PipelineSource.id == IndexedPipeline.source_id)
                    .where(IndexedPipeline.id == pipeline_id,
                           IndexedPipeline.workspace == workspace)).first()
    if row is None:
        raise NotFound(f"no pipeline {pipeline_id} in workspace {workspace!r}")
    p, source = row
    bad = {(d["step"], d["credential_id"], d["version"], d["kind"]): d["reason"]
           for d in dangling(s, workspace, pipeline_id)}
    steps = {name: [] for name in (p.steps or "").split("\n") if name}
    q = (select(PipelineReference).where(PipelineReference.pipeline_id == p.id)
         .order_by(PipelineReference.position))
    for r in s.scalars(q):
        reason = bad.get((r.step, r.credential_id, r.version, r.kind))
        steps.setdefault(r.step, []).append({
            "credential_id": r.credential_id, "version": r.version, "binding": r.binding,
            "kind": r.kind, "line": r.line, "dangling": reason is not None, "reason": reason,
            "stale": p.error is not None})
    # which scope's credential each ID is (its own workspace's, or inherited from above)
    came = {cid: scopes.explain(s, workspace, cid)["gets"]
            for cid in {u["credential_id"] for uses in steps.values() for u in uses}}
    for uses in steps.values():
        for u in uses:
            u["scope"] = came[u["credential_id"]]
    out = _pipeline_dict(p, source, len(bad))
    out["steps"] = [{"name": name, "credentials": uses} for name, uses in steps.items()]
    return out


def _finder(s: Session, workspace: str, cred_id: str) -> list[dict]:
    return find_references(s, workspace, cred_id)


def _join_used_by(ids):
    """Sort credentials by the number of distinct pipelines that get them (in their scope and
    the scopes below that receive them): one aggregate over the references per (workspace,
    ID), paired with the credential each resolves to and summed (a pipeline lives in one
    workspace, so the per-workspace counts add up), joined, rather than a count per row."""
    r = PipelineReference.__table__
    per = (select(r.c.workspace, r.c.credential_id,
                  func.count(r.c.pipeline_id.distinct()).label("pipelines"))
           .group_by(r.c.workspace, r.c.credential_id).subquery())
    c = Credential.__table__.alias()
    counts = (select(c.c.pk, func.sum(per.c.pipelines).label("pipelines"))
              .where(*getting(per, c)).group_by(c.c.pk).subquery())
    return ids.outerjoin(counts, counts.c.pk == Credential.pk), \
        func.coalesce(counts.c.pipelines, 0)


# Registered at import: the credential service guards deletes, type changes and prunes with
# it, and the credentials table can sort by "used by".
if _finder not in credentials.REFERENCE_FINDERS:
    credentials.REFERENCE_FINDERS.append(_finder)
credentials.SORT_JOINS.setdefault("used_by", _join_used_by)
