"""Master keys: loading and checking them at start-up, creating the first one, rotation."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from . import crypto, keyterms, sealed
from .config import Settings
from .crypto import Barrier
from .errors import ConfigError, CryptoError
from .keyterms import LiveBarrier
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


def kept_path(settings: Settings, term: int) -> Path:
    """Where rotation keeps the key of a term it retired."""
    return settings.key_path.with_name(f"{settings.key_path.name}.{term}")


def key_files(settings: Settings) -> list[Path]:
    """Every key file of this vault: the key file, the pending key of a rotation
    (``master.key.next``) and the kept keys of earlier terms (``master.key.<term>``)."""
    base = settings.key_path
    try:
        siblings = sorted(p for p in base.parent.glob(glob.escape(base.name) + ".*")
                          if not p.name.endswith(".tmp") and p.is_file())
    except OSError:
        siblings = []
    return ([base] if base.exists() else []) + siblings


def configured_keys(settings: Settings) -> tuple[bytes | None, list[tuple[Path, bytes]]]:
    """(the primary key: WORKBENCH_MASTER_KEY or the key file; the keys of the other key
    files).  Another file that holds no key is skipped: it cannot match any term anyway."""
    if settings.master_key:
        try:
            primary = crypto.decode_key(settings.master_key)
        except CryptoError as e:
            raise ConfigError(f"WORKBENCH_MASTER_KEY: {e.message}") from None
    else:
        primary = _read_key(settings.key_path) if settings.key_path.exists() else None
    others = []
    for path in key_files(settings):
        if path != settings.key_path:
            try:
                others.append((path, crypto.decode_key(path.read_text())))
            except (CryptoError, OSError, UnicodeDecodeError):
                continue
    return primary, others


def match_keys(checks: dict[int, bytes], keys: list[bytes]) -> dict[int, bytes]:
    """term → the key that opens that term's key check."""
    out: dict[int, bytes] = {}
    for key in keys:
        for term, blob in checks.items():
            if term not in out and Barrier.verify_check(key, blob):
                out[term] = key
    return out


def _reload(settings: Settings, factory: sessionmaker[Session]
            ) -> tuple[dict[int, bytes], int]:
    """A live barrier's reload: the keys of every term, and the newest term."""
    with factory() as s:
        checks = dict(s.execute(select(KeyCheck.term, KeyCheck.blob)).all())
    primary, others = configured_keys(settings)
    return match_keys(checks, [k for k in [primary, *(k for _, k in others)] if k]), \
        max(checks, default=0)


def load_barrier(settings: Settings, factory: sessionmaker[Session], *,
                 create: bool = True) -> LiveBarrier:
    """Open the vault's keys or stop with a clear message; a key is created only for an empty
    vault, and never over an existing key file.  The barrier follows later rotations."""
    primary, others = configured_keys(settings)
    reload = partial(_reload, settings, factory)
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
            return LiveBarrier({1: primary}, 1, reload)
        if primary is None:
            raise ConfigError(
                f"no master key: the vault holds {stored} encrypted credential versions; set "
                f"WORKBENCH_MASTER_KEY or restore {settings.key_path}. Nothing was changed.")
        keys = match_keys(checks, [primary, *(k for _, k in others)])
        # The key file may still hold a retired key on a host that got the new one as
        # master.key.next from another host's rotation: start if the newest term is there.
        if primary not in keys.values() and max(checks) not in keys:
            raise ConfigError("the master key does not match this vault (key check failed); "
                              "refusing to start. Nothing was changed.")
        used = set(s.scalars(select(CredentialVersion.key_term).distinct()))
        missing = sorted(used - set(keys))
        if missing:
            raise ConfigError(f"credentials are sealed under master-key term(s) {missing} for "
                              "which no key is configured; refusing to start")
        return LiveBarrier(keys, max(keys), reload)


@dataclass
class RotationReport:
    term: int
    rewrapped: int
    resumed: bool
    kept: dict[int, Path] = field(default_factory=dict)  # retired term → its kept key file


def prepare(settings: Settings, factory: sessionmaker[Session]) -> Path:
    """Write the pending key of a rotation (``master.key.next``) and stop, so that it can be
    copied next to the key file of every host before ``rotate`` puts it to use."""
    if settings.master_key:
        raise ConfigError("keys rotate manages the key file; unset WORKBENCH_MASTER_KEY and use "
                          "WORKBENCH_MASTER_KEY_FILE to rotate")
    path = next_path(settings)
    if not path.exists():
        load_barrier(settings, factory, create=False)  # refuse to start rotating a broken vault
        _write_secret_file(path, crypto.encode_key(crypto.generate_key()))
    return path


def rotate(settings: Settings, factory: sessionmaker[Session], batch: int = 5000
           ) -> RotationReport:
    """Re-wrap every data key under a new master key, while servers go on serving.  Safe to
    kill at any point and re-run: the new key is written (``master.key.next``) before its term
    exists, rows move in committed batches, and the key files change only when no row needs
    the old term; the old key stays in ``master.key.<term>``."""
    resumed = next_path(settings).exists()
    pending_path = prepare(settings, factory)
    new_key = _read_key(pending_path)
    with factory.begin() as s:
        # Exclusive: writes that read the newest term before this commits end first; every
        # later write seals under the new term (keyterms.writable).
        keyterms.lock(s, exclusive=True)
        checks = dict(s.execute(select(KeyCheck.term, KeyCheck.blob)).all())
        term = next((t for t, b in checks.items() if Barrier.verify_check(new_key, b)), None)
        if term is None:
            term = max(checks, default=0) + 1
            s.add(KeyCheck(term=term, blob=Barrier.make_check(new_key, term)))
    barrier = load_barrier(settings, factory, create=False)
    done = 0
    while True:
        done += _rewrap(factory, barrier, term, batch)
        with factory.begin() as s:
            keyterms.lock(s, exclusive=True)
            if s.scalar(select(func.count()).select_from(CredentialVersion)
                        .where(CredentialVersion.key_term != term)):
                continue  # written under an older term during the last pass: once more
            sealed.rewrap(s, barrier, term)  # the server secrets (session, hooks) move too
            kept = _keep_old_keys(settings, s, term)
            os.replace(pending_path, settings.key_path)
            s.execute(delete(KeyCheck).where(KeyCheck.term != term))
        return RotationReport(term=term, rewrapped=done, resumed=resumed, kept=kept)


def _rewrap(factory: sessionmaker[Session], barrier: Barrier, term: int, batch: int) -> int:
    """Re-wrap every row not under ``term``, in committed batches; the number re-wrapped."""
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
                return done
            conn.execute(put, [
                {"row_pk": pk, "new_key": barrier.rewrap(wk, crypto.binding(ws, cid, ver, typ),
                                                         term)}
                for pk, wk, ver, typ, cid, ws in rows])
            done += len(rows)
            after = rows[-1][0]


def _keep_old_keys(settings: Settings, s: Session, term: int) -> dict[int, Path]:
    """Copy the key file's key to ``master.key.<its term>`` before it is replaced, so a server
    that has not met the new term yet, or a restored backup, still finds it."""
    checks = dict(s.execute(select(KeyCheck.term, KeyCheck.blob)
                            .where(KeyCheck.term != term)).all())
    primary, _ = configured_keys(settings)
    kept = {}
    for old in match_keys(checks, [primary] if primary else []):
        path = kept_path(settings, old)
        _write_secret_file(path, crypto.encode_key(primary))
        kept[old] = path
    return kept


def usage(settings: Settings, factory: sessionmaker[Session]) -> list[dict]:
    """Each key file: the term its key opens (None: no term, so no row needs it) and the number
    of credential versions sealed under that term."""
    with factory() as s:
        checks = dict(s.execute(select(KeyCheck.term, KeyCheck.blob)).all())
        rows = dict(s.execute(select(CredentialVersion.key_term, func.count())
                              .group_by(CredentialVersion.key_term)).all())
    out = []
    for path in key_files(settings):
        try:
            terms = match_keys(checks, [crypto.decode_key(path.read_text())])
        except (CryptoError, OSError, UnicodeDecodeError):
            terms = {}
        term = next(iter(terms), None)
        out.append({"file": str(path), "term": term,
                    "versions": rows.get(term, 0) if term is not None else 0})
    return out
