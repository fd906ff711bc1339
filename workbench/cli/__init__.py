"""The ``workbench`` command: a click group over the service layer."""
from __future__ import annotations

import getpass
import importlib
import json
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup

from ..audit import Actor
from ..errors import ConfigError, WorkbenchError

# Modules that contribute commands: each exposes ``commands`` (a list of click commands).
COMMAND_MODULES = ["workbench.cli.admin", "workbench.cli.people", "workbench.cli.scopes",
                   "workbench.cli.creds", "workbench.cli.runs", "workbench.cli.pipelines"]


workspace_option = click.option("--workspace", "-w", default="default", show_default=True)
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


def cli_actor() -> Actor:
    """The local operator: whoever can read the master key is admin of this vault."""
    return Actor(getpass.getuser(), role="admin", source="cli", kind="cli")


def vault():
    return current_app.extensions["workbench"]


def emit(data, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif text is not None:
        click.echo(text)


def _create_app():
    from .. import create_app
    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False,
             add_version_option=False, load_dotenv=False, set_debug_flag=False)
def cli():
    """Workbench: a pipeline-oriented credential vault for CI."""


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
    """Entry point: errors become one clear line and exit code 2 (1 is a failed run)."""
    load_commands()
    try:
        cli.main(args=argv, prog_name="workbench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except ConfigError as e:
        click.echo(f"workbench: cannot start: {e.message}", err=True)
        return 2
    except WorkbenchError as e:
        click.echo(f"workbench: {e.message}", err=True)
        refs = e.details.get("references")
        for r in refs or []:
            click.echo(f"  - pipeline {r.get('pipeline')} step {r.get('step')}", err=True)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
