"""The ``docker`` executor: runs a step's script in a container; secrets arrive by a read-only mount."""
from __future__ import annotations

import base64
import os
import re
import secrets
import threading
import time

from ..errors import ExecutionError
from .executor import Executor, Output, register
from .secretdir import SecretDir
from .step import StepResult

MOUNT = "/run/workbench"  # where the private secret dir appears inside the container
WORKSPACE = "/workspace"
ENV_FILE, SCRIPT_FILE = "step-env.sh", "step-script.sh"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# the container's command never varies with the step, so `docker inspect` shows no secret
WRAPPER = f"set -a; . {MOUNT}/{ENV_FILE}; set +a; exec /bin/sh {MOUNT}/{SCRIPT_FILE}"
HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
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


def registry_of(image: str) -> str:
    """The registry host an image reference points at (``docker.io`` for Docker Hub)."""
    from docker.auth import resolve_repository_name
    from docker.utils import parse_repository_tag
    return resolve_repository_name(parse_repository_tag(image)[0])[0]


def same_registry(a: str, b: str) -> bool:
    norm = [re.sub(r"^https?://", "", x.strip().lower()).rstrip("/").split("/")[0] for x in (a, b)]
    return norm[0] == norm[1] or (norm[0] in HUB_NAMES and norm[1] in HUB_NAMES)


@register
class DockerExecutor(Executor):
    """Runs ``step.run`` with ``/bin/sh`` in ``step.image``; env and files come from a 0700 mount."""

    name = "docker"

    def __init__(self, step, *, scratch):
        super().__init__(step, scratch=scratch)
        self.client = None
        self.secret_dir: SecretDir | None = None
        self.container_id: str | None = None
        self.container_name = f"wb-{re.sub(r'[^a-zA-Z0-9_.-]', '-', step.name)[:40]}-" \
                              f"{secrets.token_hex(6)}"
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._gone = False

    # -- prepare -------------------------------------------------------------------------------
    def prepare(self) -> None:
        import docker
        if not self.step.image:
            raise ExecutionError(f"step {self.step.name}: the docker executor needs an image")
        try:
            self.client = docker.from_env(timeout=600)
            self.client.ping()
        except Exception as exc:  # noqa: BLE001 - any connection problem means "no engine"
            raise ExecutionError(f"step {self.step.name}: cannot reach the Docker engine "
                                 f"({type(exc).__name__})") from None
        self._write_secrets()
        self._ensure_image()

    def _write_secrets(self) -> None:
        self.secret_dir = SecretDir.create(self.scratch)
        env = dict(self.step.env)
        for spec in self.step.files:
            host = self.secret_dir.write(spec)
            env[spec.env] = MOUNT + "/" + os.path.relpath(host, self.secret_dir.path)
        self.secret_dir.write_bytes(ENV_FILE, env_script(env))
        self.secret_dir.write_bytes(SCRIPT_FILE, self.step.run.encode("utf-8", "surrogateescape"))

    def _ensure_image(self) -> None:
        import docker
        image, auth = self.step.image, self.step.pull_auth
        if auth is None:
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
            except docker.errors.APIError as exc:
                raise self._pull_error(exc.explanation or str(exc)) from None
        elif not same_registry(auth.registry, registry_of(image)):
            # the engine hands pull credentials to the image's registry: never to another one
            raise self._pull_error(f"the pull credential is for {auth.registry}, "
                                   f"not for {registry_of(image)}")
        self._pull()

    def _pull(self) -> None:
        import docker
        from docker.utils import parse_repository_tag
        repo, tag = parse_repository_tag(self.step.image)
        auth = self.step.pull_auth
        config = None if auth is None else {
            "username": auth.username, "password": auth.password, "serveraddress": auth.registry}
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", auth_config=config,
                                              stream=True, decode=True):
                if "error" in event:
                    raise self._pull_error(str(event.get("error")))
        except docker.errors.APIError as exc:
            raise self._pull_error(exc.explanation or str(exc)) from None
        except docker.errors.DockerException as exc:
            raise self._pull_error(type(exc).__name__) from None

    def _pull_error(self, reason: str) -> ExecutionError:
        auth = self.step.pull_auth
        if auth is None:
            who = "without credentials"
        else:
            # the planner lists the pull credential among the step's uses
            ids = ", ".join(f"{c}@{v}" for c, v in self.step.uses) or "(none recorded)"
            who = (f"as user {auth.username} on {auth.registry} "
                   f"(credentials of this step: {ids})")
        return ExecutionError(f"step {self.step.name}: cannot pull image {self.step.image} "
                              f"{who}: {self._scrub(reason)}", image=self.step.image)

    def _scrub(self, text: str) -> str:
        """The engine's words minus anything secret (it should echo none; make sure)."""
        auth = self.step.pull_auth
        hidden = [s.decode("utf-8", "replace") for s in self.step.secrets if s]
        if auth is not None:
            pair = f"{auth.username}:{auth.password}".encode()
            hidden += [auth.password, base64.b64encode(pair).decode()]
        for value in sorted((h for h in hidden if h), key=len, reverse=True):
            text = text.replace(value, "****")
        return text[:500]

    # -- run -----------------------------------------------------------------------------------
    def run(self, output: Output) -> StepResult:
        started = time.monotonic()
        if self._cancelled.is_set():
            return StepResult(self.step.name, "cancelled", None, 0.0, "cancelled before start")
        try:
            stream = self._create_and_attach()
        except ExecutionError as exc:
            return StepResult(self.step.name, "error", None, time.monotonic() - started,
                              exc.message)
        reader = threading.Thread(target=self._pump, args=(stream, output), daemon=True)
        reader.start()
        try:
            self.client.api.start(self.container_id)
        except Exception as exc:  # noqa: BLE001
            self._kill()
            reader.join(KILL_GRACE)
            return StepResult(self.step.name, "error", None, time.monotonic() - started,
                              f"cannot start the container: {self._scrub(str(exc))}")
        if self._cancelled.is_set():  # cancel() raced with the start
            self._kill()
        deadline = None if self.step.timeout is None else started + self.step.timeout
        timed_out = False
        while reader.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                self._kill()
                reader.join(KILL_GRACE)
                break
            reader.join(0.5 if left is None else min(left, 0.5))
        code = self._exit_code()
        took = time.monotonic() - started
        if timed_out:
            return StepResult(self.step.name, "timeout", None, took,
                              f"killed after the {self.step.timeout:g}s timeout")
        if self._cancelled.is_set():
            return StepResult(self.step.name, "cancelled", None, took, "cancelled")
        if code is None:
            return StepResult(self.step.name, "error", None, took, "lost track of the container")
        return StepResult(self.step.name, "success" if code == 0 else "failed", code, took)

    def _create_and_attach(self):
        host_path = self.secret_dir.path
        binds = {host_path: {"bind": MOUNT, "mode": "ro"}}
        if self.step.workdir:
            binds[self.step.workdir] = {"bind": WORKSPACE, "mode": "rw"}
        api = self.client.api
        host_config = api.create_host_config(
            binds=binds, network_mode=os.environ.get("WORKBENCH_DOCKER_NETWORK", "host"),
            # no log driver: unmasked output must not land in the engine's log files
            log_config={"type": "none", "config": {}})
        try:
            created = api.create_container(
                self.step.image, command=[WRAPPER], entrypoint=["/bin/sh", "-c"],
                name=self.container_name, host_config=host_config,
                working_dir=WORKSPACE if self.step.workdir else None,
                labels={"workbench.step": self.step.name}, use_config_proxy=False)
            with self._lock:
                self.container_id = created["Id"]
            return api.attach(self.container_id, stdout=True, stderr=True, stream=True)
        except Exception as exc:  # noqa: BLE001
            raise ExecutionError(f"cannot create the container: {self._scrub(str(exc))}") from None

    @staticmethod
    def _pump(stream, output: Output) -> None:
        try:
            for chunk in stream:
                if chunk:
                    output(chunk)
        except Exception:  # noqa: BLE001 - a torn stream after a kill is expected
            pass

    def _exit_code(self) -> int | None:
        try:
            return int(self.client.api.wait(self.container_id, timeout=30)["StatusCode"])
        except Exception:  # noqa: BLE001
            return None

    def _kill(self) -> None:
        with self._lock:
            cid = self.container_id
        if cid is None or self.client is None:
            return
        try:
            self.client.api.kill(cid)
        except Exception:  # noqa: BLE001 - it may have exited already
            pass

    # -- cancel / cleanup ----------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancelled.set()
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
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
