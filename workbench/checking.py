"""Connectivity tests off the request workers: a small pool per process runs them, each under
one overall deadline, while the credential's status shows ``Checking…`` on every instance.

A test can wait for its target for up to ``DEADLINE`` seconds; run in a request worker, two of
them stopped a 2-worker server from answering anyone.  ``start`` marks the credential, hands the
test to the pool and returns at once; the pool thread stores the outcome.  ``run`` is the same
work for a caller that has its own thread (a job engine's worker)."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from . import access, audit, checks, status
from .audit import Actor
from .checks.deadline import DEADLINE
from .credentials import current_values, get_credential
from .errors import Busy, NotFound
from .vault import Vault

THREADS = 4  # tests running at once in one process
QUEUED = 8  # tests that may wait for a thread; more are refused


class _Pool:
    """A thread pool made in the process that uses it (a pool does not survive a fork), with
    a bounded queue."""

    def __init__(self):
        self._pid, self._lock = 0, threading.Lock()

    def _ready(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._exec = ThreadPoolExecutor(THREADS, thread_name_prefix="check")
                self._slots = threading.BoundedSemaphore(THREADS + QUEUED)
                self._pid = os.getpid()

    def reserve(self) -> None:
        self._ready()
        if not self._slots.acquire(blocking=False):
            raise Busy("too many connectivity tests are running; try again in a few seconds")

    def release(self) -> None:
        self._slots.release()

    def submit(self, fn, *args) -> Future:
        """Run ``fn`` on a slot taken by ``reserve``; the slot is given back when it ends."""
        future = self._exec.submit(fn, *args)
        future.add_done_callback(lambda _: self.release())
        return future


POOL = _Pool()


def start(vault: Vault, actor: Actor, workspace: str, cred_id: str,
          timeout: float = DEADLINE) -> Future | None:
    """Start a connectivity test of the credential on the pool; None if one is already
    running.  The credential shows ``Checking…`` until the test's outcome is stored."""
    with audit.unit(vault.factory) as s:
        access.require_on(s, actor, "editor", "credential.verify", workspace=workspace,
                          target=cred_id)
    POOL.reserve()
    try:
        with audit.unit(vault.factory) as s:
            c = get_credential(s, workspace, cred_id)
            if status.running_since(c) is not None:
                POOL.release()
                return None
            version, _ = current_values(s, vault.barrier, c)  # fails here if it cannot decrypt
            status.mark_running(c)
            number = version.version
    except BaseException:
        POOL.release()
        raise
    return POOL.submit(run, vault, actor, workspace, cred_id, number, timeout)


def run(vault: Vault, actor: Actor, workspace: str, cred_id: str, version: int,
        timeout: float = DEADLINE) -> None:
    """Test one version of a credential and store the outcome, unless the credential changed
    meanwhile (a new version starts with fresh conditions)."""
    with vault.factory() as s:
        c = get_credential(s, workspace, cred_id)
        _, values = current_values(s, vault.barrier, c, version)
        type_name = c.type
    outcome = checks.verify(type_name, values, timeout)
    try:
        with audit.unit(vault.factory) as s:
            c = get_credential(s, workspace, cred_id)
            if c.current_version == version and c.type == type_name:
                status.record_check(s, actor, c, values, outcome)
    except NotFound:
        pass  # deleted while it was being tested
