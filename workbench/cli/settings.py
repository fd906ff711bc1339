"""``workbench config``: the per-user config file (instance, server), like ``kubectl config``."""
from __future__ import annotations

import click

from .. import userconfig
from .output import emit, fields, json_option


@click.group("config")
def config():
    """Per-user settings, so scripts need no environment (environment variables still win)."""


@config.command("set")
@click.argument("key", type=click.Choice(sorted(userconfig.KEYS)))
@click.argument("value")
def set_(key, value):
    """Set KEY (instance, server, token-file, workspace) to VALUE."""
    path = userconfig.store(key, value)
    click.echo(f"{key} set in {path}")


@config.command("unset")
@click.argument("key", type=click.Choice(sorted(userconfig.KEYS)))
def unset(key):
    """Remove KEY from the config file."""
    path = userconfig.store(key, None)
    click.echo(f"{key} removed from {path}")


@config.command("view")
@json_option
def view(as_json):
    """Show the config file's settings and where it is."""
    data = userconfig.load()
    where = userconfig.path()
    emit({"path": str(where) if where else None, "settings": data}, as_json,
         f"# {where}\n" + (fields(data) if data else "(no settings)"))


config_help = "\n".join(f"  {k}: {v}" for k, v in userconfig.KEYS.items())
config.help = f"{config.help}\n\n\b\nKeys:\n{config_help}"
commands = [config]
