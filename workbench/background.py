"""Starting work in the background: a pipeline-source sync is a job of the job engine
(``jobqueue``), so a slow remote or a large first sync never holds a page or an API request
open, and it runs once per source however many app instances asked.  The sync itself is
``sources.sync_source``, unchanged: it records its result (commit, time, error) on the source
and in the audit log."""
from __future__ import annotations

from dataclasses import asdict

from . import sources, sourcelock
from .audit import Actor
from .errors import Conflict
from .jobqueue import SOURCE_LOCK, SYNC, for_vault


def start_sync(vault, actor: Actor, source_id: int, *, behind: bool = False) -> bool:
    """Queue a sync of the source.  Permission is checked here; Conflict if one is running or
    queued, unless ``behind`` (a push): then it queues one more after a running one, and
    returns False if one was waiting already (that one will fetch the pushed commit)."""
    src = sources.sync_target(vault.factory, actor, source_id)
    if not behind and src.id in sourcelock.busy(vault):
        raise Conflict(f"a sync of source {src.name!r} is already running", source=src.name)
    key = f"{SOURCE_LOCK}{src.id}"
    return for_vault(vault).defer(SYNC, lock=key, queueing_lock=key, source_id=src.id,
                                  actor=asdict(actor))
