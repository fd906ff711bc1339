"""The per-source lock: one sync (or removal) of a pipeline source at a time, across processes.

A ``flock`` on ``<instance>/sources/<id>.lock``: the kernel drops it when its holder exits, so a
killed server never leaves a source locked, and whether a sync is running is simply whether
the lock is held."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def root(settings) -> Path:
    """Where the clones and their locks live."""
    return Path(settings.instance) / "sources"


@contextmanager
def hold(where: Path, source_id: int) -> Iterator[None]:
    """Wait for the source's lock and hold it."""
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(where / f"{source_id}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def held(where: Path, source_id: int) -> bool:
    """Whether some process holds the source's lock now (a sync or removal is running)."""
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


def busy(where: Path) -> set[int]:
    """The sources whose lock is held now.  Ask before reading what a sync writes: a source
    not busy then shows its finished sync in every read that follows."""
    return {int(p.stem) for p in where.glob("*.lock") if p.stem.isdigit()
            and held(where, int(p.stem))}
