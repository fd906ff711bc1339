"""The opened vault: settings, database, sessions and the barrier, as one object."""
from __future__ import annotations

from pathlib import Path

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


class Vault:
    """Opened once per process; ``open`` migrates the schema and checks the master key."""

    def __init__(self, settings: Settings):
        self.settings = settings
        settings.instance.mkdir(parents=True, exist_ok=True, mode=0o700)
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
        with self.engine.begin() as conn:
            cfg = alembic_config(self.settings.database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def open(self, *, migrate: bool = True) -> "Vault":
        if migrate:
            self.migrate()
        self._barrier = keyring.load_barrier(self.settings, self.factory)
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
