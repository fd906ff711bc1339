"""The local executor with real processes: environment, files, output, timeouts, kills."""
import os
import secrets
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from workbench.errors import ExecutionError
from workbench.pipeline import executor
from workbench.pipeline.local import LocalExecutor
from workbench.pipeline.secretdir import fs_type, sweep
from workbench.pipeline.step import FileSpec, ResolvedStep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def make_step(run, *, env=None, files=(), timeout=None, workdir=None, mark=None):
    env = {**BASE_ENV, **(env or {})}
    if mark:
        env["WB_TEST_MARK"] = mark
    return ResolvedStep(name="step", run=run, env=env, files=tuple(files), timeout=timeout,
                        workdir=workdir)


class Collector:
    """An output sink that records chunks and can wait for a word to show up."""

    def __init__(self):
        self.chunks = []
        self.cond = threading.Condition()

    def __call__(self, chunk):
        with self.cond:
            self.chunks.append(chunk)
            self.cond.notify_all()

    @property
    def data(self):
        return b"".join(self.chunks)

    def wait_for(self, word, limit=20):
        with self.cond:
            assert self.cond.wait_for(lambda: word in self.data, limit), self.data[-500:]


def execute(step, scratch, *, during=None):
    """prepare + run (in a thread, so ``during(ex, out)`` can act meanwhile) + cleanup."""
    ex = LocalExecutor(step, scratch=scratch)
    out = Collector()
    result = {}
    try:
        ex.prepare()
        worker = threading.Thread(target=lambda: result.update(r=ex.run(out)))
        worker.start()
        if during:
            during(ex, out)
        worker.join(60)
        assert not worker.is_alive()
    finally:
        ex.cleanup()
    return result["r"], out.data


def marked_pids(mark):
    """Live processes whose environment carries ``mark``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if f"WB_TEST_MARK={mark}".encode() in environ and state != "Z":
            found.append(int(pid))
    return found


def wait_until_gone(mark, limit=10.0):
    end = time.monotonic() + limit
    while marked_pids(mark) and time.monotonic() < end:
        time.sleep(0.05)
    return marked_pids(mark)


def test_registered_as_local():
    assert executor.get("local") is LocalExecutor


def test_step_sees_exactly_its_env_and_never_the_runners(secret_scratch, monkeypatch):
    canary = "canary-" + secrets.token_hex(8)
    monkeypatch.setenv("WORKBENCH_MASTER_KEY", canary)
    monkeypatch.setenv("HOME", "/root-canary")
    step = make_step("env", env={"DEPLOY_TOKEN": "t0ken"},
                     files=[FileSpec("KUBECONFIG", "config", b"kube")])
    result, data = execute(step, secret_scratch)
    assert result.status == "success" and result.exit_code == 0
    assert canary.encode() not in data and b"root-canary" not in data
    names = {line.split("=", 1)[0] for line in data.decode().splitlines()}
    # PWD is the one variable the shell itself adds
    assert names == {"PATH", "DEPLOY_TOKEN", "KUBECONFIG", "PWD"}
    assert b"DEPLOY_TOKEN=t0ken\n" in data


SHOW_FILES = 'stat -c "%a %n" "$TOKEN" "$(dirname "$TOKEN")" "$DOCKER_CONFIG" ' \
             '"$DOCKER_CONFIG/config.json" "$(dirname "$(dirname "$TOKEN")")"; cat "$TOKEN"; echo'
FILES = [FileSpec("TOKEN", "token.pem", b"PEM-CONTENT"),
         FileSpec("DOCKER_CONFIG", "config.json", b"{}", expose_dir=True)]


def cancel_when_ready(ex, out):
    out.wait_for(b"ready")
    ex.cancel()


@pytest.mark.parametrize("tail, timeout, during, status, code", [
    ("", None, None, "success", 0),
    ("exit 3", None, None, "failed", 3),
    ("sleep 30", 2.0, None, "timeout", None),  # room for the stat calls on a busy box
    ("echo ready; sleep 30", None, cancel_when_ready, "cancelled", None),
])
def test_files_are_private_readable_and_gone_afterwards(secret_scratch, tail, timeout, during,
                                                        status, code):
    step = make_step(f"{SHOW_FILES}; {tail}", files=FILES, timeout=timeout)
    result, data = execute(step, secret_scratch, during=during)
    assert (result.status, result.exit_code) == (status, code)
    lines = data.decode().splitlines()
    modes = dict(line.split(" ", 1)[::-1] for line in lines[:5])
    token, token_dir, docker_dir, docker_file, secret_dir = modes
    assert token.endswith("/token.pem") and docker_file == docker_dir + "/config.json"
    assert [modes[p] for p in (token, token_dir, docker_dir, docker_file, secret_dir)] == \
        ["600", "700", "700", "600", "700"]
    assert lines[5] == "PEM-CONTENT"
    if fs_type("/dev/shm") == "tmpfs":
        assert fs_type(secret_scratch) == "tmpfs"
    for path in (token, docker_file, secret_dir):
        assert not os.path.exists(path)
    assert os.listdir(secret_scratch) == ["lock"]


def test_timeout_kills_the_whole_tree_including_a_background_grandchild(secret_scratch):
    mark = secrets.token_hex(8)
    step = make_step("sh -c 'sleep 30 & echo grandchild; sleep 30' & sleep 30", timeout=1,
                     mark=mark)
    result, data = execute(step, secret_scratch)
    assert result.status == "timeout" and result.exit_code is None
    assert "timed out" in result.message
    assert b"grandchild" in data  # it did start before the timeout
    assert wait_until_gone(mark) == []


def test_a_trap_ignoring_sigterm_is_killed_after_the_grace(secret_scratch, monkeypatch):
    monkeypatch.setattr(LocalExecutor, "kill_grace", 0.5)
    mark = secrets.token_hex(8)
    step = make_step("trap '' TERM; echo ready; sleep 30 & while :; do sleep 1; done", mark=mark)
    result, _ = execute(step, secret_scratch, during=cancel_when_ready)
    assert result.status == "cancelled"
    assert wait_until_gone(mark) == []


def test_background_leftovers_die_when_the_step_ends(secret_scratch):
    mark = secrets.token_hex(8)
    step = make_step("sleep 30 >/dev/null 2>&1 & echo done", mark=mark)
    result, data = execute(step, secret_scratch)
    assert result.status == "success" and data == b"done\n"
    assert wait_until_gone(mark) == []


def test_no_secret_in_any_process_command_line(secret_scratch):
    canary = "canary-" + secrets.token_hex(8)
    mark = secrets.token_hex(8)
    step = make_step('sleep 30 & cat "$F" >/dev/null; echo ready; sleep 30',
                     env={"SECRET": canary}, files=[FileSpec("F", "f", canary.encode())],
                     mark=mark)
    seen = {}

    def scan(ex, out):
        out.wait_for(b"ready")
        deadline = time.monotonic() + 10
        while len(marked_pids(mark)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        seen["step"] = marked_pids(mark)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            seen.setdefault("cmdlines", []).append(cmdline)
            seen.setdefault("leaks", []).extend([pid] if canary.encode() in cmdline else [])
        ex.cancel()

    result, _ = execute(step, secret_scratch, during=scan)
    assert result.status == "cancelled"
    assert len(seen["step"]) >= 2  # the scan did see the step's shell and its sleeps
    assert seen.get("leaks", []) == []
    assert any(b"$SECRET" not in c and b"sleep 30" in c for c in seen["cmdlines"])


def test_interleaved_stdout_and_stderr_keep_their_order(secret_scratch):
    step = make_step('i=0; while [ $i -lt 300 ]; do echo "out $i"; echo "err $i" >&2; '
                     'i=$((i+1)); done')
    result, data = execute(step, secret_scratch)
    expected = "".join(f"out {i}\nerr {i}\n" for i in range(300))
    assert result.status == "success" and data.decode() == expected


def test_ten_megabytes_of_output_arrive_complete(secret_scratch):
    step = make_step("head -c 10485760 /dev/urandom | od -An -v -tx1 | head -c 10485760; "
                     "echo; echo END")
    ex = LocalExecutor(step, scratch=secret_scratch)
    out = Collector()
    try:
        ex.prepare()
        result = ex.run(out)
    finally:
        ex.cleanup()
    assert result.status == "success"
    data = out.data
    assert len(data) == 10485760 + len(b"\nEND\n") and data.endswith(b"\nEND\n")
    assert len(out.chunks) > 1  # streamed, not gathered at the end


def test_workdir_is_used_or_a_fresh_empty_one_is_made(secret_scratch, tmp_path):
    (tmp_path / "marker").write_text("x")
    result, data = execute(make_step("pwd; ls -A", workdir=str(tmp_path)), secret_scratch)
    assert data.decode().splitlines() == [str(tmp_path), "marker"]
    result, data = execute(make_step("pwd; ls -A; touch leftover"), secret_scratch)
    fresh = data.decode().splitlines()
    assert len(fresh) == 1 and fresh[0].startswith(secret_scratch + "/")
    assert not os.path.exists(fresh[0])


def test_a_missing_workdir_is_an_error_that_names_it(secret_scratch, tmp_path):
    missing = str(tmp_path / "nope")
    result, data = execute(make_step("echo hi", workdir=missing), secret_scratch)
    assert result.status == "error" and missing in result.message and data == b""
    assert os.listdir(secret_scratch) == ["lock"]


def test_killed_by_a_signal_is_a_failure(secret_scratch):
    result, _ = execute(make_step("kill -9 $$"), secret_scratch)
    assert result.status == "failed" and result.exit_code == -signal.SIGKILL
    assert "SIGKILL" in result.message


def test_a_failing_output_handler_stops_the_step(secret_scratch):
    mark = secrets.token_hex(8)
    ex = LocalExecutor(make_step("echo secret-ish; sleep 30", mark=mark), scratch=secret_scratch)

    def boom(chunk):
        raise ValueError(chunk)

    try:
        ex.prepare()
        result = ex.run(boom)
    finally:
        ex.cleanup()
    assert result.status == "error" and "secret-ish" not in result.message
    assert wait_until_gone(mark) == []


def test_cleanup_is_safe_before_prepare_and_after_a_failed_prepare(secret_scratch):
    LocalExecutor(make_step("true"), scratch=secret_scratch).cleanup()
    step = make_step("true", files=[FileSpec("A", "a", b"x"), FileSpec("B", "../b", b"y")])
    ex = LocalExecutor(step, scratch=secret_scratch)
    with pytest.raises(ExecutionError):
        ex.prepare()
    assert len(os.listdir(secret_scratch)) == 2  # the half-prepared dir is still there
    ex.cleanup()
    ex.cleanup()
    assert os.listdir(secret_scratch) == ["lock"]


def test_cancel_before_run(secret_scratch):
    ex = LocalExecutor(make_step("echo hi"), scratch=secret_scratch)
    ex.prepare()
    ex.cancel()
    out = Collector()
    assert ex.run(out).status == "cancelled" and out.data == b""
    ex.cleanup()


RUNNER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from workbench.pipeline.local import LocalExecutor
    from workbench.pipeline.step import FileSpec, ResolvedStep
    step = ResolvedStep(name="s", run=sys.argv[4],
                        env={"PATH": "/usr/bin:/bin", "WB_TEST_MARK": sys.argv[3]},
                        files=(FileSpec("F", "f", b"x"),))
    if sys.argv[5:] == ["no-watcher"]:  # leave only the parent-death signal
        LocalExecutor._start_watcher = lambda self, pgid: None
    ex = LocalExecutor(step, scratch=sys.argv[2])
    ex.prepare()
    ex.run(lambda chunk: (sys.stdout.buffer.write(chunk), sys.stdout.flush()))
""")


def test_a_sigkilled_runner_takes_the_step_tree_with_it_and_sweep_cleans_up(secret_scratch):
    mark = secrets.token_hex(8)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, ROOT, secret_scratch, mark,
                               "sleep 300 & echo ready; sleep 300"], stdout=subprocess.PIPE)
    try:
        assert runner.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while len(marked_pids(mark)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(marked_pids(mark)) >= 2  # the shell (or its last command) and a sleep
        left = [n for n in os.listdir(secret_scratch) if n != "lock"]
        assert len(left) == 1 and sweep(secret_scratch) == []  # alive: not swept
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        runner.stdout.close()
    assert wait_until_gone(mark) == []
    assert sweep(secret_scratch) == [os.path.join(secret_scratch, left[0])]
    assert os.listdir(secret_scratch) == ["lock"]


def test_the_parent_death_signal_alone_kills_the_step_of_a_sigkilled_runner(secret_scratch):
    mark = secrets.token_hex(8)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, ROOT, secret_scratch, mark,
                               "echo ready; while :; do sleep 1; done", "no-watcher"],
                              stdout=subprocess.PIPE)
    try:
        assert runner.stdout.readline() == b"ready\n"
        assert marked_pids(mark)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        runner.stdout.close()
    # the loop's current `sleep 1` may finish on its own; the shell must not start another
    assert wait_until_gone(mark) == []
    sweep(secret_scratch)


def test_a_pipeline_through_the_runner_masks_values_and_leaves_no_file(secret_scratch,
                                                                       dict_resolver):
    from workbench.pipeline.parse import parse_pipeline
    from workbench.pipeline.runner import run_pipeline

    token = "tok-" + secrets.token_hex(12)
    cert = "cert-" + secrets.token_hex(12)
    dict_resolver.add("api-token", "secret_text", {"secret": token})
    dict_resolver.add("tls", "secret_file", {"filename": "client.pem", "content": cert.encode()})
    pipeline = parse_pipeline(textwrap.dedent("""
        name: e2e
        steps:
          - name: use
            run: 'echo "token=$API_TOKEN"; cat "$CERT"; echo; echo "path=$CERT"'
            credentials:
              - {id: api-token, env: API_TOKEN}
              - {id: tls, file: CERT}
    """), filename="e2e.yaml")
    out = bytearray()
    result = run_pipeline(pipeline, dict_resolver, scratch=secret_scratch, echo=out.extend)
    assert result.status == "success", result.steps
    text = out.decode()
    assert token not in text and cert not in text
    assert "token=" in text
    path = text.split("path=", 1)[1].strip()
    assert path.startswith(secret_scratch + "/") and path.endswith("/client.pem")
    assert not os.path.exists(path) and os.listdir(secret_scratch) == ["lock"]
