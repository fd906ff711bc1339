"""Pipeline source and pipeline endpoints: add and sync sources, browse the reference index."""
from __future__ import annotations

from flask import jsonify

from .. import background, references as idx, sourcelock, sources as svc
from ..audit import unit
from ..errors import ValidationError
from . import actor, api, body, flag, vault, workspace
from .inputs import texts


@api.get("/pipeline-sources")
def list_sources():
    """Pipeline sources of the workspace with their last indexed commit and sync error."""
    with vault().factory() as s:
        return jsonify({"items": svc.list_sources(s, workspace(),
                                                  sourcelock.busy(vault()))})


@api.post("/pipeline-sources")
def add_source():
    """Add a local folder or git repository (url, branch, path_glob, credential_id)."""
    data = texts(body(), "name", "kind", "url", "branch", "path_glob", "credential_id")
    unknown = set(data) - {"name", "kind", "url", "branch", "path_glob", "credential_id"}
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    opts = {k: data[k] for k in ("url", "branch", "path_glob", "credential_id") if k in data}
    with unit(vault().factory) as s:
        src = svc.add_source(s, actor(), workspace(), kind=data.get("kind", "git"),
                             name=data.get("name"), **opts)
        return jsonify(svc.to_dict(src, 0)), 201


@api.post("/pipeline-sources/<int:source_id>/sync")
def sync_source(source_id: int):
    """Fetch the source and re-index the files that changed; returns the counts.  With
    ``wait=false``: start the sync in the background and answer 202 at once (409 if one is
    running); the source's ``syncing``, ``commit``, ``synced_at`` and ``error`` tell the rest."""
    with vault().factory() as s:
        svc.get_source(s, workspace(), source_id)  # 404 outside this workspace
    if not flag("wait", default=True):
        running = background.start_sync(vault(), actor(), source_id)
        return jsonify({"source": source_id, "syncing": running}), 202
    return jsonify(svc.sync_source(vault().factory, vault(), actor(), source_id))


@api.delete("/pipeline-sources/<int:source_id>")
def remove_source(source_id: int):
    """Remove a source with its pipelines and their references (the repository is untouched)."""
    with vault().factory() as s:
        svc.get_source(s, workspace(), source_id)
    return jsonify(svc.remove_source(vault().factory, vault(), actor(), source_id))


@api.get("/pipelines")
def list_pipelines():
    """Indexed pipelines: source, commit, parse error and count of dangling references."""
    with vault().factory() as s:
        return jsonify({"items": idx.list_pipelines(s, workspace())})


@api.get("/pipelines/<int:pipeline_id>")
def get_pipeline(pipeline_id: int):
    """One pipeline's steps and the credentials each uses, dangling ones flagged."""
    with vault().factory() as s:
        return jsonify(idx.get_pipeline(s, workspace(), pipeline_id))


@api.get("/pipelines/dangling")
def dangling():
    """References to credentials that do not exist or to pinned versions that were pruned."""
    with vault().factory() as s:
        return jsonify({"items": idx.dangling(s, workspace())})
