"""``workbench completion SHELL``: shell completion, credential IDs included."""
from __future__ import annotations

import click
from click.shell_completion import CompletionItem, get_completion_class


def credential_ids(ctx: click.Context, param: click.Parameter, incomplete: str):
    """Complete a credential ID from the vault (nothing, quietly, when it cannot be opened)."""
    from ..config import Settings
    from ..credentials import list_credentials
    from ..vault import Vault, require_existing
    try:
        settings = Settings.from_env()
        require_existing(settings)
        v = Vault(settings)
        try:
            workspace = ctx.params.get("workspace") or "default"
            with v.factory() as s:
                rows, _ = list_credentials(s, workspace=workspace, q=incomplete or None,
                                           limit=200, inherited=False)  # commands take own IDs
                return [CompletionItem(c.cred_id) for c in rows
                        if c.cred_id.startswith(incomplete)]
        finally:
            v.close()
    except Exception:  # completion must never print a traceback into the shell
        return []


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the completion script, e.g. `source <(workbench completion bash)`."""
    from . import cli
    cls = get_completion_class(shell)
    click.echo(cls(cli, {}, "workbench", "_WORKBENCH_COMPLETE").source())


commands = [completion]
