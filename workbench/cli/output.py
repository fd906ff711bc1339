"""One output helper for every command: ``-o table|json|yaml`` (``--json``), tables with
headers, and errors as one line or as JSON, with an exit code per kind of failure."""
from __future__ import annotations

import json

import click
import yaml

from ..errors import (ConfigError, Conflict, CryptoError, NotFound, PermissionDenied,
                      ValidationError, WorkbenchError)

FORMATS = ("table", "json", "yaml")

# Exit codes (docs/cli.md): 1 is "it ran and found a problem" (a failed run, lint findings).
USAGE, NOT_FOUND, REFUSED, KEY_ERROR = 2, 3, 4, 5


def _remember(ctx: click.Context, param: click.Parameter, value):
    if param.name == "as_json":
        if value:
            ctx.meta["workbench.output"] = "json"
        return value
    if value:
        ctx.meta["workbench.output"] = value
    return value


def json_option(fn):
    """``-o/--output table|json|yaml`` and ``--json`` (= ``-o json``); the command receives
    ``as_json``, and ``emit`` reads the chosen format."""
    fn = click.option("-o", "--output", "output_format", type=click.Choice(FORMATS),
                      expose_value=False, callback=_remember, is_eager=True,
                      help="output format (default table)")(fn)
    return click.option("--json", "as_json", is_flag=True, callback=_remember,
                        help="same as -o json")(fn)


def current_format() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("workbench.output", "table") if ctx else "table"


def emit(data, as_json: bool = False, text: str | None = None) -> None:
    """Print ``data`` as JSON or YAML, or ``text`` (the human form) for tables."""
    fmt = "json" if as_json else current_format()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif fmt == "yaml":
        click.echo(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=True,
                                  allow_unicode=True).rstrip("\n"))
    elif text is not None:
        click.echo(text)


def cell(value) -> str:
    """A value as a person reads it: no Python reprs (``None`` → ``-``, maps as k=v)."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value)
    return str(value)


def table(items: list[dict], columns: list[tuple[str, str]], empty: str = "") -> str:
    """Rows under a header line: ``columns`` is a list of (header, key)."""
    if not items:
        return empty
    rows = [[h for h, _ in columns]] + [[cell(i.get(k)) for _, k in columns] for i in items]
    widths = [max(len(r[n]) for r in rows) for n in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def columns(*keys: str) -> list[tuple[str, str]]:
    """(header, key) pairs for ``table`` whose header is the key as written."""
    return [(k, k) for k in keys]


def fields(d: dict, skip: tuple[str, ...] = ()) -> str:
    """``key: value`` lines, aligned, for one object."""
    keys = [k for k in d if k not in skip]
    width = max((len(k) for k in keys), default=0)
    return "\n".join(f"{k:>{width}}: {cell(d[k])}" for k in keys)


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, (ConfigError, CryptoError)):
        return KEY_ERROR
    if isinstance(exc, NotFound):
        return NOT_FOUND
    if isinstance(exc, (Conflict, PermissionDenied)):
        return REFUSED
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, ValidationError):
        return USAGE
    return 1


def wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON (read before parsing, for parse errors too)."""
    args = argv[:argv.index("--")] if "--" in argv else argv
    for n, a in enumerate(args):
        if a in ("--json", "-ojson", "--output=json"):
            return True
        if a in ("-o", "--output") and args[n + 1:n + 2] == ["json"]:
            return True
    return False


def ref_line(r: dict) -> str:
    """One reference of a credential, as a delete warning lists it."""
    where = f" ({r['path']}:{r['line']})" if r.get("path") and r.get("line") else ""
    pin = f" pins version {r['version']}" if r.get("version") else ""
    return f"pipeline {r.get('pipeline')} step {r.get('step')}{pin}{where}"


def report(exc: Exception, as_json: bool) -> int:
    """Print an error on stderr (one line, or a JSON object) and return its exit code."""
    code = exit_code(exc)
    if isinstance(exc, WorkbenchError):
        body = exc.to_dict()
        prefix = "cannot start: " if isinstance(exc, ConfigError) else ""
        message = f"workbench: {prefix}{exc.message}"
        refs = exc.details.get("references") or []
        message += "".join(f"\n  - {ref_line(r)}" for r in refs)
    else:
        body = {"code": "usage" if code == USAGE else "error", "message": exc.format_message()}
        message = None
    if as_json:
        click.echo(json.dumps({"error": {**body, "exit_code": code}}, indent=2, sort_keys=True,
                              default=str), err=True)
    elif message is not None:
        click.echo(message, err=True)
    else:
        exc.show()
    return code


def note(line: str) -> None:
    """Progress for people, on stderr, so stdout stays parseable."""
    click.echo(f"workbench: {line}", err=True)
