"""Pipeline sources: sync from real git repositories and folders, incremental re-sync, the API."""
from __future__ import annotations

import threading

import pytest

from tests.fixtures.pipeline_repo import (add_source, make_credential, pipeline_yaml,
                                          pipelines_by_path, refs_of, sync)
from tests.fixtures.vault import add_scopes
from workbench import audit, credentials, references as idx, sources
from workbench.audit import SYSTEM
from workbench.errors import PermissionDenied
from workbench.models import AuditEvent


def test_sync_from_a_local_repository_indexes_matching_files_at_their_commit(vault, local_repo):
    head = local_repo.commit({
        "pipelines/build.yaml": pipeline_yaml("build", {"compile": ["git-creds"],
                                                        "push": ["registry@2"]},
                                              pull={"push": "registry"}),
        "pipelines/deploy.yaml": pipeline_yaml("deploy", {"apply": ["kube"]}),
        "pipelines/nested/skip.yaml": pipeline_yaml("nested", {"x": ["kube"]}),
        "README.md": "not a pipeline"})
    sid = add_source(vault, url=local_repo.url)
    result = sync(vault, sid)
    assert result["commit"] == head and result["added"] == 2 and result["errors"] == 0
    got = pipelines_by_path(vault)
    assert sorted(got) == ["pipelines/build.yaml", "pipelines/deploy.yaml"]
    assert {p["commit"] for p in got.values()} == {head}
    assert refs_of(vault, "registry") == [("build", "push", None), ("build", "push", 2)]
    assert refs_of(vault, "kube") == [("deploy", "apply", None)]
    with vault.factory() as s:
        assert sources.list_sources(s, "default")[0]["commit"] == head


def test_resync_reads_only_added_changed_removed_and_renamed_files(vault, local_repo):
    first = local_repo.commit({f"pipelines/p{i}.yaml": pipeline_yaml(f"p{i}", {"s": [f"c{i}"]})
                               for i in range(6)})
    sid = add_source(vault, url=local_repo.url)
    assert sync(vault, sid)["added"] == 6
    assert sync(vault, sid)["parsed"] == 0  # nothing new upstream: nothing read
    second = local_repo.commit(
        {"pipelines/p0.yaml": pipeline_yaml("p0", {"s": ["c0", "new-cred"]}),
         # big enough that git does not pair it with the deleted p1 as a rename
         "pipelines/p9.yaml": pipeline_yaml("p9", {f"step{i}": [f"c9-{i}"] for i in range(9)}),
         "docs/readme.md": "ignored"},
        delete=["pipelines/p1.yaml"], rename={"pipelines/p2.yaml": "pipelines/renamed.yaml"})
    result = sync(vault, sid)
    assert {k: result[k] for k in ("added", "changed", "removed", "renamed", "parsed", "full")} \
        == {"added": 1, "changed": 1, "removed": 1, "renamed": 1, "parsed": 3, "full": False}
    got = pipelines_by_path(vault)
    assert sorted(got) == ["pipelines/p0.yaml", "pipelines/p3.yaml", "pipelines/p4.yaml",
                           "pipelines/p5.yaml", "pipelines/p9.yaml", "pipelines/renamed.yaml"]
    assert got["pipelines/p3.yaml"]["commit"] == first  # untouched: still as read before
    assert got["pipelines/p0.yaml"]["commit"] == second
    assert refs_of(vault, "new-cred") == [("p0", "s", None)]
    assert refs_of(vault, "c1") == []
    with vault.factory() as s:
        refs = idx.find_references(s, "default", "c2")
    assert [r["path"] for r in refs] == ["pipelines/renamed.yaml"]


def test_a_broken_file_is_stored_with_its_error_and_the_others_index(vault, local_repo):
    local_repo.commit({"pipelines/good.yaml": pipeline_yaml("good", {"s": ["tok"]}),
                       "pipelines/bad.yaml": "name: bad\nsteps:\n  - name: [unclosed\n",
                       "pipelines/typo.yaml": "name: typo\nstep: []\n"})
    sid = add_source(vault, url=local_repo.url)
    result = sync(vault, sid)
    assert result["errors"] == 2 and result["pipelines"] == 3
    got = pipelines_by_path(vault)
    assert got["pipelines/good.yaml"]["error"] is None
    assert got["pipelines/bad.yaml"]["error"].startswith("pipelines/bad.yaml:")
    assert "YAML syntax error" in got["pipelines/bad.yaml"]["error"]
    assert "did you mean 'steps'" in got["pipelines/typo.yaml"]["error"]
    assert got["pipelines/typo.yaml"]["error_line"] == 2
    assert refs_of(vault, "tok") == [("good", "s", None)]
    local_repo.commit({"pipelines/bad.yaml": pipeline_yaml("bad", {"s": ["tok"]})})
    assert sync(vault, sid)["errors"] == 0
    assert pipelines_by_path(vault)["pipelines/bad.yaml"]["error"] is None
    assert refs_of(vault, "tok") == [("bad", "s", None), ("good", "s", None)]
    # a file that parsed before and breaks now keeps its last references, marked stale
    local_repo.commit({"pipelines/good.yaml": "name: good\nsteps: [\n"})
    assert sync(vault, sid)["errors"] == 1
    assert pipelines_by_path(vault)["pipelines/good.yaml"]["error"]
    with vault.factory() as s:
        refs = credentials.references(s, "default", "tok")
    assert [(r["pipeline"], r["stale"]) for r in refs] == [("bad", False), ("good", True)]


def test_a_local_folder_source_resyncs_changed_files(vault, tmp_path):
    folder = tmp_path / "work"
    (folder / "pipelines").mkdir(parents=True)
    (folder / "pipelines" / "a.yaml").write_text(pipeline_yaml("a", {"s": ["one"]}))
    (folder / "pipelines" / "b.yaml").write_text(pipeline_yaml("b", {"s": ["one"]}))
    sid = add_source(vault, kind="local", url=str(folder), name="local")
    assert sync(vault, sid)["added"] == 2
    (folder / "pipelines" / "a.yaml").write_text(pipeline_yaml("a", {"s": ["two"]}))
    (folder / "pipelines" / "b.yaml").unlink()
    result = sync(vault, sid)
    assert (result["changed"], result["removed"], result["parsed"]) == (1, 1, 1)
    assert refs_of(vault, "two") == [("a", "s", None)] and refs_of(vault, "one") == []


def test_viewers_cannot_add_or_sync_sources(vault, local_repo):
    viewer = audit.Actor("v", role="viewer")
    with pytest.raises(PermissionDenied), vault.factory.begin() as s:
        sources.add_source(s, viewer, "default", kind="git", url=local_repo.url, name="r")
    sid = add_source(vault, url=local_repo.url)
    with pytest.raises(PermissionDenied):
        sync(vault, sid, actor=viewer)
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


def test_sources_and_pipelines_of_another_workspace_stay_out_of_sight(api_as, vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    add_scopes(vault, "team-b")
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, "team-b", kind="git", url=local_repo.url,
                                 name="b").id
    sync(vault, sid)
    editor = api_as("editor")
    assert editor.post(f"/pipeline-sources/{sid}/sync").status_code == 404
    assert editor.get("/pipelines").get_json()["items"] == []
    assert [p["name"] for p in editor.get("/pipelines?workspace=team-b").get_json()["items"]] \
        == ["a"]
    with vault.factory() as s:
        assert credentials.references(s, "default", "x") == []


def test_concurrent_syncs_of_one_source_read_each_change_once(vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    sid = add_source(vault, url=local_repo.url)
    sync(vault, sid)
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["y"]}),
                       "pipelines/b.yaml": pipeline_yaml("b", {"s": ["y"]})})
    start, results = threading.Barrier(2), []

    def worker():
        start.wait()
        results.append(sync(vault, sid))
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r["parsed"] for r in results) == [0, 2]
    assert refs_of(vault, "y") == [("a", "s", None), ("b", "s", None)]


def test_a_sync_killed_midway_leaves_no_lock_that_stops_the_next_one(vault, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["c-a"]})})
    sid = add_source(vault, url=local_repo.url)
    assert sync(vault, sid)["added"] == 1
    # what a fetch killed by the timeout (or a kill -9 of the server) leaves behind
    clone = vault.settings.instance / "sources" / str(sid)
    (clone / "refs" / "remotes" / "origin" / "main.lock").write_text("")
    (clone / "shallow.lock").write_text("")
    local_repo.commit({"pipelines/b.yaml": pipeline_yaml("b", {"s": ["c-b"]})})
    assert sync(vault, sid)["added"] == 1
    assert refs_of(vault, "c-b") == [("b", "s", None)]
