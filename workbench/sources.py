"""Pipeline sources: a local folder or a git repository, synced incrementally into the index."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import git
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from . import access, audit, credentials, gitsource, sourcelock
from .accounts import get_workspace, require
from .audit import Actor
from .db import iso, utcnow
from .errors import Conflict, NotFound, PipelineError, ValidationError, WorkbenchError
from .pipeline.parse import parse_pipeline
from .references import (IndexedPipeline, PipelineReference, PipelineSource, reference_rows,
                         refresh_statistics, replace_references)

KINDS = ("local", "git")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}$")
CLONE_TYPES = ("username_password", "secret_text", "ssh_private_key")
CHUNK = 500  # rows per IN (...) list
BULK = 500  # files read in one sync from which planner statistics are refreshed


def _check_url(url: str | None) -> str:
    if not url or not isinstance(url, str) or len(url) > 2000 or url.startswith("-"):
        raise ValidationError("a git source needs a repository URL", field="url")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ssh", "git", "file"):
        if parts.password is not None or (parts.username and parts.scheme in ("http", "https")):
            raise ValidationError("the URL must not contain credentials: store them as a "
                                  "credential and give its ID", field="url")
    elif not (url.startswith("/") or re.match(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:", url)):
        raise ValidationError("use an http(s)://, ssh://, git://, file:// URL, user@host:path "
                              "or an absolute path", field="url")
    return url


def _is_local(url: str | None) -> bool:
    return isinstance(url, str) and (url.startswith("/") or url.lower().startswith("file:"))


def _check_glob(path_glob: str) -> str:
    if (not path_glob or not isinstance(path_glob, str) or path_glob.startswith("/")
            or ".." in path_glob.split("/") or len(path_glob) > 300):
        raise ValidationError("path_glob is a relative pattern such as pipelines/*.yaml",
                              field="path_glob")
    return path_glob


def add_source(s: Session, actor: Actor, workspace: str, *, kind: str, url: str | None = None,
               branch: str = "main", path_glob: str = "pipelines/*.yaml",
               credential_id: str | None = None, name: str) -> PipelineSource:
    """Register a source (nothing is fetched until the first sync)."""
    access.require_on(s, actor, "editor", "source.add", workspace=workspace,
                      target=str(name)[:100])
    get_workspace(s, workspace)  # a 404 for a workspace that does not exist
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError("name: 1-100 letters, digits, '.', '_', '-'", field="name")
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of {', '.join(KINDS)}", field="kind")
    _check_glob(path_glob)
    if kind == "local" or _is_local(url):
        # the server's own disk: an editor must not make the server read arbitrary folders
        require(actor, "admin", "source.add", workspace=workspace, target=name)
    if kind == "git":
        _check_url(url)
        if not isinstance(branch, str) or not BRANCH.match(branch):
            raise ValidationError("branch is not a valid branch name", field="branch")
        if credential_id:
            c = credentials.get_credential(s, workspace, credential_id)
            if c.type not in CLONE_TYPES:
                raise ValidationError(f"credential {credential_id!r} is a {c.type}; cloning "
                                      f"takes one of {', '.join(CLONE_TYPES)}",
                                      field="credential_id")
    else:
        if credential_id:
            raise ValidationError("a local source takes no credential", field="credential_id")
        url = str(Path(url or ".").expanduser().absolute())
    if s.scalar(select(PipelineSource.id).where(PipelineSource.workspace == workspace,
                                                PipelineSource.name == name)):
        raise Conflict(f"source {name!r} already exists in workspace {workspace!r}")
    src = PipelineSource(workspace=workspace, name=name, kind=kind, url=url, branch=branch,
                         path_glob=path_glob, credential_id=credential_id or None,
                         created_by=actor.label)
    s.add(src)
    s.flush()
    audit.record(s, actor, "source.add", workspace=workspace, target=name,
                 details={"kind": kind, "url": url, "branch": branch, "path_glob": path_glob,
                          "credential_id": credential_id})
    return src


def get_source(s: Session, workspace: str, ident: int | str) -> PipelineSource:
    """A source by numeric ID or by name."""
    q = select(PipelineSource).where(PipelineSource.workspace == workspace)
    if isinstance(ident, int) or str(ident).isdigit():
        q = q.where(PipelineSource.id == int(ident))
    else:
        q = q.where(PipelineSource.name == ident)
    src = s.scalar(q)
    if src is None:
        raise NotFound(f"no pipeline source {str(ident)[:100]!r} in workspace {workspace!r}")
    return src


def to_dict(src: PipelineSource, pipelines: int | None = None, syncing: bool = False) -> dict:
    return {"id": src.id, "workspace": src.workspace, "name": src.name, "kind": src.kind,
            "url": src.url, "branch": src.branch if src.kind == "git" else None,
            "path_glob": src.path_glob, "credential_id": src.credential_id,
            "commit": src.commit, "synced_at": iso(src.synced_at), "error": src.error or None,
            "created_by": src.created_by, "created_at": iso(src.created_at),
            "pipelines": pipelines, "syncing": syncing, "sync_interval": src.sync_interval}


def list_sources(s: Session, workspace: str, busy: set[int] | None = None) -> list[dict]:
    """The workspace's sources; with ``sourcelock.busy`` (asked first), whether each is
    syncing now."""
    busy = busy or set()
    counts = dict(s.execute(select(IndexedPipeline.source_id, func.count())
                            .where(IndexedPipeline.workspace == workspace)
                            .group_by(IndexedPipeline.source_id)).all())
    q = select(PipelineSource).where(PipelineSource.workspace == workspace) \
        .order_by(PipelineSource.name)
    return [to_dict(src, counts.get(src.id, 0), src.id in busy) for src in s.scalars(q)]


def _clone_values(s: Session, barrier, src: PipelineSource) -> tuple[str | None, dict]:
    """Decrypt the clone credential as the system actor; audited like any resolve."""
    if not src.credential_id:
        return None, {}
    c = credentials.get_credential(s, src.workspace, src.credential_id)
    v, values = credentials.current_values(s, barrier, c)
    c.last_used_at = utcnow()
    audit.record(s, audit.SYSTEM, "credential.resolve", workspace=src.workspace,
                 target=c.cred_id, details={"version": v.version, "purpose": "source sync",
                                            "source": src.name})
    return v.type, values


# ---- sync -----------------------------------------------------------------------------------

def _parse(path: str, data: bytes) -> tuple[object | None, str | None, int | None]:
    try:
        return parse_pipeline(data.decode("utf-8"), filename=path), None, None
    except UnicodeDecodeError:
        return None, f"{path}: pipeline is not UTF-8 text", None
    except PipelineError as e:
        return None, e.message, e.details.get("line")
    except Exception as e:  # noqa: BLE001 - one bad file never breaks the sync of the others
        return None, f"{path}: cannot read pipeline ({type(e).__name__})", None


def _apply(s: Session, src: PipelineSource, changes: gitsource.Changes,
           commit: str | None) -> int:
    """Write the changes to the index; returns how many files failed to parse."""
    paths = [p for p, *_ in changes.upserts] + [old for *_, old in changes.upserts if old]
    rows: dict[str, IndexedPipeline] = {}
    for i in range(0, len(paths), CHUNK):
        rows.update((p.path, p) for p in s.scalars(select(IndexedPipeline).where(
            IndexedPipeline.source_id == src.id,
            IndexedPipeline.path.in_(paths[i:i + CHUNK]))))
    for i in range(0, len(changes.removes), CHUNK):
        ids = select(IndexedPipeline.id).where(IndexedPipeline.source_id == src.id,
                                               IndexedPipeline.path.in_(
                                                   changes.removes[i:i + CHUNK]))
        s.execute(delete(PipelineReference).where(PipelineReference.pipeline_id.in_(ids)))
        s.execute(delete(IndexedPipeline).where(IndexedPipeline.id.in_(ids)))
    errors, parsed = 0, []
    now = utcnow()
    for path, blob, data, old in changes.upserts:
        p, error, line = _parse(path, data)
        row = rows.pop(old, None) if old else None
        if row is not None and path in rows:  # renamed onto an indexed path: keep one row
            s.delete(rows.pop(path))
            s.flush()
        row = row or rows.get(path)
        if row is None:
            row = IndexedPipeline(source_id=src.id, workspace=src.workspace, path=path)
            s.add(row)
        row.path, row.blob, row.commit, row.indexed_at = path, blob, commit, now
        row.error, row.error_line = error, line
        errors += error is not None
        if p is None and row.id is not None:
            # keep the references of the last version that parsed: a typo must not make
            # the credentials it uses look unused (they are reported as stale)
            continue
        row.name = (p.name if p else Path(path).stem)[:100]
        row.steps = "\n".join(st.name for st in p.steps) if p else None
        row.run_timeout = (int(sum(st.timeout for st in p.steps)) or 1) \
            if p and all(st.timeout for st in p.steps) else None
        row.id_tokens = json.dumps({st.name: [st.id_token[0], st.timeout] for st in p.steps
                                    if st.id_token}) if p and any(
            st.id_token for st in p.steps) else None
        parsed.append((row, reference_rows(p) if p else []))
    existing = [row.id for row, _ in parsed if row.id is not None]
    s.flush()
    replace_references(s, parsed, existing)
    return errors


def sync_target(factory: sessionmaker[Session], actor: Actor, source_id: int) -> PipelineSource:
    """The source to sync, if it exists and the actor may sync it (a refusal is audited)."""
    with audit.unit(factory) as s:
        src = s.get(PipelineSource, int(source_id))
        if src is None:
            raise NotFound(f"no pipeline source {source_id}")
        access.require_on(s, actor, "editor", "source.sync", workspace=src.workspace,
                          target=src.name)
        s.expunge(src)
        return src


def sync_source(factory: sessionmaker[Session], vault, actor: Actor, source_id: int, *,
                progress: Callable[[str], None] | None = None) -> dict:
    """Fetch and re-index what changed; returns counts and the commit now indexed; ``progress``
    is told what a long sync is doing."""
    progress = progress or (lambda _line: None)
    root = sourcelock.root(vault.settings)
    with sourcelock.hold(vault, sync_target(factory, actor, source_id).id):
        # again: a sync that held the lock may have moved the indexed commit
        src = sync_target(factory, actor, source_id)
        def known() -> dict[str, str]:  # only full comparisons need the whole index
            with factory() as s:
                return dict(s.execute(select(IndexedPipeline.path, IndexedPipeline.blob)
                                      .where(IndexedPipeline.source_id == src.id)).all())
        head = None
        if src.kind == "git":
            try:
                with audit.unit(factory) as s:
                    ctype, values = _clone_values(s, vault.barrier, src)
            except NotFound:
                raise _fail(factory, actor, src, f"sync of source {src.name!r} failed: its "
                            f"clone credential {src.credential_id!r} does not exist") from None
            secrets = [str(v) for k, v in values.items() if k != "username" and v]
            timeout = vault.settings.git_timeout
            progress(f"fetching {src.url} ({src.branch})…")
            try:
                with gitsource.git_env(root, ctype, values) as env:
                    repo, head = gitsource.fetch(root / str(src.id), src, env, timeout)
            except git.GitCommandError as e:
                raise _fail(factory, actor, src,
                            gitsource.clean_error(src, e, secrets, timeout)) from None
            finally:
                values.clear()
            with repo:
                changes = gitsource.git_changes(repo, src, head, known)
        elif not Path(src.url).is_dir():
            raise _fail(factory, actor, src,
                        f"sync of source {src.name!r} failed: {src.url} is not a folder")
        else:
            changes = gitsource.local_changes(src, known)
        progress(f"indexing {len(changes.upserts)} new or changed file(s), "
                 f"dropping {len(changes.removes)}…")
        with audit.unit(factory) as s:
            row = s.get(PipelineSource, src.id)
            errors = _apply(s, row, changes, head)
            if len(changes.upserts) >= BULK:
                refresh_statistics(s)
            row.commit, row.synced_at, row.error = head, utcnow(), ""
            result = {"source": src.id, "commit": head, "previous": src.commit,
                      **changes.counts, "errors": errors, "parsed": len(changes.upserts),
                      "full": changes.full,
                      "pipelines": s.scalar(select(func.count()).select_from(IndexedPipeline)
                                            .where(IndexedPipeline.source_id == src.id))}
            audit.record(s, actor, "source.sync", workspace=src.workspace, target=src.name,
                         details=result)
    return result


def remove_source(factory: sessionmaker[Session], vault, actor: Actor, source_id: int) -> dict:
    """Drop a source, its pipelines and their references, and its clone on disk."""
    root = sourcelock.root(vault.settings)
    with sourcelock.hold(vault, int(source_id)):
        with audit.unit(factory) as s:
            src = s.get(PipelineSource, int(source_id))
            if src is None:
                raise NotFound(f"no pipeline source {source_id}")
            access.require_on(s, actor, "editor", "source.remove", workspace=src.workspace,
                              target=src.name)
            ids = select(IndexedPipeline.id).where(IndexedPipeline.source_id == src.id)
            s.execute(delete(PipelineReference).where(PipelineReference.pipeline_id.in_(ids)))
            n = s.execute(delete(IndexedPipeline).where(IndexedPipeline.source_id == src.id))
            s.delete(src)
            out = {"removed": src.name, "pipelines": n.rowcount}
            audit.record(s, actor, "source.remove", workspace=src.workspace, target=src.name,
                         details=out)
        shutil.rmtree(root / str(int(source_id)), ignore_errors=True)
    return out


def _fail(factory, actor: Actor, src: PipelineSource, message: str) -> WorkbenchError:
    """Keep the failure on the source (the UI shows it), audit it, and return the error."""
    with factory.begin() as s:
        row = s.get(PipelineSource, src.id)
        if row is not None:
            row.error = message
        audit.record(s, actor, "source.sync", outcome="failed", workspace=src.workspace,
                     target=src.name, details={"error": message})
    return WorkbenchError(message, source=src.name)
