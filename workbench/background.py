"""Pipeline-source syncs in the background: a slow remote or a large first sync never holds a
page or an API request open.  The sync itself is ``sources.sync_source``, unchanged: it
records its result (commit, time, error) on the source and in the audit log."""
from __future__ import annotations

import logging
import threading
import time

from . import sources, sourcelock
from .audit import Actor
from .errors import Conflict, WorkbenchError

log = logging.getLogger(__name__)
STARTED_WITHIN = 5.0  # seconds to wait for the new sync to hold the source's lock


def start_sync(vault, actor: Actor, source_id: int) -> bool:
    """Start syncing a source in a thread of this process; True once it holds the source's lock
    (so ``sourcelock.held`` reports it everywhere), False if it already finished.  Permission
    is checked here, before anything starts; Conflict if a sync of it is running already."""
    src = sources.sync_target(vault.factory, actor, source_id)
    if sourcelock.held(sourcelock.root(vault.settings), src.id):
        raise Conflict(f"a sync of source {src.name!r} is already running", source=src.name)
    locked, done = threading.Event(), threading.Event()

    def run() -> None:
        try:
            sources.sync_source(vault.factory, vault, actor, src.id, locked=locked.set)
        except WorkbenchError:
            pass  # already kept on the source (its error) and in the audit log
        except Exception as e:  # the class only: a driver's message may quote parameters
            log.error("background sync of source %s failed: %s", src.id, type(e).__name__)
        finally:
            done.set()

    threading.Thread(target=run, name=f"sync-source-{src.id}", daemon=True).start()
    deadline = time.monotonic() + STARTED_WITHIN  # (another process may hold the lock a while)
    while not (locked.is_set() or done.is_set()) and time.monotonic() < deadline:
        locked.wait(0.05)
    return not done.is_set()
