"""Master keys: loading and checking them at start-up, creating the first one, rotation."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from . import crypto
from .config import Settings
from .crypto import Barrier
from .errors import ConfigError, CryptoError
from .models import Credential, CredentialVersion, KeyCheck, Workspace


def _write_secret_file(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (tmp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def check_private(path: Path, what: str) -> None:
    """Refuse a file that others may read (a copied key, a database opened to the group)."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(f"{what} {path} can be read by other users (mode "
                          f"{mode & 0o777:04o}); refusing to start. Fix: chmod 600 {path}")


def _read_key(path: Path) -> bytes:
    if path.is_dir():
        raise ConfigError(f"master key file {path} is a directory; it must be the key file "
                          "(move the directory away, or set WORKBENCH_MASTER_KEY_FILE)")
    try:
        key = crypto.decode_key(path.read_text())
    except CryptoError as e:
        raise ConfigError(f"master key file {path}: {e.message}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"master key file {path} cannot be read: "
                          f"{getattr(e, 'strerror', None) or type(e).__name__}") from None
    check_private(path, "master key file")
    return key


def next_path(settings: Settings) -> Path:
    return settings.key_path.with_name(settings.key_path.name + ".next")


def configured_keys(settings: Settings) -> tuple[bytes | None, bytes | None]:
    """(primary key, pending key of an unfinished rotation)."""
    if settings.master_key:
        try:
            primary = crypto.decode_key(settings.master_key)
        except CryptoError as e:
            raise ConfigError(f"WORKBENCH_MASTER_KEY: {e.message}") from None
    else:
        primary = _read_key(settings.key_path) if settings.key_path.exists() else None
    pending = next_path(settings)
    return primary, (_read_key(pending) if pending.exists() else None)


def load_barrier(settings: Settings, factory: sessionmaker[Session], *,
                 create: bool = True) -> Barrier:
    """Open the vault's keys or stop with a clear message; a key is created only for an empty
    vault, and never over an existing key file."""
    primary, pending = configured_keys(settings)
    with factory.begin() as s:
        checks = dict(s.execute(select(KeyCheck.term, KeyCheck.blob)).all())
        stored = s.scalar(select(func.count()).select_from(CredentialVersion)) or 0
        if not checks:
            if stored:
                raise ConfigError("the database holds encrypted credentials but no key checks; "
                                  "refusing to start (restore the key_checks table)")
            if primary is None:
                if not create:
                    raise ConfigError(f"no master key: set WORKBENCH_MASTER_KEY or create "
                                      f"{settings.key_path} (run `workbench init`)")
                primary = crypto.generate_key()
                _write_secret_file(settings.key_path, crypto.encode_key(primary))
            s.add(KeyCheck(term=1, blob=Barrier.make_check(primary, 1)))
            return Barrier({1: primary}, 1)
        if primary is None:
            raise ConfigError(
                f"no master key: the vault holds {stored} encrypted credential versions; set "
                f"WORKBENCH_MASTER_KEY or restore {settings.key_path}. Nothing was changed.")
        keys: dict[int, bytes] = {}
        for key in filter(None, (primary, pending)):
            for term, blob in checks.items():
                if Barrier.verify_check(key, blob):
                    keys[term] = key
        if primary not in keys.values():
            raise ConfigError("the master key does not match this vault (key check failed); "
                              "refusing to start. Nothing was changed.")
        used = set(s.scalars(select(CredentialVersion.key_term).distinct()))
        missing = sorted(used - set(keys))
        if missing:
            raise ConfigError(f"credentials are sealed under master-key term(s) {missing} for "
                              "which no key is configured; refusing to start")
        return Barrier(keys, max(keys))


@dataclass
class RotationReport:
    term: int
    rewrapped: int
    resumed: bool


def rotate(settings: Settings, factory: sessionmaker[Session], batch: int = 5000
           ) -> RotationReport:
    """Re-wrap every data key under a new master key.  Safe to kill at any point and re-run:
    the new key is written (``master.key.next``) before any row changes, rows move in committed
    batches, and the key file is replaced only when no row needs the old key."""
    if settings.master_key:
        raise ConfigError("keys rotate manages the key file; unset WORKBENCH_MASTER_KEY and use "
                          "WORKBENCH_MASTER_KEY_FILE to rotate")
    pending_path = next_path(settings)
    resumed = pending_path.exists()
    if not resumed:
        load_barrier(settings, factory, create=False)  # refuse to start rotating a broken vault
        _write_secret_file(pending_path, crypto.encode_key(crypto.generate_key()))
    new_key = _read_key(pending_path)
    with factory.begin() as s:
        checks = dict(s.execute(select(KeyCheck.term, KeyCheck.blob)).all())
        term = next((t for t, b in checks.items() if Barrier.verify_check(new_key, b)), None)
        if term is None:
            term = max(checks, default=0) + 1
            s.add(KeyCheck(term=term, blob=Barrier.make_check(new_key, term)))
    barrier = load_barrier(settings, factory, create=False)
    v, c, w = CredentialVersion.__table__.c, Credential.__table__.c, Workspace.__table__.c
    # Walk the rows in primary-key order (each batch starts where the last one ended instead of
    # rescanning moved rows) and write them back with one executemany per batch.
    pick = (select(v.pk, v.wrapped_key, v.version, v.type, c.cred_id, w.name)
            .select_from(CredentialVersion.__table__
                         .join(Credential.__table__, c.pk == v.credential_pk)
                         .join(Workspace.__table__, w.id == c.workspace_id))
            .where(v.key_term != term, v.pk > bindparam("after")).order_by(v.pk).limit(batch))
    put = (update(CredentialVersion.__table__).where(v.pk == bindparam("row_pk"))
           .values(key_term=term, wrapped_key=bindparam("new_key")))
    done, after = 0, 0
    while True:
        with factory.begin() as s:
            conn = s.connection()
            rows = conn.execute(pick, {"after": after}).all()
            if not rows:
                if after == 0:
                    break  # a whole pass found no row under an older key
                after = 0  # once more from the start, for rows written during this pass
                continue
            conn.execute(put, [
                {"row_pk": pk, "new_key": barrier.rewrap(wk, crypto.binding(ws, cid, ver, typ),
                                                         term)}
                for pk, wk, ver, typ, cid, ws in rows])
            done += len(rows)
            after = rows[-1][0]
    os.replace(pending_path, settings.key_path)
    with factory.begin() as s:
        for old in s.scalars(select(KeyCheck).where(KeyCheck.term != term)):
            s.delete(old)
    return RotationReport(term=term, rewrapped=done, resumed=resumed)
