"""``workbench run list|show|log``: recorded runs, next to ``workbench run FILE``."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from .. import retention
from ..audit import SYSTEM
from ..pipeline import records
from . import vault, workspace_option
from .output import emit, fields, json_option, table
from .runs import run as run_file


@click.command("list")
@click.option("--limit", default=20, show_default=True)
@workspace_option
@json_option
@with_appcontext
def list_(limit, workspace, as_json):
    """Recent runs, newest first."""
    with vault().factory() as s:
        items = [records.run_to_dict(r) for r in records.list_runs(s, workspace, limit=limit)]
        total = records.count_runs(s, workspace)
    for i in items:
        i["by"] = i["trigger_user"] or i["trigger_runner"]
    emit({"items": items, "total": total}, as_json, table(items, [
        ("ID", "id"), ("PIPELINE", "pipeline"), ("STATUS", "status"),
        ("STARTED", "started_at"), ("BY", "by")], empty="no runs"))


@click.command("show")
@click.argument("run_id")
@workspace_option
@json_option
@with_appcontext
def show(run_id, workspace, as_json):
    """One run: its steps, their outcome, and the credential versions they used."""
    with vault().factory() as s:
        d = records.run_to_dict(records.get_run(s, run_id, workspace))
    head = fields({k: d[k] for k in ("id", "pipeline", "file", "status", "message", "started_at",
                                     "finished_at", "trigger_user", "trigger_runner")})
    steps = table(d["steps"], [("STEP", "name"), ("STATUS", "status"), ("EXIT", "exit_code"),
                               ("SECONDS", "duration"), ("MESSAGE", "message")])
    uses = table(d["uses"], [("STEP", "step"), ("CREDENTIAL", "credential_id"),
                             ("VERSION", "version")], empty="no credentials used")
    emit(d, as_json, f"{head}\n\n{steps}\n\n{uses}")


@click.command("log")
@click.argument("run_id")
@click.option("--step", "step_name", default=None, help="only this step's log")
@workspace_option
@json_option
@with_appcontext
def log(run_id, step_name, workspace, as_json):
    """The stored (masked) output of a run's steps."""
    with vault().factory() as s:
        d = records.run_to_dict(records.get_run(s, run_id, workspace), with_log=True)
    steps = [st for st in d["steps"] if step_name in (None, st["name"])]
    if step_name and not steps:
        raise click.BadParameter(f"run {run_id} has no step {step_name!r}", param_hint="--step")
    emit({"id": d["id"], "steps": [{"name": st["name"], "log": st["log"]} for st in steps]},
         as_json, "\n".join(f"== step {st['name']} ({st['status']})\n{st['log'].rstrip()}"
                            if not step_name else st["log"].rstrip() for st in steps))


@click.command("prune")
@click.option("--older-than", "days", type=int, default=None,
              help="days of history to keep (default: WORKBENCH_RUN_RETENTION_DAYS, 90)")
@click.option("--dry-run", is_flag=True, help="count what would go, delete nothing")
@json_option
@with_appcontext
def prune(days, dry_run, as_json):
    """Delete finished runs and closed server runs older than the retention (all workspaces).

    The worker's periodic tick does this on its own; the audit log is never pruned."""
    v = vault()
    days = days if days is not None else v.settings.run_retention_days
    if not days:
        raise click.UsageError("run retention is off (WORKBENCH_RUN_RETENTION_DAYS=0); "
                               "give --older-than DAYS")
    if dry_run:
        with v.factory() as s:
            out = {**retention.count_old(s, days), "dry_run": True}
    else:
        with v.factory.begin() as s:
            out = retention.prune(s, SYSTEM, days)
    verb = "would delete" if dry_run else "deleted"
    emit(out, as_json, f"{verb} {out['runs']} run(s) and {out['server_runs']} server run(s) "
                       f"older than {days} days")


class RunGroup(click.Group):
    """``run FILE`` runs a pipeline; ``run list|show|log`` look at recorded runs."""

    file_command = run_file  # whose options take the config file's defaults too

    def invoke(self, ctx):
        args = [*ctx._protected_args, *ctx.args]
        if args and args[0] in self.commands:
            return super().invoke(ctx)
        with run_file.make_context("run", args, parent=ctx.parent) as sub:  # `workbench run`
            return run_file.invoke(sub)


run_file.epilog = ("Recorded runs: `workbench run list`, `workbench run show RUN_ID`, "
                   "`workbench run log RUN_ID [--step NAME]`, `workbench run prune`.")
run = RunGroup("run", commands=[list_, show, log, prune], help=run_file.help, add_help_option=False,
               context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False},
               invoke_without_command=False, no_args_is_help=False)
commands = [run]
