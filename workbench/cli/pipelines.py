"""``workbench pipeline …``: pipeline sources (add, sync, list) and lint of the reference index."""
from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from .. import references as idx, sourcelock, sources as svc
from ..audit import unit
from ..errors import PipelineError
from ..pipeline.parse import load_pipeline
from . import cli_actor, emit, json_option, vault, workspace_option


@click.group("pipeline")
def pipeline():
    """Pipelines: their sources and the credentials they reference."""


@pipeline.group("source")
def source():
    """Where pipelines come from: the local folder or git repositories."""


@source.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(svc.KINDS), default="git", show_default=True)
@click.option("--url", default=None, help="repository URL (git) or folder (local, default .)")
@click.option("--branch", default="main", show_default=True)
@click.option("--glob", "path_glob", default="pipelines/*.yaml", show_default=True,
              help="which files are pipelines")
@click.option("--credential", "credential_id", default=None,
              help="credential ID used to clone (username_password, secret_text, ssh key)")
@click.option("--sync/--no-sync", "then_sync", default=False, help="sync right away")
@workspace_option
@json_option
@with_appcontext
def add(name, kind, url, branch, path_glob, credential_id, then_sync, workspace, as_json):
    """Add a pipeline source."""
    with unit(vault().factory) as s:
        src = svc.add_source(s, cli_actor(), workspace, kind=kind, url=url, branch=branch,
                             path_glob=path_glob, credential_id=credential_id, name=name)
        data = svc.to_dict(src, 0)
    emit(data, as_json, f"added source {name} (id {data['id']})")
    if then_sync:
        _sync(data["id"], as_json)


def _sync(source_id: int, as_json: bool) -> None:
    r = svc.sync_source(vault().factory, vault(), cli_actor(), source_id)
    emit(r, as_json, f"synced to {r['commit'] or 'folder'}: {r['added']} added, "
                     f"{r['changed']} changed, {r['renamed']} renamed, {r['removed']} removed, "
                     f"{r['errors']} with errors ({r['pipelines']} pipelines)")


@source.command("sync")
@click.argument("source_ref")
@workspace_option
@json_option
@with_appcontext
def sync(source_ref, workspace, as_json):
    """Fetch a source (by ID or name) and re-index what changed."""
    with vault().factory() as s:
        source_id = svc.get_source(s, workspace, source_ref).id
    _sync(source_id, as_json)


@source.command("remove")
@click.argument("source_ref")
@click.option("--yes", is_flag=True, help="do not ask")
@workspace_option
@with_appcontext
def remove(source_ref, yes, workspace):
    """Remove a source with its pipelines and their references."""
    with vault().factory() as s:
        src = svc.get_source(s, workspace, source_ref)
        source_id, name = src.id, src.name
    if not yes:
        click.confirm(f"Remove source {name} and its pipelines from the index?", abort=True)
    r = svc.remove_source(vault().factory, vault(), cli_actor(), source_id)
    click.echo(f"removed source {name} ({r['pipelines']} pipelines)")


@source.command("list")
@workspace_option
@json_option
@with_appcontext
def list_(workspace, as_json):
    """List pipeline sources."""
    with vault().factory() as s:
        items = svc.list_sources(s, workspace, sourcelock.busy(vault()))
    lines = [f"{'ID':>4}  {'NAME':<24} {'KIND':<5} {'COMMIT':<12} {'PIPES':>5}  URL"] + [
        f"{i['id']:>4}  {i['name']:<24} {i['kind']:<5} "
        f"{'syncing…' if i['syncing'] else (i['commit'] or '-')[:12]:<12} "
        f"{i['pipelines']:>5}  {i['url']}" + (f"\n      error: {i['error']}" if i['error'] else "")
        for i in items]
    emit({"items": items}, as_json, "\n".join(lines))


def _lint_files(s, workspace: str, files: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Parse files from disk and check their references against the vault (no index)."""
    bad, broken, found = [], [], []
    for path in files:
        try:
            p = load_pipeline(path)
        except PipelineError as e:
            broken.append({"path": path, "error": e.message})
            continue
        found += [{**r, "pipeline": p.name, "path": path} for r in idx.reference_rows(p)]
    reasons = idx.check_refs(s, workspace, [(r["credential_id"], r["version"]) for r in found])
    for r in found:
        if (r["credential_id"], r["version"]) in reasons:
            bad.append({**r, "reason": reasons[(r["credential_id"], r["version"])]})
    return bad, broken


@pipeline.command("lint")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@workspace_option
@json_option
@with_appcontext
def lint(files, workspace, as_json):
    """Report dangling credential references and unreadable pipelines; exit 1 if any.

    Without FILES: every indexed pipeline of the workspace.  With FILES: those files as they
    are on disk (e.g. before pushing them)."""
    with vault().factory() as s:
        if files:
            bad, broken = _lint_files(s, workspace, files)
        else:
            bad = idx.dangling(s, workspace)
            broken = [p for p in idx.list_pipelines(s, workspace) if p["error"]]
    lines = [f"{d['path']}:{d['line'] or ''} pipeline {d['pipeline']} step {d['step']}: "
             f"{d['credential_id']}{'@' + str(d['version']) if d['version'] else ''}: "
             f"{d['reason']}" for d in bad]
    lines += [f"{p['path']}: {p['error']}" for p in broken]
    emit({"dangling": bad, "errors": broken}, as_json,
         "\n".join(lines) if lines else "no dangling references, every pipeline parses")
    if bad or broken:
        sys.exit(1)


commands = [pipeline]
