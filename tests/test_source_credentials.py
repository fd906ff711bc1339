"""Pipeline sources that clone with a credential: HTTPS password or token, SSH key; the
secret stays out of argv, files on disk, errors and audit records."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.pipeline_repo import (add_source, files_under, make_credential,
                                          pipeline_yaml, refs_of, sync, unique_name)
from workbench import audit, credentials, sources
from workbench.audit import SYSTEM
from workbench.errors import ValidationError, WorkbenchError


def test_sync_over_http_with_a_password_credential_keeps_it_off_disk(vault, git_http_server):
    server = git_http_server
    repo = unique_name("team-pipelines")
    url = server.create_repo(repo, {
        "ci/app.yaml": pipeline_yaml("app", {"test": ["db-pass"]})})
    make_credential(vault, "git-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, path_glob="ci/*.yaml", credential_id="git-login", name="team")
    assert sync(vault, sid)["added"] == 1
    server.commit(repo, {"ci/web.yaml": pipeline_yaml("web", {"e2e": ["db-pass"]})})
    result = sync(vault, sid)
    assert (result["added"], result["parsed"], result["full"]) == (1, 1, False)
    assert refs_of(vault, "db-pass") == [("app", "test", None), ("web", "e2e", None)]
    clone = Path(vault.settings.instance) / "sources" / str(sid)
    assert (clone / "config").exists()
    on_disk = files_under(Path(vault.settings.instance))
    assert server.password.encode() not in on_disk
    with vault.factory() as s:
        events = audit.query(s, target="git-login", action="credential.resolve")
    assert len(events) == 2 and events[0].actor == SYSTEM.label
    assert events[0].details["source"] == "team"
    # the clone credential is itself a reference: deleting it would stop the sync
    with vault.factory() as s:
        assert [r["kind"] for r in credentials.references(s, "default", "git-login")] == ["source"]


def _processes() -> list[tuple[bytes, bytes]]:
    """(cmdline, environ) of every process we can read."""
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            out.append(((p / "cmdline").read_bytes(), (p / "environ").read_bytes()))
        except OSError:  # the process ended meanwhile
            pass
    return out


def test_the_password_is_in_no_command_line_while_git_fetches(vault, git_http_server,
                                                              monkeypatch):
    server = git_http_server
    monkeypatch.setenv("WORKBENCH_MASTER_KEY", "marker-of-the-server-environment")
    url = server.create_repo(unique_name("argv"),
                             {"pipelines/a.yaml": pipeline_yaml("a", {"s": []})})
    make_credential(vault, "argv-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, credential_id="argv-login")
    results: list = []
    server.held.clear()
    server.release.clear()
    server.hold.set()  # park git's authenticated request, so its processes can be looked at
    worker = threading.Thread(target=lambda: results.append(sync(vault, sid)))
    worker.start()
    try:
        assert server.held.wait(30)
        processes = _processes()
    finally:
        server.hold.clear()
        server.release.set()
        worker.join(60)
        server.held.clear()
        server.release.clear()
    git_envs = [env for cmd, env in processes if b"remote-http" in cmd]
    assert git_envs  # we did look while git was running
    assert not [c for c, _ in processes if server.password.encode() in c]
    assert not [e for e in git_envs if b"marker-of-the-server-environment" in e]
    assert results and results[0]["added"] == 1


def test_a_secret_text_token_clones_too(vault, git_http_server):
    url = git_http_server.create_repo(unique_name("token-repo"), {
        "pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    make_credential(vault, "git-token", type_="secret_text", secret=git_http_server.token)
    sid = add_source(vault, url=url, credential_id="git-token")
    assert sync(vault, sid)["added"] == 1


def test_a_wrong_password_fails_clearly_without_showing_it(vault, git_http_server, api_as):
    url = git_http_server.create_repo(unique_name("locked"), {"pipelines/a.yaml": "name: a\n"})
    wrong = "not-the-" + git_http_server.password
    make_credential(vault, "bad-login", username=git_http_server.username, password=wrong)
    sid = add_source(vault, url=url, credential_id="bad-login")
    with pytest.raises(WorkbenchError) as info:
        sync(vault, sid)
    message = str(info.value)
    assert "Authentication failed" in message and "'repo'" in message
    assert wrong not in message and git_http_server.password not in message
    resp = api_as("editor").post(f"/pipeline-sources/{sid}/sync")
    assert resp.status_code == 400 and wrong not in resp.get_data(as_text=True)
    with vault.factory() as s:
        src = sources.list_sources(s, "default")[0]
        failures = audit.query(s, action="source.sync", outcome="failed")
    assert "Authentication failed" in src["error"] and src["commit"] is None
    assert len(failures) == 2 and wrong not in str([e.details for e in failures])
    assert wrong.encode() not in files_under(Path(vault.settings.instance))


def test_a_url_with_credentials_in_it_is_refused(vault):
    with pytest.raises(ValidationError) as info:
        add_source(vault, url="https://alice:hunter22@git.example/x.git")
    assert info.value.field == "url" and "hunter22" not in str(info.value)


def test_sync_over_ssh_with_a_private_key_leaves_no_key_file(vault, sshd_server, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    url = f"ssh://{sshd_server.host}:{sshd_server.port}{local_repo.path}"
    make_credential(vault, "deploy-key", type_="ssh_private_key", username=sshd_server.username,
          private_key=sshd_server.private_key_pem)
    make_credential(vault, "stranger-key", type_="ssh_private_key", username=sshd_server.username,
          private_key=sshd_server.unauthorized_key_pem)
    assert sync(vault, add_source(vault, url=url, credential_id="deploy-key"))["added"] == 1
    with pytest.raises(WorkbenchError) as info:
        sync(vault, add_source(vault, url=url, credential_id="stranger-key", name="other"))
    assert "Permission denied" in str(info.value)
    on_disk = files_under(Path(vault.settings.instance))
    for pem in (sshd_server.private_key_pem, sshd_server.unauthorized_key_pem):
        assert pem.splitlines()[1].encode() not in on_disk


def test_a_deleted_clone_credential_is_a_clear_sync_error(vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    make_credential(vault, "gone-login", username="u", password="p")
    sid = add_source(vault, url=local_repo.url, credential_id="gone-login")
    with vault.factory.begin() as s:
        refs = credentials.delete_credential(s, SYSTEM, workspace="default",
                                             cred_id="gone-login", force=True)
    assert [(r["source"], r["step"]) for r in refs] == [("repo", "clone")]
    with pytest.raises(WorkbenchError) as info:
        sync(vault, sid)
    assert "clone credential 'gone-login' does not exist" in str(info.value)
    with vault.factory() as s:
        assert "gone-login" in sources.list_sources(s, "default")[0]["error"]


def _git_processes_of(clone: Path) -> list[bytes]:
    """Command lines of git processes still working in a source's clone."""
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(p / "cwd").startswith(str(clone)):
                out.append((p / "cmdline").read_bytes())
        except OSError:
            pass
    return out


def test_a_remote_that_never_answers_fails_the_sync_after_the_timeout(vault, git_http_server):
    server = git_http_server
    url = server.create_repo(unique_name("hang"), {"pipelines/a.yaml": pipeline_yaml("a", {})})
    make_credential(vault, "hang-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, credential_id="hang-login", name="hang")
    vault.settings.git_timeout = 2
    server.release.clear()
    server.hold.set()  # the server takes the authenticated request and never answers it
    started = time.monotonic()
    try:
        with pytest.raises(WorkbenchError) as err:
            sync(vault, sid)
    finally:
        took = time.monotonic() - started
        server.hold.clear()
        server.release.set()
    assert took < 20  # the server would hold it for 30 s; without a timeout, forever
    assert err.value.message == ("sync of source 'hang' failed: the fetch did not finish "
                                 "within 2 s (WORKBENCH_GIT_TIMEOUT)")
    clone = Path(vault.settings.instance) / "sources" / str(sid)
    assert not _git_processes_of(clone)  # git and git-remote-http were both stopped
    with vault.factory() as s:
        assert sources.list_sources(s, "default")[0]["error"] == err.value.message
        failed = audit.query(s, action="source.sync", outcome="failed")
    assert failed and failed[0].details["error"] == err.value.message
    server.release.clear()
    assert sync(vault, sid)["added"] == 1  # the next sync, with the remote back, just works


def test_a_bad_git_timeout_setting_stops_with_a_clear_message():
    from workbench.config import Settings
    from workbench.errors import ConfigError
    for bad in ("soon", "0", "-5"):
        with pytest.raises(ConfigError, match="WORKBENCH_GIT_TIMEOUT must be a number"):
            Settings.from_env({"WORKBENCH_GIT_TIMEOUT": bad})
    assert Settings.from_env({"WORKBENCH_GIT_TIMEOUT": "2.5"}).git_timeout == 2.5
    assert Settings.from_env({}).git_timeout == 300


def test_the_api_can_start_a_sync_in_the_background(api_as, vault, git_http_server, job_worker):
    server = git_http_server
    url = server.create_repo(unique_name("bg"), {"pipelines/a.yaml": pipeline_yaml("a", {})})
    make_credential(vault, "bg-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, credential_id="bg-login", name="bg")
    editor = api_as("editor")
    assert api_as("viewer").post(f"/pipeline-sources/{sid}/sync?wait=false").status_code == 403
    server.release.clear()
    server.hold.set()  # the remote takes the fetch and answers only when released
    try:
        started = time.monotonic()
        resp = editor.post(f"/pipeline-sources/{sid}/sync?wait=false")
        assert resp.status_code == 202 and time.monotonic() - started < 10
        assert resp.get_json() == {"source": sid, "syncing": True}
        listed = editor.get("/pipeline-sources").get_json()["items"][0]
        assert (listed["syncing"], listed["commit"]) == (True, None)
        again = editor.post(f"/pipeline-sources/{sid}/sync?wait=false")
        assert again.status_code == 409
        assert again.get_json()["error"]["message"] == "a sync of source 'bg' is already running"
    finally:
        server.hold.clear()
        server.release.set()
    deadline = time.monotonic() + 30
    while editor.get("/pipeline-sources").get_json()["items"][0]["syncing"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    listed = editor.get("/pipeline-sources").get_json()["items"][0]
    assert listed["commit"] and listed["pipelines"] == 1 and listed["error"] is None
    with vault.factory() as s:
        # the viewer's refusal, then the one sync (the refused second start started nothing)
        assert [e.outcome for e in audit.query(s, action="source.sync")] == ["ok", "denied"]


def test_a_server_killed_mid_sync_leaves_no_git_process_waiting_on_the_remote(
        vault, git_http_server):
    import signal
    import subprocess
    import sys
    server = git_http_server
    url = server.create_repo(unique_name("orphan"), {"pipelines/a.yaml": pipeline_yaml("a", {})})
    make_credential(vault, "orphan-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, credential_id="orphan-login", name="orphan")
    env = {**os.environ, "WORKBENCH_INSTANCE": str(vault.settings.instance),
           "WORKBENCH_DATABASE_URL": vault.settings.database_url,
           "WORKBENCH_MASTER_KEY": vault.settings.master_key, "WORKBENCH_GIT_TIMEOUT": "10"}
    code = ("import sys; from workbench import sources; from workbench.audit import SYSTEM; "
            "from workbench.config import Settings; from workbench.vault import Vault; "
            "v = Vault(Settings.from_env()).open(); "
            f"sources.sync_source(v.factory, v, SYSTEM, {sid})")
    server.release.clear()
    server.held.clear()
    server.hold.set()  # git's request reaches the remote, which never answers it
    clone = Path(vault.settings.instance) / "sources" / str(sid)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=False)
    try:
        assert server.held.wait(30)
        assert _git_processes_of(clone)
        proc.send_signal(signal.SIGKILL)  # the server dies: its kill-after-timeout thread too
        proc.wait(10)
        # git gives up 15 s after its request (GIT_HTTP_LOW_SPEED_TIME: the timeout + 5);
        # the remote would answer it after 30 s, which must not be what ends it
        deadline = time.monotonic() + 25
        while _git_processes_of(clone) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _git_processes_of(clone)  # git gave up on the silent remote by itself
    finally:
        server.hold.clear()
        server.release.set()
        server.held.clear()
