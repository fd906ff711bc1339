"""The opened vault: settings, database, sessions and the barrier, as one object."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from . import keyring, statements
from .config import Settings
from .crypto import Barrier
from .db import make_engine, make_sessionmaker
from .errors import ConfigError
from .scopes import ensure_default

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str):
    from alembic.config import Config  # imported lazily: it costs ~0.3 s at every CLI start
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def require_existing(settings: Settings) -> None:
    """Stop, saying where we looked, unless a vault is there: only ``init`` creates one."""
    sqlite_file = settings.instance / "workbench.db"
    default_db = settings.database_url == f"sqlite:///{sqlite_file}"
    if settings.master_key or not default_db or sqlite_file.exists():
        return  # a given key or database is the vault; the key check follows on open
    where = {"default": "the default ./instance: WORKBENCH_INSTANCE is not set and no config "
                        "file names an instance"}.get(settings.instance_from,
                                                      f"from {settings.instance_from}")
    raise ConfigError(f"no vault in {settings.instance} ({where}). Create one with "
                      "`workbench init`, or point at an existing one with "
                      "WORKBENCH_INSTANCE=DIR or `workbench config set instance DIR`")


def _private_sqlite_file(url: str) -> None:
    """Create a SQLite database file 0600 (SQLite would follow the umask, often 0644), and
    refuse one that others may read; its WAL and shared-memory files take its mode."""
    try:
        database = make_url(url).database if url.startswith("sqlite") else None
    except Exception:  # a malformed URL: make_engine below says which setting
        return
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    keyring.check_private(path, "database file")


class Vault:
    """Opened once per process; ``open`` migrates the schema and checks the master key."""

    def __init__(self, settings: Settings):
        self.settings = settings
        settings.instance.mkdir(parents=True, exist_ok=True, mode=0o700)
        _private_sqlite_file(settings.database_url)
        try:
            self.engine = make_engine(settings.database_url)
            # the hot path's own pool (token checks, resolve): see workbench.statements
            self.autocommit_engine = make_engine(settings.database_url, autocommit=True)
            self.hot_pool = statements.Pool(self.autocommit_engine)
        except Exception as e:  # bad URL or missing driver: say which setting
            raise ConfigError(f"WORKBENCH_DATABASE_URL is not usable: {type(e).__name__}") from None
        self.factory: sessionmaker[Session] = make_sessionmaker(self.engine)
        self._barrier: Barrier | None = None

    def migrate(self) -> None:
        from alembic import command
        with self.engine.begin() as conn, warnings.catch_warnings():
            # SQLite's batch table copies reflect the table and cannot see the expression index
            # ix_credentials_name_ci; 0016 recreates it, so the warning is noise at `init`
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
            cfg = alembic_config(self.settings.database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def open(self, *, migrate: bool = True, create: bool = True) -> "Vault":
        """``create=False``: never generate a master key (every command but ``init``)."""
        if migrate:
            self.migrate()
        self._barrier = keyring.load_barrier(self.settings, self.factory, create=create)
        with self.factory.begin() as s:
            ensure_default(s)
        return self

    @property
    def barrier(self) -> Barrier:
        if self._barrier is None:
            raise ConfigError("the vault is not open")
        return self._barrier

    def close(self) -> None:
        """Close every pooled connection (both engines, and the hot path's)."""
        self.engine.dispose()
        self.hot_pool.dispose()
        self.autocommit_engine.dispose()

    def reload_keys(self) -> None:
        self._barrier = keyring.load_barrier(self.settings, self.factory, create=False)
