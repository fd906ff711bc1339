"""Checking pipelines against the vault as ``workbench run`` would, without running anything:
missing credentials and versions (with "did you mean"), and bindings that do not fit a
credential's type.  Every problem reads ``file:line: step S: …``, as ``run`` reports it."""
from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit, credentials, references as idx
from .audit import Actor
from .crypto import Barrier
from .errors import NotFound, PipelineError
from .models import Credential, Workspace
from .pipeline.parse import Pipeline, load_pipeline, parse_pipeline
from .pipeline.plan import plan, references
from .pipeline.resolve import Ref, ResolvedCredential, Resolver


class _Lookup(Resolver):
    """The local vault's values, for ``plan``'s type checks only (a generic credential's keys
    decide which bindings fit): they stay in this process and are never printed; each decrypt
    is audited as a resolve with purpose ``lint``."""

    def __init__(self, s: Session, barrier: Barrier, actor: Actor, workspace: str):
        self.s, self.barrier, self.actor, self.workspace = s, barrier, actor, workspace

    def resolve(self, refs: Sequence[Ref], *, context: dict | None = None
                ) -> dict[Ref, ResolvedCredential]:
        out, missing = {}, []
        for ref in refs:
            try:
                c = credentials.get_credential(self.s, self.workspace, ref.id)
                v, values = credentials.current_values(self.s, self.barrier, c, ref.version)
            except NotFound:
                missing.append(str(ref))
                continue
            out[ref] = ResolvedCredential(c.cred_id, v.version, v.type, values)
            audit.record(self.s, self.actor, "credential.resolve", workspace=self.workspace,
                         target=c.cred_id, details={"version": v.version, "purpose": "lint",
                                                    "pipeline": (context or {}).get("pipeline")})
        if missing:
            raise NotFound(f"unknown credential reference(s): {', '.join(missing)}",
                           missing=missing)
        return out


def _ids(s: Session, workspace: str) -> list[str]:
    return list(s.scalars(select(Credential.cred_id).join(Workspace)
                          .where(Workspace.name == workspace)))


def _problem(path: str, line: int | None, message: str, **about) -> dict:
    return {"path": path, "line": line, "message": PipelineError(message, file=path,
                                                                 line=line).message, **about}


def _missing(path: str, line, step: str, cred_id: str, version: int | None, reason: str,
             known: list[str]) -> dict:
    if reason == "credential does not exist":
        hint = difflib.get_close_matches(cred_id, known, n=1, cutoff=0.8)
        text = f"step {step}: unknown credential {cred_id!r}" + (
            f"; did you mean {hint[0]!r}?" if hint else "")
    else:
        text = f"step {step}: credential {cred_id!r} has no version {version}"
    return _problem(path, line, text, step=step, credential_id=cred_id, version=version,
                    reason=reason)


def check_pipeline(s: Session, barrier: Barrier, actor: Actor, workspace: str, p: Pipeline,
                   known: list[str] | None = None) -> list[dict]:
    """Every problem ``run`` would stop at, at most one per step for bindings."""
    known = _ids(s, workspace) if known is None else known
    refs = references(p)
    reasons = idx.check_refs(s, workspace, [(r.id, r.version) for r, _, _ in refs])
    out, failed = [], set()
    for ref, step, line in refs:
        reason = reasons.get((ref.id, ref.version))
        if reason:
            out.append(_missing(p.file, line, step.name, ref.id, ref.version, reason, known))
            failed.add(step.name)
    lookup = _Lookup(s, barrier, actor, workspace)
    for step in p.steps:
        if step.name in failed:
            continue
        try:
            plan(replace(p, steps=(step,)), lookup)
        except PipelineError as e:
            out.append({"path": p.file, "line": e.details.get("line"), "message": e.message,
                        "step": step.name})
    return sorted(out, key=lambda d: d["line"] or 0)


def check_files(s: Session, barrier: Barrier, actor: Actor, workspace: str, paths
                ) -> list[dict]:
    """Pipeline files as they are on disk (e.g. before pushing them)."""
    known, out = _ids(s, workspace), []
    for path in paths:
        try:
            p = load_pipeline(path)
        except PipelineError as e:
            out.append({"path": str(path), "line": e.details.get("line"), "message": e.message})
            continue
        out += check_pipeline(s, barrier, actor, workspace, p, known)
    return out


def check_index(s: Session, barrier: Barrier, actor: Actor, workspace: str) -> list[dict]:
    """Every indexed pipeline: those of local sources from their files (bindings included),
    the others from the index (missing credentials and versions, parse errors)."""
    from .sources import list_sources
    known, out = _ids(s, workspace), []
    folders = {src["id"]: Path(src["url"]) for src in list_sources(s, workspace)
               if src["kind"] == "local"}
    checked = set()
    for p in idx.list_pipelines(s, workspace):
        f = folders.get(p["source_id"], Path("/nonexistent")) / p["path"]
        if p["source_id"] in folders and f.is_file():
            checked.add(p["id"])
            try:
                parsed = parse_pipeline(f.read_text(encoding="utf-8"), filename=p["path"])
            except (PipelineError, UnicodeDecodeError) as e:
                out.append({"path": p["path"], "line": getattr(e, "details", {}).get("line"),
                            "message": getattr(e, "message", f"{p['path']}: not UTF-8 text")})
                continue
            out += check_pipeline(s, barrier, actor, workspace, parsed, known)
        elif p["error"]:
            out.append({"path": p["path"], "line": p["error_line"],
                        "message": p["error"] if p["error"].startswith(p["path"])
                        else PipelineError(p["error"], file=p["path"],
                                           line=p["error_line"]).message})
    for d in idx.dangling(s, workspace):
        if d["pipeline_id"] not in checked:
            out.append(_missing(d["path"], d["line"], d["step"], d["credential_id"],
                                d["version"], d["reason"], known))
    return out
