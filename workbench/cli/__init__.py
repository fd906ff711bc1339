"""The ``workbench`` command: a click group over the service layer."""
from __future__ import annotations

import getpass
import importlib
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup

from ..audit import Actor
from ..errors import WorkbenchError
from .output import emit, json_option, report, wants_json  # noqa: F401  (the commands' helpers)

# Modules that contribute commands: each exposes ``commands`` (a list of click commands).
COMMAND_MODULES = ["workbench.cli.admin", "workbench.cli.people", "workbench.cli.scopes",
                   "workbench.cli.creds", "workbench.cli.runs", "workbench.cli.pipelines",
                   "workbench.cli.settings", "workbench.cli.history", "workbench.cli.completion",
                   "workbench.cli.policy", "workbench.cli.jobs"]


workspace_option = click.option("--workspace", "-w", default="default", show_default=True)


def cli_actor() -> Actor:
    """The local operator: whoever can read the master key is admin of this vault."""
    return Actor(getpass.getuser(), role="admin", source="cli", kind="cli")


def vault():
    return current_app.extensions["workbench"]


def _create_app():
    """The app over an existing vault: no command but ``init`` creates one or its key."""
    from .. import create_app
    from ..config import Settings
    from ..vault import Vault, require_existing
    settings = Settings.from_env()
    require_existing(settings)
    return create_app(settings, vault=Vault(settings).open(create=False))


class Group(FlaskGroup):
    """Flask's group without its app-provided commands: listing or finding a command (even
    ``--help``) must not open, let alone create, a vault.  Nor Flask's ``--app``/``--env-file``/
    ``--debug`` options: this command serves one app."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params = [p for p in self.params if p.name not in ("app", "env_file", "debug")]

    def list_commands(self, ctx):
        return click.Group.list_commands(self, ctx)

    def get_command(self, ctx, name):
        return click.Group.get_command(self, ctx, name)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("workbench")
    except PackageNotFoundError:
        return "unknown"


@click.group(cls=Group, create_app=_create_app, add_default_commands=False,
             add_version_option=False, load_dotenv=False, set_debug_flag=False)
@click.version_option(package_name="workbench", prog_name="workbench", version=_version(),
                      message="%(prog)s %(version)s")
def cli():
    """Workbench: a pipeline-oriented credential vault for CI.

    \b
    Exit codes: 0 ok, 1 failed (a run, a check, lint findings), 2 usage or invalid input,
    3 not found, 4 refused (in use, conflict, not allowed), 5 vault or master key error,
    124 `exec --timeout` expired, 130 cancelled."""


def load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        for cmd in getattr(mod, "commands", []):
            cli.add_command(cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one clear line (or JSON with ``--json``/``-o json``) and an
    exit code per kind of failure (see the group's help)."""
    load_commands()
    argv = sys.argv[1:] if argv is None else list(argv)
    from .. import userconfig
    as_json = wants_json(argv)
    try:
        cli.main(args=argv, prog_name="workbench", standalone_mode=False,
                 default_map=userconfig.defaults(cli))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        return report(e, as_json)
    except WorkbenchError as e:
        return report(e, as_json)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
