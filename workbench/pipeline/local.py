"""The ``local`` executor: runs a step's script with /bin/sh on the runner's own machine."""
from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import threading
import time

from ..errors import ExecutionError, ValidationError
from .executor import Executor, Output, register
from .secretdir import SecretDir
from .step import StepResult

PR_SET_PDEATHSIG = 1
CHUNK = 65536
# Runs beside the step in its own session: when the runner dies (even by SIGKILL) the kernel
# closes the runner's end of its stdin and it kills the step's whole process group; the
# parent-death signal alone only reaches the step's first process, not its children.
WATCHER = 'read _; kill -s KILL -- "-$0"'


def _die_with_parent():
    """A preexec_fn: the child gets SIGKILL when the runner thread that started it dies."""
    # looked up before the fork, so the child runs as little Python as possible
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # the C library is already loaded
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


def _killpg(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _check_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            raise ExecutionError(f"invalid environment variable name {key[:64]!r}")
        if "\0" in value:
            raise ExecutionError(f"environment variable {key} contains a NUL byte")


@register
class LocalExecutor(Executor):
    """Runs ``/bin/sh -c step.run`` in a new session with exactly the step's environment."""

    name = "local"
    kill_grace = 2.0   # seconds between SIGTERM and SIGKILL on timeout or cancel
    drain_limit = 2.0  # after SIGKILL, how long a detached process may keep our pipe open

    def __init__(self, step, *, scratch):
        super().__init__(step, scratch=scratch)
        self._dir: SecretDir | None = None
        self._file_env: dict[str, str] = {}
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None  # only while its leader is unreaped, so it cannot be reused
        self._watcher: subprocess.Popen | None = None
        self._guard: int | None = None
        self._cancelled = threading.Event()
        self._wake: tuple[int, int] | None = None
        self._lock = threading.RLock()  # cancel() may come from a signal handler

    def prepare(self) -> None:
        """Create the private dir and write the step's files into it."""
        _check_env(self.step.env)
        self._dir = SecretDir.create(self.scratch)
        for spec in self.step.files:
            try:
                self._file_env[spec.env] = self._dir.write(spec)
            except ValidationError as e:
                raise ExecutionError(f"file for {spec.env}: {e.message}") from None
        _check_env(self._file_env)

    def _workdir(self) -> str:
        if self.step.workdir:
            return self.step.workdir
        if self._dir is None:
            self._dir = SecretDir.create(self.scratch)
        # inside the private dir, so whatever the step leaves behind goes with it
        path = os.path.join(self._dir.path, "work")
        os.makedirs(path, 0o700, exist_ok=True)
        return path

    def run(self, output: Output) -> StepResult:
        """Run the script, stream its output, enforce the timeout and cancellation."""
        start = time.monotonic()
        with self._lock:
            if self._wake is None:
                self._wake = os.pipe()
                os.set_blocking(self._wake[1], False)  # many cancels must never block
        if self._cancelled.is_set():
            return StepResult(self.step.name, "cancelled", None, 0.0, "cancelled before start")
        env = {**self.step.env, **self._file_env}
        read_fd, write_fd = os.pipe()
        cwd = "?"
        try:
            cwd = self._workdir()
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", self.step.run], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=write_fd, stderr=write_fd, start_new_session=True, close_fds=True,
                preexec_fn=_die_with_parent())
        except (OSError, ValueError, ExecutionError) as e:
            os.close(read_fd)
            why = (f"{e.strerror} (working directory {cwd})" if isinstance(e, OSError)
                   else e.message if isinstance(e, ExecutionError)
                   else "the script contains a NUL byte")
            return StepResult(self.step.name, "error", None, time.monotonic() - start,
                              f"cannot start the step: {why}")
        finally:
            os.close(write_fd)
        self._pgid = self._proc.pid
        self._start_watcher(self._pgid)
        try:
            reason, message = self._pump(read_fd, output, start)
        finally:
            os.close(read_fd)
        code = self._reap()
        duration = time.monotonic() - start
        if reason in ("timeout", "cancelled"):
            return StepResult(self.step.name, reason, None, duration, message)
        if reason == "error":
            return StepResult(self.step.name, "error", code, duration, message)
        if code == 0:
            return StepResult(self.step.name, "success", 0, duration)
        if code is not None and code < 0:
            sig = signal.Signals(-code).name if -code in signal.valid_signals() else -code
            return StepResult(self.step.name, "failed", code, duration, f"killed by {sig}")
        return StepResult(self.step.name, "failed", code, duration, f"exit code {code}")

    def _pump(self, read_fd: int, output: Output, start: float) -> tuple[str | None, str]:
        """Feed output as it arrives until EOF and exit; returns (kill reason, message)."""
        proc = self._proc
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        try:
            pidfd = os.pidfd_open(proc.pid)
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None  # fall back to polling for the exit
        deadline = start + self.step.timeout if self.step.timeout else None
        reason, message = None, ""
        term_at = kill_at = None
        eof = exited = False
        try:
            while True:
                now = time.monotonic()
                if not exited and self._leader_exited():
                    exited = True
                if exited and kill_at is None:
                    # the step is over: its leftover background processes go with it
                    _killpg(self._pgid, signal.SIGKILL)
                    kill_at = now
                if reason is None and not exited:
                    if self._cancelled.is_set():
                        reason, message = "cancelled", "cancelled"
                    elif deadline is not None and now >= deadline:
                        reason = "timeout"
                        message = f"timed out after {self.step.timeout:g}s"
                    if reason:
                        _killpg(self._pgid, signal.SIGTERM)
                        term_at = now
                if term_at is not None and kill_at is None and now - term_at >= self.kill_grace:
                    _killpg(self._pgid, signal.SIGKILL)
                    kill_at = now
                if eof and exited:
                    break
                if kill_at is not None and now - kill_at >= self.drain_limit:
                    break  # a process that left our group still holds the pipe open
                waits = [t - now for t in (deadline if reason is None else None,
                                           term_at + self.kill_grace if term_at else None,
                                           kill_at + self.drain_limit if kill_at else None)
                         if t is not None]
                if pidfd is None:
                    waits.append(0.05)
                timeout = max(0.0, min(waits)) if waits else None
                for fd, _ in poller.poll(None if timeout is None else timeout * 1000 + 1):
                    if fd == read_fd:
                        chunk = os.read(read_fd, CHUNK)
                        if not chunk:
                            eof = True
                            poller.unregister(read_fd)
                            continue
                        try:
                            output(chunk)
                        except Exception as e:  # noqa: BLE001 - its text may hold output bytes
                            _killpg(self._pgid, signal.SIGKILL)
                            return "error", f"output handler failed ({type(e).__name__})"
                    elif fd == pidfd:
                        poller.unregister(pidfd)
                        exited = True
                    else:
                        os.read(fd, 64)  # a cancel() wake-up; the flag is checked above
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return reason, message

    def _leader_exited(self) -> bool:
        """Whether the first process exited, without reaping it (that keeps its pgid ours)."""
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _reap(self) -> int | None:
        proc = self._proc
        # the leader is unreaped until wait() below, so the group id cannot belong to anyone else
        _killpg(self._pgid, signal.SIGKILL)
        self._pgid = None
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def _start_watcher(self, pgid: int) -> None:
        guard_r, guard_w = os.pipe()
        try:
            self._watcher = subprocess.Popen(
                ["/bin/sh", "-c", WATCHER, str(pgid)], stdin=guard_r, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={}, cwd="/", start_new_session=True)
            self._guard, guard_w = guard_w, None
        except OSError:
            pass  # the parent-death signal still covers the step's first process
        finally:
            os.close(guard_r)
            if guard_w is not None:
                os.close(guard_w)

    def cancel(self) -> None:
        """Ask a running step to stop (SIGTERM, then SIGKILL after ``kill_grace``)."""
        self._cancelled.set()
        with self._lock:
            if self._wake is not None:
                try:
                    os.write(self._wake[1], b"x")
                except OSError:
                    pass

    def cleanup(self) -> None:
        """Kill what is left of the step, stop the watcher, remove the secret dir; never raises."""
        steps = (self._cleanup_process, self._cleanup_watcher, self._cleanup_fds,
                 self._cleanup_dir)
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - cleanup must never raise
                pass

    def _cleanup_process(self) -> None:
        if self._proc is not None and self._pgid is not None:
            self._reap()

    def _cleanup_watcher(self) -> None:
        # kill it before closing its stdin, or it would signal a group id that may be reused
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.kill()
            watcher.wait()  # a shell blocked in read() dies on SIGKILL at once
        guard, self._guard = self._guard, None
        if guard is not None:
            os.close(guard)

    def _cleanup_fds(self) -> None:
        with self._lock:
            wake, self._wake = self._wake, None
        for fd in wake or ():
            os.close(fd)

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            self._dir.remove()
