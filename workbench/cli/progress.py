"""Progress lines for long commands, from a watcher thread that reads the database, so the
work itself (a key rotation's batches) needs no hooks."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import func, select

from ..models import CredentialVersion, KeyCheck
from .output import note


@contextmanager
def watching(count: Callable[[], str | None], every: float = 2.0) -> Iterator[None]:
    """Print ``count()`` on stderr every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                line = count()
            except Exception:  # noqa: BLE001 - progress is best effort; the work reports errors
                continue
            if line:
                note(line)

    watcher = threading.Thread(target=loop, name="progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def rotation(engine) -> Callable[[], str | None]:
    """"re-wrapped X of Y data keys": rows under the newest key term (the rotation's target)."""
    def count() -> str | None:
        with engine.connect() as conn:
            term = conn.scalar(select(func.max(KeyCheck.term)))
            total = conn.scalar(select(func.count()).select_from(CredentialVersion)) or 0
            done = conn.scalar(select(func.count()).select_from(CredentialVersion)
                               .where(CredentialVersion.key_term == term)) or 0
        return f"keys rotate: {done} of {total} data keys under key term {term}" if total else None
    return count
