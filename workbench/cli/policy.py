"""``workbench policy …``: release rules per credential, protected refs, and explain."""
from __future__ import annotations

import sys
from datetime import timedelta

import click
from flask.cli import with_appcontext

from .. import idtokens, policy as svc, sources
from ..audit import unit
from . import cli_actor, emit, json_option, vault, workspace_option
from .admin import keys


@click.group("policy")
def policy():
    """Which run and step may receive which credential."""


@policy.command("explain")
@click.argument("pipeline")
@click.argument("step")
@click.argument("cred_id", metavar="CRED")
@click.option("--ref", default=None, help="the git ref of the run (e.g. main, refs/tags/v1)")
@click.option("--event", default=None, help="what triggers the run (push, pull_request, …)")
@click.option("--fork", is_flag=True, help="the change comes from a fork")
@click.option("--source", default=None, help="the pipeline's source, if the name is ambiguous")
@workspace_option
@json_option
@with_appcontext
def explain(pipeline, step, cred_id, ref, event, fork, source, workspace, as_json):
    """Would STEP of PIPELINE receive CRED?  Exit 0 for allow, 1 for deny."""
    with vault().factory() as s:
        out = svc.explain(s, workspace, pipeline, step, cred_id, ref=ref, event=event,
                          fork=fork, source=source)
    emit(out, as_json, f"{out['decision']} ({out['rule']}): {out['reason']}")
    sys.exit(0 if out["decision"] == "allow" else 1)


@policy.command("show")
@click.argument("cred_id", metavar="CRED")
@workspace_option
@json_option
@with_appcontext
def show(cred_id, workspace, as_json):
    """Who may receive CRED: the steps binding it, its rules, allow-listed runner tokens."""
    with vault().factory() as s:
        out = svc.receivers(s, workspace, cred_id)
    lines = [f"{cred_id}: {'protected' if out['protected'] else 'not protected'}; "
             f"excluded events: {', '.join(out['exclude_events']) or 'none'}"]
    lines += [f"  step {st['step']} of pipeline {st['pipeline']} (source {st['source']}"
              + (f", protected refs {', '.join(st['protected_refs'])}"
                 if out["protected"] else "") + ")" for st in out["steps"]]
    lines += [f"  runner token {t} (ad hoc)" for t in out["runner_tokens"]]
    emit(out, as_json, "\n".join(lines))


@policy.command("set")
@click.argument("cred_id", metavar="CRED")
@click.option("--protected/--unprotected", default=None,
              help="released only to runs on protected refs of their source")
@click.option("--exclude-event", "exclude", multiple=True, metavar="EVENT[:fork]",
              help="never released to runs of this event (repeatable; replaces the list)")
@click.option("--clear-events", is_flag=True, help="remove every excluded event")
@workspace_option
@json_option
@with_appcontext
def set_(cred_id, protected, exclude, clear_events, workspace, as_json):
    """Change CRED's release rules."""
    events = [] if clear_events else (list(exclude) or None)
    with unit(vault().factory) as s:
        out = svc.set_policy(s, cli_actor(), workspace, cred_id, protected=protected,
                             exclude_events=events)
    emit(out, as_json, f"{cred_id}: protected={out['protected']}, excluded events: "
                       f"{', '.join(out['exclude_events']) or 'none'}")


@policy.command("protect")
@click.argument("source")
@click.argument("patterns", nargs=-1)
@workspace_option
@json_option
@with_appcontext
def protect(source, patterns, workspace, as_json):
    """Set SOURCE's protected branch and tag globs (e.g. main 'release/*'); none: clear."""
    with unit(vault().factory) as s:
        src = sources.get_source(s, workspace, source)
        out = svc.set_protected_refs(s, cli_actor(), workspace, src, list(patterns))
    emit({"source": source, "patterns": out}, as_json,
         f"source {source}: protected refs {', '.join(out) or 'none'}")


@click.command("rotate-signing")
@click.option("--remove-retired", is_flag=True,
              help="remove retired keys now: tokens they signed stop verifying at once")
@json_option
@with_appcontext
def rotate_signing(remove_retired, as_json):
    """Start a new key for step identity tokens; the old one stays published for an hour."""
    keep = timedelta(0) if remove_retired else idtokens.KEEP_RETIRED
    with unit(vault().factory) as s:
        out = idtokens.rotate(s, vault().barrier, cli_actor(), keep_retired=keep)
    emit(out, as_json, f"signing key {out['kid']} active; retired {len(out['retired'])}, "
                       f"removed {len(out['removed'])}")


keys.add_command(rotate_signing)
set_.name = "set"
commands = [policy]
