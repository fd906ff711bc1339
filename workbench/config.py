"""Settings from ``WORKBENCH_*`` environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

MAX_RETENTION_DAYS = 36500  # WORKBENCH_RUN_RETENTION_DAYS and `run prune --older-than`


@dataclass
class Settings:
    instance: Path
    database_url: str
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    secret_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 2 * 1024 * 1024
    testing: bool = False
    insecure_cookies: bool = False  # plain-HTTP local use (`workbench serve` on localhost)
    git_timeout: float = 300.0  # seconds a pipeline-source fetch may take before it is stopped
    trusted_proxies: str = ""  # addresses/networks whose X-Forwarded-For is believed
    instance_from: str = "default"  # how the instance was chosen, for "no vault here" messages
    id_token_issuer: str | None = None  # the ``iss`` of step identity tokens (default: the URL asked)
    oidc: dict[str, str] = field(default_factory=dict, repr=False)  # WORKBENCH_OIDC_* (sso.py)
    run_retention_days: int = 90  # finished runs kept this long (retention.py); 0: for ever
    resolve_cache_seconds: float = 60.0  # resolution.Answers keeps an answer this long; 0: off

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = dict(os.environ if env is None else env)
        instance, overrides["instance_from"] = _instance(env, overrides.pop("instance", None))
        url = overrides.pop("database_url", None) or env.get("WORKBENCH_DATABASE_URL") \
            or f"sqlite:///{instance / 'workbench.db'}"
        key_file = overrides.pop("master_key_file", None) or env.get("WORKBENCH_MASTER_KEY_FILE")
        if "git_timeout" not in overrides and env.get("WORKBENCH_GIT_TIMEOUT"):
            overrides["git_timeout"] = _seconds("WORKBENCH_GIT_TIMEOUT", env["WORKBENCH_GIT_TIMEOUT"])
        if "trusted_proxies" not in overrides and env.get("WORKBENCH_TRUSTED_PROXIES"):
            overrides["trusted_proxies"] = env["WORKBENCH_TRUSTED_PROXIES"]
        if "id_token_issuer" not in overrides and env.get("WORKBENCH_ID_TOKEN_ISSUER"):
            overrides["id_token_issuer"] = env["WORKBENCH_ID_TOKEN_ISSUER"].rstrip("/")
        if "run_retention_days" not in overrides and env.get("WORKBENCH_RUN_RETENTION_DAYS"):
            overrides["run_retention_days"] = _days("WORKBENCH_RUN_RETENTION_DAYS",
                                                    env["WORKBENCH_RUN_RETENTION_DAYS"])
        if "resolve_cache_seconds" not in overrides and env.get("WORKBENCH_RESOLVE_CACHE_SECONDS"):
            overrides["resolve_cache_seconds"] = _seconds(
                "WORKBENCH_RESOLVE_CACHE_SECONDS", env["WORKBENCH_RESOLVE_CACHE_SECONDS"],
                zero=True, most=3600)
        overrides.setdefault("oidc", {k: v for k, v in env.items()
                                      if k.startswith("WORKBENCH_OIDC_")})
        s = cls(instance=instance, database_url=url,
                master_key=overrides.pop("master_key", None) or env.get("WORKBENCH_MASTER_KEY"),
                master_key_file=Path(key_file) if key_file else None,
                secret_key=overrides.pop("secret_key", None) or env.get("WORKBENCH_SECRET_KEY"),
                **overrides)
        return s

    @property
    def key_path(self) -> Path:
        """Where the master key lives when it is kept in a file."""
        return self.master_key_file or (self.instance / "master.key")


def _instance(env: dict[str, str], given) -> tuple[Path, str]:
    """The instance folder and where it came from: argument, environment, config file, ./instance."""
    if given:
        return Path(given).absolute(), "argument"
    if env.get("WORKBENCH_INSTANCE"):
        return Path(env["WORKBENCH_INSTANCE"]).absolute(), "WORKBENCH_INSTANCE"
    from . import userconfig
    configured = userconfig.load(env).get("instance")
    if configured:
        return Path(configured), f"config file {userconfig.path(env)}"
    return Path("instance").absolute(), "default"


def _seconds(name: str, text: str, *, zero: bool = False, most: float = 86400) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 <= value if zero else 0 < value) or not value < most:
        raise ConfigError(f"{name} must be a number of seconds, "
                          f"{'0 (off) or more' if zero else 'more than 0'} and under {most:g}")
    return value


def _days(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_RETENTION_DAYS:
        raise ConfigError(f"{name} must be a whole number of days from 0 (keep for ever) "
                          f"to {MAX_RETENTION_DAYS}")
    return value
