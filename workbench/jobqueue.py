"""The job engine.  On PostgreSQL: procrastinate (jobs, locks, queueing locks, retries and
periodic tasks, all in PostgreSQL tables), run by ``workbench worker`` processes on any host.
On SQLite: the same job functions in threads of the process that defers them, and a periodic
tick in one process per instance folder; no extra service.

A job is a function ``fn(vault, **arguments)`` registered with ``task`` (see ``jobs``)."""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
TASKS: dict[str, Callable[..., Any]] = {}
TICK = 60  # seconds between periodic ticks (due syncs, checks, webhook retries)
JOB_THREADS = 4  # jobs at once in one process on the embedded default (SQLite)
SYNC = "sync_source"
SOURCE_LOCK = "source:"  # + source ID: the lock and queueing lock of its sync jobs


def task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a job function under its name."""
    TASKS[fn.__name__] = fn
    return fn


def for_vault(vault) -> "PgQueue | InlineQueue":
    """The vault's job queue (one per vault and process)."""
    q = vault.__dict__.get("_jobqueue")
    if q is None or q.pid != os.getpid():  # a forked server worker gets its own
        from . import jobs  # noqa: F401  (registers the job functions)
        q = (PgQueue if vault.engine.dialect.name == "postgresql" else InlineQueue)(vault)
        vault.__dict__["_jobqueue"] = q
    return q


def started(vault) -> "PgQueue | InlineQueue | None":
    """The vault's queue if it has one already (a forked server worker gets its own), else
    None: then the next tick sends what would have been queued."""
    if vault is None or vault.__dict__.get("_jobqueue") is None:
        return None
    return for_vault(vault)


def _log_failure(name: str, e: Exception) -> None:
    # the class only: a driver's message may quote parameters
    log.error("job %s failed: %s", name, type(e).__name__)


def conninfo(url: str) -> str:
    """A libpq connection string from the SQLAlchemy URL (options such as search_path kept)."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


class PgQueue:
    """procrastinate on the vault's PostgreSQL database."""

    def __init__(self, vault):
        self.vault, self.pid = vault, os.getpid()
        self.app = self._build()  # deferring, synchronously, from any thread
        self._opened = False
        self._mutex = threading.Lock()

    def _build(self):
        """A procrastinate app with every job; the worker runs one of its own (an app's
        connector is either synchronous or asynchronous once open)."""
        import procrastinate
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=conninfo(self.vault.settings.database_url)))
        for name, fn in TASKS.items():
            app.task(name=name, pass_context=False)(_bind(self.vault, fn))
        app.periodic(cron=f"*/{max(1, TICK // 60)} * * * *", periodic_id="tick")(
            app.tasks["tick"])

        async def retry_stalled(timestamp: int | None = None) -> None:
            """Jobs of a worker that stopped beating (killed mid-job) go back in the queue."""
            for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED):
                await app.job_manager.retry_job(job)
        app.periodic(cron="* * * * * */5", periodic_id="stalled")(
            app.task(name="retry_stalled", pass_context=False)(retry_stalled))
        return app

    def _open(self):
        with self._mutex:
            if not self._opened:
                self.app.open()
                self._opened = True
        return self.app

    def defer(self, name: str, *, lock: str | None = None, queueing_lock: str | None = None,
              delay: float = 0, **args) -> bool:
        """Queue a job; False if one with the same queueing lock is already waiting."""
        from procrastinate.exceptions import AlreadyEnqueued
        opts: dict[str, Any] = {"lock": lock, "queueing_lock": queueing_lock}
        if delay:
            opts["schedule_in"] = {"seconds": int(delay)}
        try:
            self._open().configure_task(name, **opts).defer(**args)
        except AlreadyEnqueued:
            return False
        return True

    def pending_sources(self) -> set[int]:
        """Sources with a sync job waiting or running."""
        with self.vault.engine.connect() as conn:
            locks = conn.execute(text(
                "SELECT lock FROM procrastinate_jobs WHERE task_name = :t "
                "AND status IN ('todo', 'doing')"), {"t": SYNC}).scalars()
            return {int(x[len(SOURCE_LOCK):]) for x in locks if x and x.startswith(SOURCE_LOCK)}

    def run_worker(self, *, concurrency: int = 4, name: str | None = None) -> None:
        """Run a worker until SIGTERM/SIGINT (then it finishes its jobs and stops)."""
        self._build().run_worker(concurrency=concurrency, name=name, delete_jobs="successful",
                                 update_heartbeat_interval=HEARTBEAT,
                                 stalled_worker_timeout=STALLED)

    @contextmanager
    def worker_thread(self, *, concurrency: int = 2) -> Iterator[None]:
        """A worker in a thread of this process while the block runs (``workbench serve
        --worker`` and the tests); it stops when the block ends."""
        loop = asyncio.new_event_loop()
        job = loop.create_task(self._work(concurrency))
        t = threading.Thread(target=loop.run_until_complete, args=(job,), daemon=True,
                             name="job-worker")
        t.start()
        try:
            yield
        finally:
            loop.call_soon_threadsafe(job.cancel)
            t.join(30)

    async def _work(self, concurrency: int) -> None:
        app = self._build()
        try:
            async with app.open_async():
                await app.run_worker_async(
                    concurrency=concurrency, install_signal_handlers=False,
                    delete_jobs="successful", update_heartbeat_interval=HEARTBEAT,
                    stalled_worker_timeout=STALLED)
        except asyncio.CancelledError:
            pass

    def close(self) -> None:
        if self._opened:
            self.app.close()
            self._opened = False


HEARTBEAT = 2.0  # seconds between a worker's heartbeats
STALLED = 10.0  # a worker silent this long is dead: its running jobs are queued again


def _bind(vault, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(**args):
        args.pop("timestamp", None)  # given to periodic jobs
        return fn(vault, **args)
    run.__name__ = fn.__name__
    run.__qualname__ = fn.__qualname__
    run.__module__ = fn.__module__
    return run


class InlineQueue:
    """The embedded default: each job in a thread of this process."""

    def __init__(self, vault):
        self.vault, self.pid = vault, os.getpid()
        self._queued: set[str] = set()
        self._running: set[str] = set()  # locks of the jobs running now
        self._locks: dict[str, threading.Lock] = {}
        self._mutex = threading.Lock()
        self._ticker: threading.Thread | None = None
        # A bounded pool, not a thread per job: a tick that queues a check of every credential
        # must not flood one server process with threads that starve its requests.
        self._pool = ThreadPoolExecutor(max_workers=JOB_THREADS, thread_name_prefix="job")

    def defer(self, name: str, *, lock: str | None = None, queueing_lock: str | None = None,
              delay: float = 0, **args) -> bool:
        with self._mutex:
            if queueing_lock in self._queued:
                return False
            if queueing_lock:
                self._queued.add(queueing_lock)
            guard = self._locks.setdefault(lock, threading.Lock()) if lock else None

        def run() -> None:
            with self._mutex:
                self._queued.discard(queueing_lock)
                if lock:
                    self._running.add(lock)
            try:
                if guard is None:
                    TASKS[name](self.vault, **args)
                else:
                    with guard:
                        TASKS[name](self.vault, **args)
            except Exception as e:  # noqa: BLE001 - a job's failure is its own (kept, audited)
                _log_failure(name, e)
            finally:
                with self._mutex:
                    self._running.discard(lock)

        if delay:
            t = threading.Timer(delay, self._pool.submit, (run,))
            t.name, t.daemon = f"job-{name}-timer", True
            t.start()
        else:
            self._pool.submit(run)
        return True

    def pending_sources(self) -> set[int]:
        with self._mutex:
            return {int(q[len(SOURCE_LOCK):]) for q in self._queued | self._running
                    if q and q.startswith(SOURCE_LOCK)}

    def start(self) -> None:
        """Run the periodic tick in this process, if no other process of the instance folder
        does (a ``flock`` held for the life of the process decides)."""
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick_loop, name="job-tick", daemon=True)
            self._ticker.start()

    def _tick_loop(self) -> None:
        path = self.vault.settings.instance / "scheduler.lock"
        fh = open(path, "w")
        stop = threading.Event()
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                stop.wait(TICK)  # another process ticks; take over if it exits
        while True:
            try:
                TASKS["tick"](self.vault)
            except Exception as e:  # noqa: BLE001 - the next tick tries again
                _log_failure("tick", e)
            stop.wait(TICK)

    def close(self) -> None:
        """Queue nothing more; jobs already running finish in their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
