"""Orchestrates a run: plan, execute each step, mask every byte, record the outcome."""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from ..db import transaction, utcnow
from ..errors import WorkbenchError
from . import executor as executors
from .parse import Pipeline
from .plan import plan, plan_step
from .records import MAX_LOG_CHARS, store_run
from .resolve import Resolver
from .step import ResolvedStep, StepResult

Echo = Callable[[bytes], None]


class Recorder(ABC):
    """Where a finished run goes: the database, or the server's ``/api/v1/runs``."""

    @abstractmethod
    def record(self, record: dict) -> None: ...


class DbRecorder(Recorder):
    def __init__(self, session_factory, workspace: str):
        self.session_factory = session_factory
        self.workspace = workspace

    def record(self, record: dict) -> None:
        with transaction(self.session_factory) as session:
            store_run(session, self.workspace, record)


@dataclass
class RunResult:
    id: str
    status: str  # success | failed | cancelled | error
    steps: list[StepResult] = field(default_factory=list)
    record: dict = field(default_factory=dict, repr=False)

    @property
    def exit_code(self) -> int:
        return {"success": 0, "cancelled": 130}.get(self.status, 1)


class Cancellation:
    """Set by a signal (or a caller's thread); cancels the step that is running."""

    def __init__(self):
        self.event = threading.Event()
        self.current: executors.Executor | None = None

    def __call__(self, *_signal) -> None:
        self.event.set()
        current = self.current
        if current is not None:
            current.cancel()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()


def run_pipeline(pipeline: Pipeline, resolver: Resolver, *, recorder: Recorder | None = None,
                 scratch: str | None = None, echo: Echo | None = None,
                 instance_dir: str | None = None, workdir: str | None = None,
                 notify: Callable[[str], None] | None = None, trigger: dict | None = None,
                 source: str | None = None, cancel: Cancellation | None = None,
                 run_id: str | None = None) -> RunResult:
    """Run every step in order, stopping at the first failure; always clean up and record.
    A resolver with ``per_step`` (a run opened on the server) is asked for each step's
    credentials just before that step runs, and never for a step that does not run."""
    from . import secretdir

    run_id = run_id or str(uuid.uuid4())
    lazy = getattr(resolver, "per_step", False)
    echo = echo or (lambda _b: None)
    notify = notify or (lambda _s: None)
    cancel = cancel or Cancellation()
    scratch = scratch or secretdir.scratch_root(instance_dir)
    secretdir.sweep(scratch)  # leftovers of runs that were killed outright
    record = {"id": run_id, "pipeline": pipeline.name, "file": pipeline.file, "source": source,
              "status": "running", "message": "", "started_at": utcnow().isoformat(),
              "steps": [], "uses": [], **(trigger or {})}
    wd = workdir or os.path.join(tempfile.gettempdir(), f"wb-run-{run_id}")
    try:
        steps = None if lazy else plan(pipeline, resolver, context={"run": run_id}, workdir=wd)
    except WorkbenchError as exc:
        record.update(status="error", message=exc.message, finished_at=utcnow().isoformat())
        if recorder is not None:
            try:
                recorder.record(record)
            except WorkbenchError as rec_exc:  # the planning error is the one to report
                notify(f"could not record the run: {rec_exc.message}")
        raise
    results: list[StepResult] = []
    seen: tuple[bytes, ...] = ()  # lazily planned: the secrets of the steps so far
    added: list[bytes] = []  # values steps registered to mask: masked in every later step too
    with _signals(cancel), _run_dir(None if workdir else wd):
        for i, step in enumerate(pipeline.steps):
            if cancel.cancelled or (results and results[-1].status != "success"):
                results.append(StepResult(step.name, "skipped", None, 0.0))
                record["steps"].append(_step_dict(results[-1], ""))
                notify(f"step {step.name}: skipped")
                continue
            try:
                rs = plan_step(pipeline, step, resolver, context={"run": run_id}, workdir=wd,
                               seen=seen) if lazy else steps[i]
            except WorkbenchError as exc:  # refused or unknown: this step cannot run
                results.append(StepResult(step.name, "error", None, 0.0, exc.message))
                record["steps"].append(_step_dict(results[-1], ""))
                notify(f"step {step.name}: error: {exc.message}")
                continue
            seen = rs.secrets
            notify(f"step {rs.name}: running")
            used_at = utcnow().isoformat()
            result, log = execute_step(rs, scratch=scratch, echo=echo, cancel=cancel,
                                       detectors=pipeline.masking.enabled_detectors(),
                                       added=added)
            results.append(result)
            record["steps"].append(_step_dict(result, log))
            record["uses"].extend({"step": rs.name, "credential_id": cid, "version": ver,
                                   "used_at": used_at} for cid, ver in rs.uses)
            code = "" if result.exit_code is None else f" (exit {result.exit_code})"
            notify(f"step {rs.name}: {result.status}{code} in {result.duration:.1f}s"
                   + (f": {result.message}" if result.message else ""))
    status = _run_status(results, cancel)
    record.update(status=status, finished_at=utcnow().isoformat())
    if recorder is not None:
        recorder.record(record)
    return RunResult(id=run_id, status=status, steps=results, record=record)


def execute_step(rs: ResolvedStep, *, scratch: str, echo: Echo, cancel: Cancellation,
                 detectors=None, added: list[bytes] | None = None) -> tuple[StepResult, str]:
    """prepare → run → cleanup (always) in a worker thread, so signals can cancel it."""
    from .maskcommands import MASK_ENV, MaskCommands
    from .masking import Masker
    from .secretdir import SecretDir

    added = [] if added is None else added
    mask_dir = SecretDir.create(scratch)  # the step appends values to mask to a file in it
    mask_file = mask_dir.write_bytes("mask", b"")
    rs = dataclasses.replace(rs, env={**rs.env, MASK_ENV: mask_file})
    masker = MaskCommands(Masker([*rs.secrets, *added], detectors=detectors),
                          mask_file=mask_file, on_add=added.append)
    tail = _Tail(MAX_LOG_CHARS)
    lock = threading.Lock()
    outcome: list[StepResult] = []

    def output(chunk: bytes) -> None:
        with lock:  # executors may call from a reader thread per stream
            masked = masker.feed(chunk)
            if masked:
                tail.add(masked)
                echo(masked)

    def work() -> None:
        start = time.monotonic()
        ex = None
        try:
            ex = executors.get(rs.executor)(rs, scratch=scratch)
            cancel.current = ex
            if cancel.cancelled:
                raise _Cancelled
            ex.prepare()
            if cancel.cancelled:
                raise _Cancelled
            outcome.append(ex.run(output))
        except _Cancelled:
            outcome.append(StepResult(rs.name, "cancelled", None, time.monotonic() - start))
        except WorkbenchError as exc:  # messages name IDs and files, never values
            outcome.append(StepResult(rs.name, "error", None, time.monotonic() - start,
                                      exc.message))
        except Exception as exc:  # noqa: BLE001 - foreign text may quote secrets: type only
            outcome.append(StepResult(rs.name, "error", None, time.monotonic() - start,
                                      f"internal error ({type(exc).__name__})"))
        finally:
            cancel.current = None
            if ex is not None:
                try:
                    ex.cleanup()
                except Exception as exc:  # noqa: BLE001 - cleanup must not hide the result
                    outcome.append(StepResult(rs.name, "error", None, time.monotonic() - start,
                                              f"cleanup failed ({type(exc).__name__})"))

    worker = threading.Thread(target=work, name=f"step-{rs.name}", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)  # short waits keep the main thread responsive to signals
        with lock:
            rest = masker.flush()
            if rest:
                tail.add(rest)
                echo(rest)
    finally:
        mask_dir.remove()
    result = outcome[0] if outcome else StepResult(rs.name, "error", None, 0.0, "no result")
    if len(outcome) > 1 and result.status == "success":
        result = outcome[-1]
    if cancel.cancelled and result.status in ("success", "failed"):
        result = StepResult(rs.name, "cancelled", result.exit_code, result.duration)
    return result, tail.text()


class _Cancelled(Exception):
    pass


class _Tail:
    """The last ``limit`` bytes of the (already masked) output."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = bytearray()
        self.dropped = False

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * self.limit:
            del self.buf[:-self.limit]
            self.dropped = True

    def text(self) -> str:
        data = bytes(self.buf[-self.limit:])
        head = "[… earlier output dropped …]\n" if self.dropped or len(self.buf) > self.limit else ""
        return head + data.decode("utf-8", "replace")


@contextmanager
def _run_dir(path: str | None):
    """Without a workdir the steps share a private one (``path``), removed afterwards."""
    if path:
        os.mkdir(path, 0o700)
    try:
        yield
    finally:
        if path:
            shutil.rmtree(path, ignore_errors=True)


class _signals:
    """SIGTERM/SIGINT cancel the run instead of killing the runner mid-step (main thread only)."""

    def __init__(self, cancel: Cancellation):
        self.cancel = cancel
        self.saved: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.saved[sig] = signal.signal(sig, self.cancel)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _step_dict(result: StepResult, log: str) -> dict:
    return {"name": result.name, "status": result.status, "exit_code": result.exit_code,
            "duration": round(result.duration, 3), "message": result.message, "log": log}


def _run_status(results: list[StepResult], cancel: Cancellation) -> str:
    statuses = {r.status for r in results}
    if cancel.cancelled or "cancelled" in statuses:
        return "cancelled"
    if "error" in statuses:
        return "error"
    if statuses - {"success"}:
        return "failed"
    return "success"

