"""The docker executor against a real engine: env, files, exit codes, pulls, inspect, cleanup."""
from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import threading
import time

import docker
import pytest

from workbench.errors import ExecutionError
from workbench.pipeline import executor as executors
from workbench.pipeline.docker import DockerExecutor, env_script, sh_quote, sweep_containers
from workbench.pipeline.secretdir import LOCK
from workbench.pipeline.step import FileSpec, PullAuth, ResolvedStep

pytestmark = pytest.mark.docker

CANARY = "canary-7f3e9d1c-secret"


@pytest.fixture
def scratch(secret_scratch):
    """The runner's kind of parent (tmpfs where there is one), private to this test."""
    return secret_scratch


def execute(step: ResolvedStep, scratch: str):
    """prepare → run → cleanup like the runner does; returns (result, output, executor)."""
    ex = executors.get("docker")(step, scratch=scratch)
    chunks: list[bytes] = []
    try:
        ex.prepare()
        result = ex.run(chunks.append)
    finally:
        ex.cleanup()
    return result, b"".join(chunks), ex


def leftovers(scratch: str) -> list[str]:
    """Secret dirs still under ``scratch`` (the fixture's own lock file aside)."""
    return [name for name in os.listdir(scratch) if name != LOCK]


def assert_nothing_left(client, ex: DockerExecutor, scratch: str) -> None:
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(ex.container_name)
    assert leftovers(scratch) == []


def wait_running(client, name: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            info = client.api.inspect_container(name)
            if info["State"]["Running"]:
                return info
        except docker.errors.NotFound:
            pass
        time.sleep(0.05)
    raise AssertionError(f"container {name} never started")


def test_sh_quote_survives_every_awkward_character():
    value = "it's \"quoted\"\n$HOME `id` \\ $(echo no) \t end"
    assert sh_quote(value) == "'it'\"'\"'s \"quoted\"\n$HOME `id` \\ $(echo no) \t end'"
    with pytest.raises(ExecutionError):
        env_script({"BAD NAME; rm -rf /": "x"})


def test_step_sees_its_env_and_files_and_exit_code(docker_client, busybox_image, scratch):
    awkward = "it's \"q\"\nline2 $HOME `id` \\ end"
    step = ResolvedStep(
        name="env-and-files", image=busybox_image, executor="docker",
        env={"GREETING": awkward, "PLAIN": "plain"},
        files=(FileSpec(env="TOKEN_FILE", filename="token", content=b"file-" + CANARY.encode()),
               FileSpec(env="DOCKER_CONFIG", filename="config.json", content=b'{"auths": {}}',
                        expose_dir=True)),
        run='printf "%s|" "$GREETING"; echo "$PLAIN"\n'
            'cat "$TOKEN_FILE"; echo; cat "$DOCKER_CONFIG/config.json"; echo\n'
            'echo "path=$TOKEN_FILE"\n'
            'echo to-stderr >&2\n'
            'touch "$TOKEN_FILE" 2>/dev/null && echo writable || echo read-only\n'
            'exit 3\n')
    result, out, ex = execute(step, scratch)
    text = out.decode()
    assert result.status == "failed" and result.exit_code == 3
    assert f"{awkward}|plain\n" in text
    assert f"file-{CANARY}\n" in text
    assert '{"auths": {}}' in text
    assert "path=/run/workbench/" in text and "to-stderr\n" in text
    assert "read-only" in text
    assert_nothing_left(docker_client, ex, scratch)


def test_output_keeps_order_and_raw_bytes(docker_client, busybox_image, scratch):
    step = ResolvedStep(name="order", image=busybox_image, executor="docker",
                        run="for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; "
                            "printf 'three\\377\\n'")
    result, out, ex = execute(step, scratch)
    assert result.status == "success" and result.exit_code == 0
    assert out == b"".join(b"out%d\nerr%d\n" % (i, i) for i in range(1, 6)) + b"three\xff\n"
    assert_nothing_left(docker_client, ex, scratch)


def test_inspect_of_a_running_step_shows_no_secret_and_cancel_cleans_up(
        docker_client, busybox_image, scratch):
    step = ResolvedStep(
        name="inspect-me", image=busybox_image, executor="docker",
        env={"API_TOKEN": "env-" + CANARY},
        files=(FileSpec(env="KEY_FILE", filename="key", content=("file-" + CANARY).encode()),),
        run='echo started; sleep 60', secrets=(CANARY.encode(),))
    ex = DockerExecutor(step, scratch=scratch)
    chunks: list[bytes] = []
    ex.prepare()
    box = {}
    worker = threading.Thread(target=lambda: box.update(result=ex.run(chunks.append)))
    worker.start()
    try:
        info = wait_running(docker_client, ex.container_name)
        dump = json.dumps(info)
        assert CANARY not in dump
        assert not any(CANARY in e for e in info["Config"]["Env"] or [])
        # the secret really is inside, only not in the container's description
        probe = docker_client.api.exec_create(ex.container_name,
                                              ["sh", "-c", "cat /run/workbench/*/key"])
        assert CANARY.encode() in docker_client.api.exec_start(probe)
        secret_dir = ex.secret_dir.path
        assert os.stat(secret_dir).st_mode & 0o777 == 0o700
    finally:
        ex.cancel()
        worker.join(60)
        ex.cleanup()
    assert box["result"].status == "cancelled"
    assert not os.path.exists(secret_dir)
    assert_nothing_left(docker_client, ex, scratch)
    ex.cleanup()  # idempotent


def test_timeout_kills_the_container_and_cleans_up(docker_client, busybox_image, scratch):
    step = ResolvedStep(name="too-slow", image=busybox_image, executor="docker",
                        env={"X": CANARY}, run="echo begin; sleep 60; echo never", timeout=1.5)
    result, out, ex = execute(step, scratch)
    assert result.status == "timeout" and result.exit_code is None
    assert out == b"begin\n"
    assert_nothing_left(docker_client, ex, scratch)


def test_cancel_before_run_never_starts(docker_client, busybox_image, scratch):
    step = ResolvedStep(name="never", image=busybox_image, executor="docker", run="echo hi")
    ex = DockerExecutor(step, scratch=scratch)
    ex.prepare()
    ex.cancel()
    out: list[bytes] = []
    assert ex.run(out.append).status == "cancelled" and out == []
    ex.cleanup()
    assert_nothing_left(docker_client, ex, scratch)


@pytest.mark.parametrize("registry", ["private_registry", "token_registry"])
def test_pull_from_private_registry_with_credential(docker_client, registry, request, scratch):
    reg = request.getfixturevalue(registry)  # Basic auth, then the Bearer token flow
    try:  # another test may have pulled it: the executor has to pull it again
        docker_client.images.remove(reg.image, force=True)
    except docker.errors.ImageNotFound:
        pass
    step = ResolvedStep(name="pulled", image=reg.image, executor="docker", run="echo pulled-ok",
                        pull_auth=PullAuth(reg.host, reg.username, reg.password),
                        uses=(("team-registry", 1),))
    try:
        result, out, ex = execute(step, scratch)
        assert result.status == "success" and out == b"pulled-ok\n"
        docker_client.images.get(reg.image)
    finally:
        docker_client.images.remove(reg.image, force=True)
    assert_nothing_left(docker_client, ex, scratch)


def test_wrong_registry_password_fails_clearly_without_the_password(
        docker_client, private_registry, scratch):
    reg = private_registry
    wrong = "wrong-" + CANARY
    step = ResolvedStep(name="bad-pull", image=reg.image, executor="docker", run="echo no",
                        pull_auth=PullAuth(reg.host, reg.username, wrong),
                        uses=(("team-registry", 2),), secrets=(wrong.encode(),))
    ex = DockerExecutor(step, scratch=scratch)
    with pytest.raises(ExecutionError) as err:
        ex.prepare()
    ex.cleanup()
    message = str(err.value)
    assert reg.image in message and "team-registry" in message and reg.username in message
    assert "unauthorized" in message.lower() or "authentication" in message.lower()
    assert wrong not in message and CANARY not in json.dumps(err.value.to_dict())
    assert_nothing_left(docker_client, ex, scratch)


def test_pull_credential_is_never_sent_to_another_registry(busybox_image, scratch):
    step = ResolvedStep(name="elsewhere", image=busybox_image, executor="docker", run="true",
                        pull_auth=PullAuth("127.0.0.1:1", "someone", "pw-" + CANARY))
    ex = DockerExecutor(step, scratch=scratch)
    with pytest.raises(ExecutionError, match="not for docker.io"):
        ex.prepare()
    ex.cleanup()
    assert leftovers(scratch) == []


@pytest.fixture(scope="module")
def nobody_image(docker_client, busybox_image):
    """busybox whose image config says ``USER nobody`` (uid 65534), built offline by commit."""
    tag = "local/busybox-nobody:1"
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    holder = docker_client.api.create_container(busybox_image, command=["true"])
    try:
        docker_client.api.commit(holder["Id"], repository=tag.split(":")[0], tag="1",
                                 changes=["USER nobody"])
    finally:
        docker_client.api.remove_container(holder["Id"], force=True)
    return tag


def test_non_root_image_user_can_read_its_secrets(docker_client, nobody_image, scratch):
    step = ResolvedStep(
        name="as-nobody", image=nobody_image, executor="docker", env={"TOKEN": "env-" + CANARY},
        files=(FileSpec(env="KEY_FILE", filename="key", content=b"file-" + CANARY.encode()),),
        run='id -u; echo "$TOKEN"; cat "$KEY_FILE"; echo; ls /run/workbench || echo unlisted')
    result, out, ex = execute(step, scratch)
    assert result.status == "success", out
    assert out.decode().splitlines()[:3] == ["65534", f"env-{CANARY}", f"file-{CANARY}"]
    assert b"unlisted" in out  # it may open what it was told about, not browse the dir
    assert_nothing_left(docker_client, ex, scratch)


def test_timeout_holds_when_the_step_closes_its_output(docker_client, busybox_image, scratch):
    step = ResolvedStep(name="quiet", image=busybox_image, executor="docker", timeout=1.5,
                        run="echo bye; exec >/dev/null 2>&1; sleep 60")
    result, out, ex = execute(step, scratch)
    assert result.status == "timeout" and out == b"bye\n"
    assert_nothing_left(docker_client, ex, scratch)


def test_workdir_is_the_containers_workspace(docker_client, busybox_image, scratch, tmp_path):
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "input.txt").write_text("from the checkout\n")
    step = ResolvedStep(name="in-workdir", image=busybox_image, executor="docker",
                        workdir=str(work), run="pwd; cat input.txt; echo built > output.txt")
    result, out, ex = execute(step, scratch)
    assert result.status == "success" and out == b"/workspace\nfrom the checkout\n"
    assert (work / "output.txt").read_text() == "built\n"


def test_sweep_removes_containers_whose_runner_died(docker_client, busybox_image, scratch):
    step = ResolvedStep(name="orphan", image=busybox_image, executor="docker", run="sleep 60")
    ex = DockerExecutor(step, scratch=scratch)
    ex.prepare()
    box = {}
    worker = threading.Thread(target=lambda: box.update(result=ex.run(lambda _b: None)))
    worker.start()
    try:
        wait_running(docker_client, ex.container_name)
        ex.secret_dir.remove()  # what secretdir.sweep does once the owning runner is dead
        assert ex.container_name in sweep_containers(docker_client)
        worker.join(60)
        assert not worker.is_alive() and box["result"].status in ("failed", "error")
    finally:
        ex.cancel()
        ex.cleanup()
    assert_nothing_left(docker_client, ex, scratch)


def test_image_without_a_shell_is_a_clear_error(docker_client, scratch):
    try:
        docker_client.images.get("local/no-shell:1")
    except docker.errors.ImageNotFound:
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tar:
            info = tarfile.TarInfo("hello.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hi\n"))
        docker_client.api.import_image_from_data(layer.getvalue(), repository="local/no-shell",
                                                 tag="1")
    step = ResolvedStep(name="no-shell", image="local/no-shell:1", executor="docker", run="true")
    result, out, ex = execute(step, scratch)
    assert result.status == "error" and out == b""
    assert result.message == "cannot start the container: image local/no-shell:1 has no " \
                             "/bin/sh, which a step's script needs"
    assert_nothing_left(docker_client, ex, scratch)


def test_cancel_does_not_wait_for_a_hanging_pull(docker_client, scratch):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        image = f"127.0.0.1:{silent.getsockname()[1]}/team/hangs:1"
        step = ResolvedStep(name="hanging-pull", image=image, executor="docker", run="true",
                            pull_auth=PullAuth(f"127.0.0.1:{silent.getsockname()[1]}", "u",
                                               "pw-" + CANARY))
        ex = DockerExecutor(step, scratch=scratch)
        threading.Timer(0.5, ex.cancel).start()
        with pytest.raises(ExecutionError, match="cancelled while pulling image"):
            ex.prepare()
        ex.cleanup()
    assert leftovers(scratch) == []
