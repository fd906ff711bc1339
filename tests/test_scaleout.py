"""Several app instances and workers on one PostgreSQL behave as one: real `workbench serve`
and `workbench worker` processes with instance folders of their own."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures._net import start_serve
from tests.fixtures.pipeline_repo import add_source, make_credential, pipeline_yaml, unique_name
from tests.fixtures.vault import _token
from workbench.references import PipelineSource

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _env(vault, instance: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_INSTANCE=str(instance), PYTHONPATH=str(ROOT),
               WORKBENCH_DATABASE_URL=vault.settings.database_url,
               WORKBENCH_MASTER_KEY=vault.settings.master_key)
    return env


class Processes:
    """Starts workbench processes and stops (or kills) them."""

    def __init__(self, vault, tmp_path):
        self.vault, self.tmp, self.procs = vault, tmp_path, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "workbench", *args],
                                env=_env(self.vault, self.tmp / name), stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def serve(self, name: str) -> str:
        proc, url = start_serve(_env(self.vault, self.tmp / name), workers=1,
                                log_path=self.tmp / f"{name}.log")
        self.procs.append(proc)
        return url

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def procs(vault, tmp_path):
    from sqlalchemy import text
    with vault.engine.begin() as conn:  # jobs of earlier tests in this schema
        conn.execute(text("DELETE FROM procrastinate_jobs"))
    p = Processes(vault, tmp_path)
    yield p
    p.stop()


def wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_session_made_on_one_instance_is_valid_on_the_other(vault, users, procs):
    a, b = procs.serve("a"), procs.serve("b")
    assert not (Path(procs.tmp) / "a" / "session.key").exists()
    web = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', web.get(f"{a}/login").text)[1]
    name, password = users["admin"]
    resp = web.post(f"{a}/login", data={"username": name, "password": password,
                                        "csrf_token": token}, allow_redirects=False)
    assert resp.status_code == 302
    page = web.get(f"{b}/", allow_redirects=False)  # the cookie of a, on b
    assert page.status_code == 200 and name in page.text
    assert requests.get(f"{b}/", allow_redirects=False).status_code == 302  # no cookie: login


def test_a_sync_started_on_one_instance_runs_on_a_worker_and_shows_everywhere(
        vault, users, procs, git_http_server):
    server = git_http_server
    url = server.create_repo(unique_name("scale"), {"pipelines/a.yaml": pipeline_yaml("a", {})})
    make_credential(vault, "scale-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, credential_id="scale-login", name="scale")
    auth = {"Authorization": f"Bearer {_token(vault, 'personal', username=users['editor'][0])}"}
    a, b = procs.serve("a"), procs.serve("b")
    first = procs.start("worker1", "worker", "--concurrency", "1")

    def listed(on):
        return requests.get(f"{on}/api/v1/pipeline-sources", headers=auth).json()["items"][0]

    server.release.clear()
    server.hold.set()  # the remote answers only when released: the sync stays running
    try:
        resp = requests.post(f"{a}/api/v1/pipeline-sources/{sid}/sync?wait=false", headers=auth)
        assert resp.status_code == 202
        assert listed(b)["syncing"] is True
        again = requests.post(f"{b}/api/v1/pipeline-sources/{sid}/sync?wait=false",
                              headers=auth)
        assert again.status_code == 409  # one sync per source, whichever instance asks
        wait_for(lambda: _job_status(vault, sid) == "doing")  # the worker has it
        time.sleep(1)  # (the worker's git fetch is waiting on the held remote)
        first.send_signal(signal.SIGKILL)  # killed mid-sync
        first.wait()
        assert listed(b)["syncing"] is True  # its job is not lost
    finally:
        server.hold.clear()
        server.release.set()
    procs.start("worker2", "worker", "--concurrency", "1")  # finds the stalled job, reruns it
    wait_for(lambda: not listed(a)["syncing"] and listed(a)["commit"], timeout=90)
    assert listed(b)["commit"] == listed(a)["commit"] and listed(b)["error"] is None
    with vault.factory() as s:
        assert s.get(PipelineSource, sid).synced_at is not None


def _job_status(vault, sid):
    from sqlalchemy import text
    with vault.engine.connect() as conn:
        return conn.execute(text("SELECT status FROM procrastinate_jobs WHERE lock = :k "
                                 "ORDER BY id DESC LIMIT 1"), {"k": f"source:{sid}"}).scalar()
