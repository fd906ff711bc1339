"""Pipeline sources: sync from real git repositories (local and over HTTP with a credential)."""
from __future__ import annotations

from pathlib import Path

import threading
import uuid

import pytest

from tests.fixtures.pipeline_repo import pipeline_yaml
from workbench import audit, credentials, references as idx, sources
from workbench.audit import SYSTEM
from workbench.errors import PermissionDenied, ValidationError, WorkbenchError
from workbench.models import AuditEvent


def _add(vault, **kw) -> int:
    kw.setdefault("kind", "git")
    kw.setdefault("name", "repo")
    with vault.factory.begin() as s:
        return sources.add_source(s, SYSTEM, "default", **kw).id


def _sync(vault, source_id, actor=SYSTEM) -> dict:
    return sources.sync_source(vault.factory, vault, actor, source_id)


def _pipelines(vault) -> dict[str, dict]:
    with vault.factory() as s:
        return {p["path"]: p for p in idx.list_pipelines(s, "default")}


def _refs(vault, cred_id) -> list[tuple]:
    with vault.factory() as s:
        return [(r["pipeline"], r["step"], r["version"])
                for r in idx.find_references(s, "default", cred_id)]


def _cred(vault, cred_id, type_="username_password", **values):
    with vault.factory.begin() as s:
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                      cred_id=cred_id, type=type_, values=values)


def _unique(name: str) -> str:
    """Repository names on the session-wide git server must not repeat across backends."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _files_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


def test_sync_from_a_local_repository_indexes_matching_files_at_their_commit(vault, local_repo):
    head = local_repo.commit({
        "pipelines/build.yaml": pipeline_yaml("build", {"compile": ["git-creds"],
                                                        "push": ["registry@2"]},
                                              pull={"push": "registry"}),
        "pipelines/deploy.yaml": pipeline_yaml("deploy", {"apply": ["kube"]}),
        "pipelines/nested/skip.yaml": pipeline_yaml("nested", {"x": ["kube"]}),
        "README.md": "not a pipeline"})
    sid = _add(vault, url=local_repo.url)
    result = _sync(vault, sid)
    assert result["commit"] == head and result["added"] == 2 and result["errors"] == 0
    got = _pipelines(vault)
    assert sorted(got) == ["pipelines/build.yaml", "pipelines/deploy.yaml"]
    assert {p["commit"] for p in got.values()} == {head}
    assert _refs(vault, "registry") == [("build", "push", None), ("build", "push", 2)]
    assert _refs(vault, "kube") == [("deploy", "apply", None)]
    with vault.factory() as s:
        assert sources.list_sources(s, "default")[0]["commit"] == head


def test_resync_reads_only_added_changed_removed_and_renamed_files(vault, local_repo):
    first = local_repo.commit({f"pipelines/p{i}.yaml": pipeline_yaml(f"p{i}", {"s": [f"c{i}"]})
                               for i in range(6)})
    sid = _add(vault, url=local_repo.url)
    assert _sync(vault, sid)["added"] == 6
    assert _sync(vault, sid)["parsed"] == 0  # nothing new upstream: nothing read
    second = local_repo.commit(
        {"pipelines/p0.yaml": pipeline_yaml("p0", {"s": ["c0", "new-cred"]}),
         # big enough that git does not pair it with the deleted p1 as a rename
         "pipelines/p9.yaml": pipeline_yaml("p9", {f"step{i}": [f"c9-{i}"] for i in range(9)}),
         "docs/readme.md": "ignored"},
        delete=["pipelines/p1.yaml"], rename={"pipelines/p2.yaml": "pipelines/renamed.yaml"})
    result = _sync(vault, sid)
    assert {k: result[k] for k in ("added", "changed", "removed", "renamed", "parsed", "full")} \
        == {"added": 1, "changed": 1, "removed": 1, "renamed": 1, "parsed": 3, "full": False}
    got = _pipelines(vault)
    assert sorted(got) == ["pipelines/p0.yaml", "pipelines/p3.yaml", "pipelines/p4.yaml",
                           "pipelines/p5.yaml", "pipelines/p9.yaml", "pipelines/renamed.yaml"]
    assert got["pipelines/p3.yaml"]["commit"] == first  # untouched: still as read before
    assert got["pipelines/p0.yaml"]["commit"] == second
    assert _refs(vault, "new-cred") == [("p0", "s", None)]
    assert _refs(vault, "c1") == []
    with vault.factory() as s:
        refs = idx.find_references(s, "default", "c2")
    assert [r["path"] for r in refs] == ["pipelines/renamed.yaml"]


def test_a_broken_file_is_stored_with_its_error_and_the_others_index(vault, local_repo):
    local_repo.commit({"pipelines/good.yaml": pipeline_yaml("good", {"s": ["tok"]}),
                       "pipelines/bad.yaml": "name: bad\nsteps:\n  - name: [unclosed\n",
                       "pipelines/typo.yaml": "name: typo\nstep: []\n"})
    sid = _add(vault, url=local_repo.url)
    result = _sync(vault, sid)
    assert result["errors"] == 2 and result["pipelines"] == 3
    got = _pipelines(vault)
    assert got["pipelines/good.yaml"]["error"] is None
    assert got["pipelines/bad.yaml"]["error"].startswith("pipelines/bad.yaml:")
    assert "YAML syntax error" in got["pipelines/bad.yaml"]["error"]
    assert "did you mean 'steps'" in got["pipelines/typo.yaml"]["error"]
    assert got["pipelines/typo.yaml"]["error_line"] == 2
    assert _refs(vault, "tok") == [("good", "s", None)]
    local_repo.commit({"pipelines/bad.yaml": pipeline_yaml("bad", {"s": ["tok"]})})
    assert _sync(vault, sid)["errors"] == 0
    assert _pipelines(vault)["pipelines/bad.yaml"]["error"] is None
    assert _refs(vault, "tok") == [("bad", "s", None), ("good", "s", None)]
    # a file that parsed before and breaks now keeps its last references, marked stale
    local_repo.commit({"pipelines/good.yaml": "name: good\nsteps: [\n"})
    assert _sync(vault, sid)["errors"] == 1
    assert _pipelines(vault)["pipelines/good.yaml"]["error"]
    with vault.factory() as s:
        refs = credentials.references(s, "default", "tok")
    assert [(r["pipeline"], r["stale"]) for r in refs] == [("bad", False), ("good", True)]


def test_sync_over_http_with_a_password_credential_keeps_it_off_disk(vault, git_http_server):
    server = git_http_server
    repo = _unique("team-pipelines")
    url = server.create_repo(repo, {
        "ci/app.yaml": pipeline_yaml("app", {"test": ["db-pass"]})})
    _cred(vault, "git-login", username=server.username, password=server.password)
    sid = _add(vault, url=url, path_glob="ci/*.yaml", credential_id="git-login", name="team")
    assert _sync(vault, sid)["added"] == 1
    server.commit(repo, {"ci/web.yaml": pipeline_yaml("web", {"e2e": ["db-pass"]})})
    result = _sync(vault, sid)
    assert (result["added"], result["parsed"], result["full"]) == (1, 1, False)
    assert _refs(vault, "db-pass") == [("app", "test", None), ("web", "e2e", None)]
    clone = Path(vault.settings.instance) / "sources" / str(sid)
    assert (clone / "config").exists()
    on_disk = _files_under(Path(vault.settings.instance))
    assert server.password.encode() not in on_disk
    with vault.factory() as s:
        events = audit.query(s, target="git-login", action="credential.resolve")
    assert len(events) == 2 and events[0].actor == SYSTEM.label
    assert events[0].details["source"] == "team"
    # the clone credential is itself a reference: deleting it would stop the sync
    with vault.factory() as s:
        assert [r["kind"] for r in credentials.references(s, "default", "git-login")] == ["source"]


def _cmdlines() -> list[bytes]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes())
        except OSError:  # the process ended meanwhile
            pass
    return out


def test_the_password_is_in_no_command_line_while_git_fetches(vault, git_http_server):
    server = git_http_server
    url = server.create_repo(_unique("argv"),
                             {"pipelines/a.yaml": pipeline_yaml("a", {"s": []})})
    _cred(vault, "argv-login", username=server.username, password=server.password)
    sid = _add(vault, url=url, credential_id="argv-login")
    results: list = []
    server.held.clear()
    server.release.clear()
    server.hold.set()  # park git's authenticated request, so its processes can be looked at
    worker = threading.Thread(target=lambda: results.append(_sync(vault, sid)))
    worker.start()
    try:
        assert server.held.wait(30)
        cmdlines = _cmdlines()
    finally:
        server.hold.clear()
        server.release.set()
        worker.join(60)
        server.held.clear()
        server.release.clear()
    assert any(b"remote-http" in c for c in cmdlines)  # we did look while git was running
    assert not [c for c in cmdlines if server.password.encode() in c]
    assert results and results[0]["added"] == 1


def test_a_secret_text_token_clones_too(vault, git_http_server):
    url = git_http_server.create_repo(_unique("token-repo"), {
        "pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    _cred(vault, "git-token", type_="secret_text", secret=git_http_server.token)
    sid = _add(vault, url=url, credential_id="git-token")
    assert _sync(vault, sid)["added"] == 1


def test_a_wrong_password_fails_clearly_without_showing_it(vault, git_http_server, api_as):
    url = git_http_server.create_repo(_unique("locked"), {"pipelines/a.yaml": "name: a\n"})
    wrong = "not-the-" + git_http_server.password
    _cred(vault, "bad-login", username=git_http_server.username, password=wrong)
    sid = _add(vault, url=url, credential_id="bad-login")
    with pytest.raises(WorkbenchError) as info:
        _sync(vault, sid)
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
    assert wrong.encode() not in _files_under(Path(vault.settings.instance))


def test_a_url_with_credentials_in_it_is_refused(vault):
    with pytest.raises(ValidationError) as info:
        _add(vault, url="https://alice:hunter22@git.example/x.git")
    assert info.value.field == "url" and "hunter22" not in str(info.value)


def test_a_local_folder_source_resyncs_changed_files(vault, tmp_path):
    folder = tmp_path / "work"
    (folder / "pipelines").mkdir(parents=True)
    (folder / "pipelines" / "a.yaml").write_text(pipeline_yaml("a", {"s": ["one"]}))
    (folder / "pipelines" / "b.yaml").write_text(pipeline_yaml("b", {"s": ["one"]}))
    sid = _add(vault, kind="local", url=str(folder), name="local")
    assert _sync(vault, sid)["added"] == 2
    (folder / "pipelines" / "a.yaml").write_text(pipeline_yaml("a", {"s": ["two"]}))
    (folder / "pipelines" / "b.yaml").unlink()
    result = _sync(vault, sid)
    assert (result["changed"], result["removed"], result["parsed"]) == (1, 1, 1)
    assert _refs(vault, "two") == [("a", "s", None)] and _refs(vault, "one") == []


def test_viewers_cannot_add_or_sync_sources(vault, local_repo):
    viewer = audit.Actor("v", role="viewer")
    with pytest.raises(PermissionDenied), vault.factory.begin() as s:
        sources.add_source(s, viewer, "default", kind="git", url=local_repo.url, name="r")
    sid = _add(vault, url=local_repo.url)
    with pytest.raises(PermissionDenied):
        _sync(vault, sid, actor=viewer)
    with vault.factory() as s:
        assert s.query(AuditEvent).filter_by(action="source.sync", outcome="denied").count() == 1


def test_sources_and_pipelines_over_the_api(api_as, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"build": ["tok", "gone@3"]})})
    admin, editor, viewer = api_as("admin"), api_as("editor"), api_as("viewer")
    body = {"name": "main-repo", "kind": "git", "url": local_repo.url}
    assert viewer.post("/pipeline-sources", json=body).status_code == 403
    # a file:// URL reads the server's own disk: admins only
    assert editor.post("/pipeline-sources", json=body).status_code == 403
    created = admin.post("/pipeline-sources", json=body)
    assert created.status_code == 201, created.get_json()
    sid = created.get_json()["id"]
    assert admin.post("/pipeline-sources", json=body).status_code == 409
    assert editor.post("/pipeline-sources", json={
        "name": "x", "url": "ext::sh -c id"}).get_json()["error"]["details"]["field"] == "url"
    synced = editor.post(f"/pipeline-sources/{sid}/sync")
    assert synced.status_code == 200 and synced.get_json()["added"] == 1
    listed = viewer.get("/pipeline-sources").get_json()["items"]
    assert [(i["name"], i["pipelines"]) for i in listed] == [("main-repo", 1)]
    pipes = viewer.get("/pipelines").get_json()["items"]
    assert [(p["name"], p["dangling"]) for p in pipes] == [("a", 2)]
    one = viewer.get(f"/pipelines/{pipes[0]['id']}").get_json()
    assert [(c["credential_id"], c["version"], c["dangling"])
            for c in one["steps"][0]["credentials"]] == [("tok", None, True), ("gone", 3, True)]
    assert viewer.get("/pipelines/999999").status_code == 404
    assert [d["credential_id"] for d in viewer.get("/pipelines/dangling").get_json()["items"]] \
        == ["tok", "gone"]


def test_sync_over_ssh_with_a_private_key_leaves_no_key_file(vault, sshd_server, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    url = f"ssh://{sshd_server.host}:{sshd_server.port}{local_repo.path}"
    _cred(vault, "deploy-key", type_="ssh_private_key", username=sshd_server.username,
          private_key=sshd_server.private_key_pem)
    _cred(vault, "stranger-key", type_="ssh_private_key", username=sshd_server.username,
          private_key=sshd_server.unauthorized_key_pem)
    assert _sync(vault, _add(vault, url=url, credential_id="deploy-key"))["added"] == 1
    with pytest.raises(WorkbenchError) as info:
        _sync(vault, _add(vault, url=url, credential_id="stranger-key", name="other"))
    assert "Permission denied" in str(info.value)
    on_disk = _files_under(Path(vault.settings.instance))
    for pem in (sshd_server.private_key_pem, sshd_server.unauthorized_key_pem):
        assert pem.splitlines()[1].encode() not in on_disk


@pytest.mark.parametrize("glob, path, expected", [
    ("pipelines/*.yaml", "pipelines/a.yaml", True),
    ("pipelines/*.yaml", "pipelines/sub/a.yaml", False),  # * stays in one folder
    ("pipelines/*.yaml", "other/pipelines/a.yaml", False),  # anchored at the root
    ("**/*.yaml", "a.yaml", True),
    ("**/*.yaml", "deep/er/a.yaml", True),
    ("ci/*.y[a]ml", "ci/a.yml", False),
    ("ci/?.yaml", "ci/ab.yaml", False),
])
def test_path_globs_match_like_a_shell(glob, path, expected):
    assert sources.gitsource.matcher(glob)(path) is expected


def test_a_deleted_clone_credential_is_a_clear_sync_error(vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    _cred(vault, "gone-login", username="u", password="p")
    sid = _add(vault, url=local_repo.url, credential_id="gone-login")
    with vault.factory.begin() as s:
        refs = credentials.delete_credential(s, SYSTEM, workspace="default",
                                             cred_id="gone-login", force=True)
    assert [(r["source"], r["step"]) for r in refs] == [("repo", "clone")]
    with pytest.raises(WorkbenchError) as info:
        _sync(vault, sid)
    assert "clone credential 'gone-login' does not exist" in str(info.value)
    with vault.factory() as s:
        assert "gone-login" in sources.list_sources(s, "default")[0]["error"]


def test_sources_and_pipelines_of_another_workspace_stay_out_of_sight(api_as, vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, "team-b", kind="git", url=local_repo.url,
                                 name="b").id
    _sync(vault, sid)
    editor = api_as("editor")
    assert editor.post(f"/pipeline-sources/{sid}/sync").status_code == 404
    assert editor.get("/pipelines").get_json()["items"] == []
    assert [p["name"] for p in editor.get("/pipelines?workspace=team-b").get_json()["items"]] \
        == ["a"]
    with vault.factory() as s:
        assert credentials.references(s, "default", "x") == []


def test_concurrent_syncs_of_one_source_read_each_change_once(vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    sid = _add(vault, url=local_repo.url)
    _sync(vault, sid)
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["y"]}),
                       "pipelines/b.yaml": pipeline_yaml("b", {"s": ["y"]})})
    start, results = threading.Barrier(2), []

    def worker():
        start.wait()
        results.append(_sync(vault, sid))
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r["parsed"] for r in results) == [0, 2]
    assert _refs(vault, "y") == [("a", "s", None), ("b", "s", None)]
