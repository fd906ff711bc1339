"""The ``docker`` executor: a step in a container; secrets arrive by a read-only mount."""
from __future__ import annotations

import io
import os
import re
import secrets
import socket
import tarfile
import threading
import time

from ..errors import ExecutionError
from .dockerimage import ensure_image, scrub
from .executor import Executor, Output, register
from .maskcommands import MASK_ENV
from .secretdir import LOCK, SecretDir
from .step import StepResult

MOUNT = "/run/workbench"  # where the private secret dir appears inside the container
MASK_MOUNT = "/run/workbench-mask"  # the runner's dir holding the step's WORKBENCH_MASK file
WORKSPACE = "/workspace"
ENV_FILE, SCRIPT_FILE = "step-env.sh", "step-script.sh"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# the container's command never varies with the step, so `docker inspect` shows no secret;
# stderr joins stdout in one pipe, as with the local executor, so the order is the step's own
WRAPPER = (f"exec 2>&1; set -a; . {MOUNT}/{ENV_FILE}; set +a; "
           f"exec /bin/sh {MOUNT}/{SCRIPT_FILE}")
LABEL_STEP, LABEL_DIR, LABEL_HOST = "workbench.step", "workbench.secret-dir", "workbench.host"
KILL_GRACE = 10.0  # seconds to wait for the output stream to end after a kill


def sh_quote(value: str) -> str:
    """Single-quote ``value`` for POSIX sh: every byte literal, including newlines and ``$``."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def env_script(env: dict[str, str]) -> bytes:
    """An sh fragment assigning each variable; names are checked so they cannot inject code."""
    lines = []
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise ExecutionError(f"{name[:64]!r} is not a valid environment variable name")
        if "\x00" in value:
            raise ExecutionError(f"the value of {name} contains a NUL character")
        lines.append(f"{name}={sh_quote(value)}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def sweep_containers(client) -> list[str]:
    """Remove this host's step containers whose secret dir is gone (their runner died)."""
    removed = []
    try:
        found = client.api.containers(
            all=True, filters={"label": [f"{LABEL_HOST}={socket.gethostname()}"]})
    except Exception:  # noqa: BLE001 - a sweep is best effort
        return removed
    for c in found:
        path = (c.get("Labels") or {}).get(LABEL_DIR)
        if path and not os.path.exists(path):
            try:
                client.api.remove_container(c["Id"], force=True, v=True)
                removed.append(c["Names"][0].lstrip("/") if c.get("Names") else c["Id"])
            except Exception:  # noqa: BLE001
                pass
    return removed


def image_uid(api, container: str, user: str) -> int | None:
    """The uid the container will run as (``User`` of its config), or None if unknown."""
    name = user.split(":", 1)[0].strip()
    if name in ("", "root"):
        return 0
    if name.isdigit():
        return int(name)
    try:  # a name: look it up in the image's own /etc/passwd
        stream, _ = api.get_archive(container, "/etc/passwd")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            text = tar.extractfile(member).read().decode("utf-8", "replace") if member else ""
    except Exception:  # noqa: BLE001 - no passwd file, or not a regular file
        return None
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[0] == name and parts[2].isdigit():
            return int(parts[2])
    return None


@register
class DockerExecutor(Executor):
    """Runs ``step.run`` with ``/bin/sh`` in ``step.image``; env and files via a 0700 mount."""

    name = "docker"

    def __init__(self, step, *, scratch):
        super().__init__(step, scratch=scratch)
        self.client = self.streams = None
        self.secret_dir: SecretDir | None = None
        self.container_id: str | None = None
        self.container_name = f"wb-{re.sub(r'[^a-zA-Z0-9_.-]', '-', step.name)[:40]}-" \
                              f"{secrets.token_hex(6)}"
        self._cancelled = threading.Event()
        self._wake = threading.Event()  # cancel() or the end of the pull
        self._lock = threading.Lock()
        self._exit: list[int | None] = []
        self._gone = False

    def prepare(self) -> None:
        import docker
        if not self.step.image:
            raise ExecutionError(f"step {self.step.name}: the docker executor needs an image")
        try:
            self.client = docker.from_env(timeout=300)
            self.client.ping()
            # attach and wait last as long as the step: no read timeout on those
            self.streams = docker.from_env(timeout=None)
        except Exception as exc:  # noqa: BLE001 - any connection problem means "no engine"
            raise ExecutionError(f"step {self.step.name}: cannot reach the Docker engine "
                                 f"({type(exc).__name__})") from None
        sweep_containers(self.client)
        self._write_secrets()
        self._pull_unless_cancelled()

    def _pull_unless_cancelled(self) -> None:
        """A pull can take minutes; cancel() must not wait for it (the engine drops it then)."""
        failure: list[BaseException] = []

        def pull() -> None:
            try:
                ensure_image(self.client, self.step)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                failure.append(exc)
            finally:
                self._wake.set()

        threading.Thread(target=pull, name=f"pull-{self.step.name}", daemon=True).start()
        self._wake.wait()  # set by the pull's end or by cancel()
        if self._cancelled.is_set():
            raise ExecutionError(f"step {self.step.name}: cancelled while pulling image "
                                 f"{self.step.image}")
        if failure:
            raise failure[0]

    def _write_secrets(self) -> None:
        self.secret_dir = SecretDir.create(self.scratch)
        env = dict(self.step.env)
        if env.get(MASK_ENV):  # the file values to mask are appended to, as the container sees it
            env[MASK_ENV] = f"{MASK_MOUNT}/{os.path.basename(env[MASK_ENV])}"
        for spec in self.step.files:
            host = self.secret_dir.write(spec)
            env[spec.env] = MOUNT + "/" + os.path.relpath(host, self.secret_dir.path)
        self.secret_dir.write_bytes(ENV_FILE, env_script(env))
        self.secret_dir.write_bytes(SCRIPT_FILE, self.step.run.encode("utf-8", "surrogateescape"))

    def _grant(self, uid: int | None) -> None:
        """Let a non-root image user read its secrets; the names inside stay unlisted."""
        if uid is None or uid == 0 or uid == os.geteuid() or os.geteuid() != 0:
            return  # nothing to do, or not ours to do (the step then reports EACCES itself)
        top = self.secret_dir.path
        os.chmod(top, 0o711)  # the dir stays ours (sweep needs that); traverse-only for uid
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                if not (root == top and name == LOCK):
                    os.chown(os.path.join(root, name), uid, -1, follow_symlinks=False)

    def run(self, output: Output) -> StepResult:
        started = time.monotonic()
        if self._cancelled.is_set():
            return StepResult(self.step.name, "cancelled", None, 0.0, "cancelled before start")
        try:
            stream = self._create_and_attach()
            reader = threading.Thread(target=self._pump, args=(stream, output), daemon=True)
            reader.start()
            self.client.api.start(self.container_id)
        except Exception as exc:  # noqa: BLE001 - foreign text is scrubbed before use
            self._kill()
            why = exc.message if isinstance(exc, ExecutionError) else scrub(
                self.step, getattr(exc, "explanation", None) or str(exc))
            if "/bin/sh" in why and "no such file" in why:
                why = f"image {self.step.image} has no /bin/sh, which a step's script needs"
            return StepResult(self.step.name, "error", None, time.monotonic() - started,
                              f"cannot start the container: {why}")
        if self._cancelled.is_set():  # cancel() raced with the start
            self._kill()
        waiter = threading.Thread(target=self._wait, daemon=True)
        waiter.start()
        deadline = None if self.step.timeout is None else started + self.step.timeout
        timed_out = False
        while waiter.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                self._kill()
                waiter.join(KILL_GRACE)
                break
            waiter.join(0.5 if left is None else min(left, 0.5))
        reader.join(KILL_GRACE)  # the rest of the output arrives after the exit
        took = time.monotonic() - started
        code = self._exit[0] if self._exit else None
        if timed_out:
            return StepResult(self.step.name, "timeout", None, took,
                              f"killed after the {self.step.timeout:g}s timeout")
        if self._cancelled.is_set():
            return StepResult(self.step.name, "cancelled", None, took, "cancelled")
        if code is None:
            return StepResult(self.step.name, "error", None, took, "lost track of the container")
        if code == 0:
            return StepResult(self.step.name, "success", 0, took)
        return StepResult(self.step.name, "failed", code, took, f"exit code {code}")

    def _create_and_attach(self):
        binds = {self.secret_dir.path: {"bind": MOUNT, "mode": "ro"}}
        if self.step.workdir:
            binds[self.step.workdir] = {"bind": WORKSPACE, "mode": "rw"}
        if self.step.env.get(MASK_ENV):
            binds[os.path.dirname(self.step.env[MASK_ENV])] = {"bind": MASK_MOUNT, "mode": "rw"}
        api = self.client.api
        host_config = api.create_host_config(
            binds=binds, network_mode=os.environ.get("WORKBENCH_DOCKER_NETWORK", "host"),
            # no log driver: unmasked output must not land in the engine's log files
            log_config={"type": "none", "config": {}})
        created = api.create_container(
            self.step.image, command=[WRAPPER], entrypoint=["/bin/sh", "-c"],
            name=self.container_name, host_config=host_config,
            working_dir=WORKSPACE if self.step.workdir else None, use_config_proxy=False,
            labels={LABEL_STEP: self.step.name, LABEL_DIR: self.secret_dir.path,
                    LABEL_HOST: socket.gethostname()})
        with self._lock:
            self.container_id = created["Id"]
        user = api.inspect_container(self.container_id)["Config"].get("User") or ""
        self._grant(image_uid(api, self.container_id, user))
        return self.streams.api.attach(self.container_id, stdout=True, stderr=True, stream=True)

    @staticmethod
    def _pump(stream, output: Output) -> None:
        try:
            for chunk in stream:
                if chunk:
                    output(chunk)
        except Exception:  # noqa: BLE001 - a torn stream after a kill is expected
            pass

    def _wait(self) -> None:
        try:
            self._exit.append(int(self.streams.api.wait(self.container_id)["StatusCode"]))
        except Exception:  # noqa: BLE001 - removed under us: the caller reports it
            self._exit.append(None)

    def _kill(self) -> None:
        with self._lock:
            cid = self.container_id
        if cid is None or self.client is None:
            return
        try:
            self.client.api.kill(cid)
        except Exception:  # noqa: BLE001 - it may have exited already
            pass

    def cancel(self) -> None:
        self._cancelled.set()
        self._wake.set()
        self._kill()

    def cleanup(self) -> None:
        self._remove_container()
        if self.secret_dir is not None:
            self.secret_dir.remove()

    def _remove_container(self) -> None:
        """Force-remove by name (also covers a create whose answer we never saw)."""
        import docker
        if self.client is None or self._gone:
            return
        try:
            self.client.api.remove_container(self.container_name, force=True, v=True)
            self._gone = True
        except docker.errors.NotFound:
            self._gone = True
        except Exception:  # noqa: BLE001 - cleanup never raises; a later call may retry
            return
        for client in (self.client, self.streams):
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
