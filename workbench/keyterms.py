"""Key terms while the vault serves: every process follows a rotation without a restart.

The ``key_checks`` rows are the source of truth: one per master-key term, the highest being the
term new data is sealed under.  A process loads a term's key from the key files
(``keyring.key_files``) when it first meets the term: in a row it must open (a resolve of a row a
rotation re-wrapped meanwhile), or as the newest term when it is about to seal.  Resolves cost
nothing extra until then; writes read the newest term in their own transaction, under a lock a
rotation takes before it adds a term, so no write seals under a term being retired.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from .crypto import Barrier
from .errors import ConfigError, CryptoError
from .models import KeyCheck

# PostgreSQL advisory lock (an arbitrary 64-bit number): writes that seal hold it shared, a
# rotation takes it exclusively to add a term and to retire the old ones.
LOCK_KEY = 0x776B6B6579746D73
RETRY_SECONDS = 1.0  # a term still unknown after a reload is looked up again at most this often


class LiveBarrier(Barrier):
    """A barrier that loads the keys of terms it does not know yet.  ``reload`` gives
    (term → key for every term the key checks and key files agree on, the newest term)."""

    def __init__(self, keys: dict[int, bytes], active: int,
                 reload: Callable[[], tuple[dict[int, bytes], int]]):
        super().__init__(keys, active)
        self._reload = reload
        self._lock = threading.Lock()
        self._missed = -RETRY_SECONDS  # monotonic time of the last reload that found nothing

    def _key(self, term: int) -> bytes:
        key = self._keys.get(term)
        if key is None:
            self.refresh(want=term)
            key = self._keys.get(term)
        if key is None:
            raise CryptoError(f"no master key for term {term} (no key file of this vault holds "
                              "it)")
        return key

    def refresh(self, want: int | None = None) -> None:
        """Read the key checks and key files again (once, however many threads ask)."""
        with self._lock:
            if want is not None and (want in self._keys or
                                     time.monotonic() - self._missed < RETRY_SECONDS):
                return
            keys, newest = self._reload()
            # Terms are only ever added here: a reader may still hold a row of an older term.
            self._keys = {**self._keys, **keys}
            if newest in self._keys:
                self.active = newest
            if want is not None and want not in self._keys:
                self._missed = time.monotonic()


def lock(s: Session, *, exclusive: bool) -> None:
    """Hold the key-term lock until ``s``'s transaction ends.  PostgreSQL: an advisory lock.
    SQLite: a write statement, which takes the database's single write lock now (a plain read
    would let a rotation commit between this transaction's read and its insert)."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(text(f"SELECT {fn}(:key)"), {"key": LOCK_KEY})
    else:
        conn.execute(update(KeyCheck).where(KeyCheck.term < 0).values(term=KeyCheck.term))


def newest_term(s: Session) -> int | None:
    return s.scalar(select(func.max(KeyCheck.term)))


def writable(s: Session, barrier: Barrier) -> Barrier:
    """Call before sealing in a write transaction: the barrier then seals under the vault's
    newest term, and a rotation cannot add a newer one before this transaction ends."""
    lock(s, exclusive=False)
    newest = newest_term(s)
    if newest is None or newest == barrier.active:
        return barrier
    if isinstance(barrier, LiveBarrier):
        barrier.refresh()
    if barrier.active != newest:
        raise ConfigError(f"the vault seals under master-key term {newest}, whose key this "
                          "process cannot find: copy the new key file next to the key file "
                          "(see docs/security.md, Rotation); nothing was written")
    return barrier
