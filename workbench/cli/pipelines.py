"""``workbench pipeline …``: pipeline sources (add, sync, list) and lint of the reference index."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from .. import sourcelock, sources as svc
from ..audit import unit
from . import cli_actor, vault, workspace_option
from ..errors import NotFound
from .completion import credential_ids
from .output import emit, json_option, note


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
@click.option("--credential", "credential_id", default=None, shell_complete=credential_ids,
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
    r = svc.sync_source(vault().factory, vault(), cli_actor(), source_id, progress=note)
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
@json_option
@with_appcontext
def remove(source_ref, yes, workspace, as_json):
    """Remove a source with its pipelines and their references."""
    with vault().factory() as s:
        src = svc.get_source(s, workspace, source_ref)
        source_id, name = src.id, src.name
    if not yes:
        click.confirm(f"Remove source {name} and its pipelines from the index?", abort=True)
    r = svc.remove_source(vault().factory, vault(), cli_actor(), source_id)
    emit({"removed": name, **r}, as_json, f"removed source {name} ({r['pipelines']} pipelines)")


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


def index_folder(v, folder: str, workspace: str = "default") -> dict:
    """Index ``folder``/pipelines/*.yaml as the local source ``local`` (``init --pipelines``,
    which the quick start runs, so delete warnings name the example pipelines from the start)."""
    with unit(v.factory) as s:
        try:
            source_id = svc.get_source(s, workspace, "local").id
        except NotFound:
            source_id = svc.add_source(s, cli_actor(), workspace, kind="local",
                                       url=str(Path(folder).absolute()), name="local").id
    return svc.sync_source(v.factory, v, cli_actor(), source_id, progress=note)


@pipeline.command("lint")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@workspace_option
@json_option
@with_appcontext
def lint(files, workspace, as_json):
    """Refuse what `workbench run` would refuse: unknown credentials and versions (with "did
    you mean"), bindings that do not fit a credential's type, unreadable pipelines; exit 1 if
    any.

    Without FILES: every indexed pipeline of the workspace (those of local sources are read
    from disk).  With FILES: those files as they are on disk (e.g. before pushing them)."""
    from .. import lint as checks
    with unit(vault().factory) as s:
        if files:
            problems = checks.check_files(s, vault().barrier, cli_actor(), workspace, files)
        else:
            problems = checks.check_index(s, vault().barrier, cli_actor(), workspace)
    emit({"problems": problems}, as_json, "\n".join(p["message"] for p in problems)
         or "no problems: every reference resolves and fits, every pipeline parses")
    if problems:
        sys.exit(1)


commands = [pipeline]
