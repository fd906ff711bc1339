"""The per-source lock: one sync (or removal) of a pipeline source at a time, across processes
and, on PostgreSQL, across app instances and workers.

On PostgreSQL it is a session-level advisory lock on a connection of its own; on SQLite (one
host by definition) a ``flock`` on ``<instance>/sources/<id>.lock``.  Both are dropped when
their holder dies (the connection closes, the process exits), so a killed server or worker
never leaves a source locked, and whether a sync is running is simply whether the lock is
held.  Syncs queued in the job engine count as running too (``busy``)."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import text

# advisory-lock keys: (a number per schema, the source ID), so that vaults in two schemas of
# one database never block each other
_KEY = "hashtext(current_schema() || '/workbench-source') & 2147483647"


def root(settings) -> Path:
    """Where the clones (and, on SQLite, their locks) live."""
    return Path(settings.instance) / "sources"


def _pg(vault) -> bool:
    return vault.engine.dialect.name == "postgresql"


@contextmanager
def hold(vault, source_id: int) -> Iterator[None]:
    """Wait for the source's lock and hold it."""
    where = root(vault.settings)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)  # the clones live there too
    if _pg(vault):
        with vault.autocommit_engine.connect() as conn:
            conn.execute(text(f"SELECT pg_advisory_lock({_KEY}, :id)"), {"id": source_id})
            try:
                yield
            finally:
                conn.execute(text(f"SELECT pg_advisory_unlock({_KEY}, :id)"),
                             {"id": source_id})
        return
    with open(where / f"{source_id}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _held_file(where: Path, source_id: int) -> bool:
    try:
        fd = os.open(where / f"{source_id}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        # a shared probe: two probes never see each other, a holder of LOCK_EX blocks it
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the probe's lock
    return False


def held(vault) -> set[int]:
    """The sources whose lock some process holds now."""
    if _pg(vault):
        with vault.autocommit_engine.connect() as conn:
            return set(conn.execute(text(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
                f"AND objsubid = 2 AND classid = ({_KEY})::oid AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalars())
    where = root(vault.settings)
    return {int(p.stem) for p in where.glob("*.lock") if p.stem.isdigit()
            and _held_file(where, int(p.stem))}


def busy(vault) -> set[int]:
    """The sources being synced now or queued for a sync.  Ask before reading what a sync
    writes: a source not busy then shows its finished sync in every read that follows."""
    from . import jobqueue
    return held(vault) | jobqueue.for_vault(vault).pending_sources()
