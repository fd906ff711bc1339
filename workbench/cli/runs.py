"""``workbench run`` and ``workbench exec``: run a pipeline, or one command, with credentials."""
from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path

import click
import yaml

from ..errors import PipelineError, WorkbenchError
from .completion import credential_ids
from ..pipeline.parse import load_pipeline, parse_pipeline
from ..pipeline.runner import DbRecorder, RunResult, run_pipeline


def _out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _note(line: str) -> None:
    click.echo(f"workbench: {line}", err=True)


def _token(token: str | None, token_file: str | None) -> str | None:
    if token_file:
        return Path(token_file).read_text().strip()
    return token


def _backend(workspace: str, server: str | None, token: str | None, ca_file: str | None,
             run: dict | None = None):
    """(resolver, recorder, instance_dir, trigger) for a server or for the local vault;
    ``run``: a run opened on the server (its run token resolves, step by step)."""
    if server:
        from ..pipeline.remote import HttpRecorder, HttpResolver, StepResolver
        resolver = (StepResolver(server, run, workspace, ca_file) if run
                    else HttpResolver(server, token or "", workspace, ca_file))
        return (resolver, HttpRecorder(server, token or "", workspace, ca_file), None,
                {"trigger_runner": socket.gethostname()[:128]})
    from flask.cli import ScriptInfo

    info = click.get_current_context().ensure_object(ScriptInfo)
    app = info.load_app()
    with app.app_context():
        vault = app.extensions["workbench"]
    from ..audit import Actor
    from ..resolution import VaultResolver  # the vault core; imported only in embedded mode
    # the local operator acting as an embedded runner: resolves are audited under their name
    actor = Actor(getpass.getuser(), role="runner", source="cli", kind="cli")
    return (VaultResolver(vault, workspace, actor),
            DbRecorder(vault.factory, workspace), str(vault.settings.instance),
            {"trigger_user": getpass.getuser()[:128]})


def _common(fn):
    options = [
        click.option("--workspace", "-w", envvar="WORKBENCH_WORKSPACE", default="default",
                     show_default=True, help="Workspace holding the credentials."),
        click.option("--server", envvar="WORKBENCH_SERVER", metavar="URL",
                     help="Resolve through this Workbench server instead of the local vault "
                          "(env WORKBENCH_SERVER)."),
        click.option("--token-file", type=click.Path(exists=True, dir_okay=False),
                     help="File holding the runner token (preferred)."),
        click.option("--token", envvar="WORKBENCH_RUNNER_TOKEN", metavar="TOKEN",
                     help="Runner token; prefer env WORKBENCH_RUNNER_TOKEN or --token-file, "
                          "a command-line token is visible to other local users."),
        click.option("--ca-file", envvar="WORKBENCH_CA_FILE",
                     type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle that signed the server's certificate (env WORKBENCH_CA_FILE)."),
        click.option("--workdir", type=click.Path(file_okay=False), default=".",
                     help="Directory the steps run in (also their HOME)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fail(exc: WorkbenchError, *, located: bool = True) -> click.ClickException:
    """A configuration error: exit 2, so it is never mistaken for a failed step (exit 1)."""
    message = exc.message if located or not isinstance(exc, PipelineError) else exc.problem
    err = click.ClickException(message)
    err.exit_code = 2
    return err


def _execute(pipeline, source, notify, *, workspace, server, token, token_file, ca_file,
             workdir, located: bool = True, opening: dict | None = None) -> RunResult:
    try:
        token = _token(token, token_file)
        run = _open(server, token, workspace, ca_file, opening, notify) if server else None
        resolver, recorder, instance, trigger = _backend(workspace, server, token, ca_file, run)
        return run_pipeline(pipeline, resolver, recorder=recorder, echo=_out, notify=notify,
                            instance_dir=instance, workdir=os.path.abspath(workdir),
                            trigger=trigger, source=source, run_id=run and run["id"])
    except WorkbenchError as exc:  # messages name IDs, files and lines; never values
        raise _fail(exc, located=located) from None


def _open(server, token, workspace, ca_file, opening: dict | None, notify) -> dict | None:
    """Open a run of the indexed pipeline on the server; None (ad hoc: the runner token's
    allow-list decides) when it is not indexed and no source was named."""
    if opening is None:
        return None
    from ..errors import NotFound
    from ..pipeline.remote import open_run
    try:
        run = open_run(server, token or "", workspace, ca_file, **opening)
    except NotFound as exc:
        if exc.details.get("indexed") is not False or opening.get("source"):
            raise
        notify(f"pipeline {opening['pipeline']!r} is not indexed on the server: resolving ad "
               "hoc (the runner token must allow each credential)")
        return None
    notify(f"run {run['id']} opened on the server (source {run['source']}, commit "
           f"{(run.get('commit') or '-')[:12]}, token valid until {run['expires_at']})")
    return run


@click.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", "source_name", envvar="WORKBENCH_SOURCE",
              help="With --server: the pipeline source FILE is indexed from (default: the one "
                   "indexed pipeline of that name).")
@click.option("--ref", envvar="WORKBENCH_REF", help="With --server: the git ref being built.")
@click.option("--commit", envvar="WORKBENCH_COMMIT", help="With --server: the commit built "
              "(must be the indexed one).")
@click.option("--event", envvar="WORKBENCH_EVENT", default="push", show_default=True,
              help="With --server: what triggered the run (push, pull_request, tag, …).")
@click.option("--fork", is_flag=True, help="With --server: the change comes from a fork.")
@_common
def run(file, source_name, ref, commit, event, fork, **options):
    """Run the pipeline FILE; its output is printed masked; non-zero exit when it failed."""
    try:
        pipeline = load_pipeline(file)
        source = Path(file).read_text(encoding="utf-8")
    except WorkbenchError as exc:
        raise _fail(exc) from None
    opening = {"source": source_name, "pipeline": pipeline.name, "ref": ref, "commit": commit,
               "event": event, "fork": fork,
               "path": os.path.normpath(file) if not os.path.isabs(file) else None}
    result = _execute(pipeline, source, _note, opening=opening, **options)
    _note(f"run {result.id}: {result.status}")
    sys.exit(result.exit_code)


def binding(spec: str) -> dict:
    """``ID`` | ``ID:env=NAME`` | ``ID:file=NAME[,filename=F]`` | ``ID:field=NAME,...``."""
    cred_id, _, rest = spec.partition(":")
    entry: dict = {"id": cred_id}
    fields: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise click.BadParameter(f"{part!r} is not KEY=NAME", param_hint="--cred")
        if key in ("env", "file", "filename"):
            entry[key] = value
        else:
            fields[key] = value
    if fields:
        if "env" in entry:
            raise click.BadParameter("use either env=NAME or field=NAME pairs, not both",
                                     param_hint="--cred")
        entry["env"] = fields
    return entry


@click.command("exec", context_settings={"ignore_unknown_options": True,
                                         "allow_interspersed_args": False})
@click.option("--cred", "creds", multiple=True, metavar="ID[:BINDING]",
              shell_complete=credential_ids,
              help="Credential to inject: ID (default binding), ID:env=NAME, ID:file=NAME, "
                   "ID:username=U,password=P.  Repeatable.")
@click.option("--timeout", default=None, help="Kill the command after this long (30s, 10m, 1h).")
@_common
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(creds, timeout, argv, **options):
    """Run one command (no shell) with credentials injected; exits with its exit code."""
    _require_program(argv[0], options["workdir"])
    step = {"name": "exec", "run": "exec " + shlex.join(argv),
            "credentials": [binding(c) for c in creds]}
    if timeout:
        step["timeout"] = timeout
    # the same parser as pipeline files: the same name checks and refusals
    text = yaml.safe_dump({"name": "exec", "steps": [step]}, sort_keys=False)
    try:
        pipeline = parse_pipeline(text, filename="<exec>")
    except WorkbenchError as exc:  # the line numbers of the generated YAML mean nothing here
        raise _fail(exc, located=False) from None
    result = _execute(pipeline, None, lambda line: None, located=False, **options)
    (step_result,) = result.steps
    if step_result.status in ("success", "failed") and step_result.exit_code is not None:
        sys.exit(step_result.exit_code)
    if step_result.status == "timeout":  # like timeout(1)
        _note(step_result.message or "timed out")
        sys.exit(124)
    _note(f"{step_result.status}" + (f": {step_result.message}" if step_result.message else ""))
    sys.exit(result.exit_code if result.exit_code else 1)


def _require_program(program: str, workdir: str) -> None:
    """Exit 127, like a shell, when the program is not there; the message names the PATH a
    step gets, not the ``/bin/sh`` that starts it."""
    from ..pipeline.plan import SAFE_PATH
    path = os.path.join(workdir, program)
    found = (os.access(path, os.X_OK) and not os.path.isdir(path)) if "/" in program \
        else shutil.which(program, path=SAFE_PATH)
    if not found:
        where = "" if "/" in program else f" (searched PATH={SAFE_PATH})"
        _note(f"{program}: command not found{where}")
        sys.exit(127)


exec_.name = "exec"
commands = [run, exec_]
