"""The per-user config file (``workbench config``): which vault and server to use, so scripts
need no environment.  Like ``kubectl config``, it holds locations, never a secret."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import ConfigError, ValidationError

# key → what it means; ``token-file`` names a file holding a runner token, never the token
KEYS = {
    "instance": "the vault's instance folder (like WORKBENCH_INSTANCE)",
    "server": "the Workbench server for `run`/`exec` (like WORKBENCH_SERVER)",
    "token-file": "a file holding the runner token for `--server` (like --token-file)",
    "workspace": "the default workspace (like --workspace)",
}


def path(env: dict[str, str] | None = None) -> Path | None:
    """``$WORKBENCH_CONFIG``, else ``$XDG_CONFIG_HOME/workbench/config.yaml``, else under ~."""
    env = os.environ if env is None else env
    if env.get("WORKBENCH_CONFIG"):
        return Path(env["WORKBENCH_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or (env.get("HOME") and os.path.join(env["HOME"], ".config"))
    return Path(base) / "workbench" / "config.yaml" if base else None


def load(env: dict[str, str] | None = None) -> dict[str, str]:
    """The config file's settings; an absent file is an empty config."""
    p = path(env)
    if p is None or not p.is_file():
        return {}
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {p} is not readable YAML ({type(e).__name__}); "
                          f"fix or remove it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of key: value")
    return {str(k): str(v) for k, v in data.items() if k in KEYS and v is not None}


def store(key: str, value: str | None, env: dict[str, str] | None = None) -> Path:
    """Set (or with ``None`` remove) one key; paths are stored absolute."""
    if key not in KEYS:
        raise ValidationError(f"unknown config key {key!r}; known: {', '.join(KEYS)}", field=key)
    p = path(env)
    if p is None:
        raise ConfigError("no config file location: set HOME, XDG_CONFIG_HOME or WORKBENCH_CONFIG")
    data = load(env)
    if value is None:
        data.pop(key, None)
    else:
        data[key] = str(Path(value).expanduser().absolute()) if key in ("instance", "token-file") \
            else value
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    tmp.replace(p)  # never a half-written config
    return p


def defaults(commands) -> dict:
    """A click ``default_map`` giving every command with a ``server``/``token_file``/
    ``workspace`` option the configured value (environment variables still win)."""
    conf = load()
    wanted = {"server": conf.get("server"), "token_file": conf.get("token-file"),
              "workspace": conf.get("workspace")}
    wanted = {k: v for k, v in wanted.items() if v}
    if not wanted:
        return {}

    def walk(cmd) -> dict:
        params = [*cmd.params, *getattr(getattr(cmd, "file_command", None), "params", [])]
        out = {p.name: wanted[p.name] for p in params if p.name in wanted}
        for name, sub in getattr(cmd, "commands", {}).items():
            nested = walk(sub)
            if nested:
                out[name] = nested
        return out
    return walk(commands)
