"""The reference index: used-by, usage counts, last use, dangling references and lint."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import event

from tests.fixtures.pipeline_repo import pipeline_yaml
from tests.fixtures.vault import add_scopes
from workbench import credentials, references as idx, sources
from workbench.audit import SYSTEM
from workbench.pipeline import records

DEPLOY = """\
name: deploy
steps:
  - name: clone
    run: git clone app
    credentials:
      - id: git-login
        env: {username: GIT_USER, password: GIT_PASS}
  - name: apply
    image: registry.example/kubectl:1
    image_pull_credential: registry@2
    run: kubectl apply -f k8s/
    credentials:
      - id: prod-kube@1
        file: KUBECONFIG
      - api-token
"""


def _index(vault, repo, files: dict[str, str], workspace: str = "default") -> int:
    repo.commit(files)
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, workspace, kind="git", url=repo.url, name="r").id
    sources.sync_source(vault.factory, vault, SYSTEM, sid)
    return sid


def _cred(vault, cred_id, versions=1, workspace="default"):
    add_scopes(vault, workspace)
    with vault.factory.begin() as s:
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace=workspace,
                                      cred_id=cred_id, type="secret_text",
                                      values={"secret": "secret-value-1"})
        for n in range(2, versions + 1):
            credentials.update_credential(s, vault.barrier, SYSTEM, workspace=workspace,
                                          cred_id=cred_id, changes={"values": {"secret": f"secret-value-{n}"}})


def test_every_reference_is_indexed_with_step_pin_and_binding(vault, local_repo):
    _index(vault, local_repo, {"pipelines/deploy.yaml": DEPLOY})
    with vault.factory() as s:
        found = {c: [(r["pipeline"], r["path"], r["source"], r["step"], r["version"],
                      r["binding"]) for r in idx.find_references(s, "default", c)]
                 for c in ("git-login", "registry", "prod-kube", "api-token", "other")}
    assert found == {
        "git-login": [("deploy", "pipelines/deploy.yaml", "r", "clone", None,
                       "env username=GIT_USER,password=GIT_PASS")],
        "registry": [("deploy", "pipelines/deploy.yaml", "r", "apply", 2, "image pull")],
        "prod-kube": [("deploy", "pipelines/deploy.yaml", "r", "apply", 1, "file KUBECONFIG")],
        "api-token": [("deploy", "pipelines/deploy.yaml", "r", "apply", None, "default")],
        "other": []}


def test_usage_counts_distinct_pipelines_in_one_query(vault, local_repo):
    _index(vault, local_repo, {
        "pipelines/a.yaml": pipeline_yaml("a", {"one": ["shared", "shared@1"], "two": ["shared"]}),
        "pipelines/b.yaml": pipeline_yaml("b", {"one": ["shared", "only-b"]})})
    statements = []
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(vault.engine, "before_cursor_execute", listener)
    try:
        with vault.factory() as s:
            counts = idx.usage_counts(s, "default", ["shared", "only-b", "unused"])
    finally:
        event.remove(vault.engine, "before_cursor_execute", listener)
    assert counts == {"shared": 2, "only-b": 1, "unused": 0}
    assert len(statements) == 1


def test_a_credential_used_by_a_run_but_no_pipeline_has_a_last_use(vault, local_repo):
    _index(vault, local_repo, {"pipelines/a.yaml": pipeline_yaml("a", {"s": ["in-pipeline"]})})
    when = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    with vault.factory.begin() as s:
        records.store_run(s, "default", {
            "id": "run-1", "status": "success", "pipeline": "adhoc",
            "steps": [{"name": "exec", "status": "success"}],
            "uses": [{"step": "exec", "credential_id": "ad-hoc", "version": 1,
                      "used_at": when.isoformat()}]})
    with vault.factory() as s:
        assert idx.last_used(s, "default", ["ad-hoc", "in-pipeline"]) == {
            "ad-hoc": when, "in-pipeline": None}
        assert idx.usage_counts(s, "default", ["ad-hoc"]) == {"ad-hoc": 0}
        assert idx.last_used(s, "other-ws", ["ad-hoc"]) == {"ad-hoc": None}


def test_dangling_references_are_unknown_ids_and_missing_pinned_versions(vault, local_repo):
    _cred(vault, "kept", versions=3)
    _cred(vault, "elsewhere", workspace="other")
    _index(vault, local_repo, {
        "pipelines/ok.yaml": pipeline_yaml("ok", {"s": ["kept", "kept@3"]}),
        "pipelines/bad.yaml": pipeline_yaml("bad", {"s": ["kept@1", "nope", "elsewhere"],
                                                    "t": ["kept@7"]})})

    def reasons():
        with vault.factory() as s:
            return [(d["pipeline"], d["step"], d["credential_id"], d["version"], d["reason"])
                    for d in idx.dangling(s, "default")]
    assert reasons() == [("bad", "s", "nope", None, "credential does not exist"),
                         ("bad", "s", "elsewhere", None, "credential does not exist"),
                         ("bad", "t", "kept", 7, "version 7 does not exist")]
    with vault.factory.begin() as s:  # pruning the pinned version 1 (forced) makes it dangle
        credentials.prune_versions(s, SYSTEM, workspace="default", cred_id="kept", keep=2,
                                   force=True)
    assert ("bad", "s", "kept", 1, "version 1 does not exist") in reasons()
    with vault.factory() as s:
        listed = {p["name"]: p["dangling"] for p in idx.list_pipelines(s, "default")}
        bad_id = next(p["id"] for p in idx.list_pipelines(s, "default") if p["name"] == "bad")
        page = idx.get_pipeline(s, "default", bad_id)
    assert listed == {"bad": 4, "ok": 0}
    assert [(st["name"], [(c["credential_id"], c["dangling"]) for c in st["credentials"]])
            for st in page["steps"]] == [
        ("s", [("kept", True), ("nope", True), ("elsewhere", True)]), ("t", [("kept", True)])]
    _cred(vault, "nope")  # the check is live: creating the credential resolves it
    assert ("bad", "s", "nope", None, "credential does not exist") not in reasons()


def test_lint_exits_non_zero_on_dangling_references_and_zero_when_clean(vault, local_repo,
                                                                          wb_cli):
    _cred(vault, "present", versions=2)
    sid = _index(vault, local_repo, {
        "pipelines/a.yaml": pipeline_yaml("a", {"build": ["present", "missing-cred"]})})
    code, out, _ = wb_cli("pipeline", "lint")
    assert code == 1
    assert "pipelines/a.yaml:" in out and "step build: unknown credential 'missing-cred'" in out
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"build": ["present@2"]})})
    code, out, _ = wb_cli("pipeline", "source", "sync", str(sid))
    assert code == 0 and "1 changed" in out
    code, out, _ = wb_cli("pipeline", "lint")
    assert (code, out.strip()) == (0, "no problems: every reference resolves and fits, "
                                      "every pipeline parses")
    local_repo.commit({"pipelines/broken.yaml": "steps: [\n"})
    wb_cli("pipeline", "source", "sync", "r")
    code, out, _ = wb_cli("pipeline", "lint")
    assert code == 1 and "pipelines/broken.yaml" in out


def test_sources_are_added_synced_and_listed_from_the_cli(vault, local_repo, wb_cli):
    local_repo.commit({"ci/a.yaml": pipeline_yaml("a", {"s": ["x"]})})
    code, out, err = wb_cli("pipeline", "source", "add", "ci", "--url", local_repo.url,
                            "--glob", "ci/*.yaml", "--sync")
    assert code == 0, err
    assert "added source ci" in out and "1 added" in out
    code, out, _ = wb_cli("pipeline", "source", "list")
    assert code == 0 and "ci" in out and local_repo.url in out and "syncing" not in out
    from workbench import sourcelock
    with vault.factory() as s:
        sid = sources.list_sources(s, "default")[0]["id"]
    with sourcelock.hold(vault, sid):  # as a running sync holds it
        code, out, _ = wb_cli("pipeline", "source", "list", "--json")
        assert json.loads(out)["items"][0]["syncing"] is True
        assert "syncing…" in wb_cli("pipeline", "source", "list")[1]
    assert wb_cli("pipeline", "source", "remove", "ci", input="n\n")[0] != 0
    code, out, _ = wb_cli("pipeline", "source", "remove", "ci", "--yes")
    assert (code, out.strip()) == (0, "removed source ci (1 pipelines)")
    with vault.factory() as s:
        assert sources.list_sources(s, "default") == []


def test_lint_checks_files_on_disk_against_the_vault(vault, tmp_path, wb_cli):
    _cred(vault, "present", versions=2)
    good = tmp_path / "good.yaml"
    good.write_text(pipeline_yaml("good", {"s": ["present"], "t": ["present@2"]}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(pipeline_yaml("bad", {"s": ["present@5"], "t": ["absent", "presnt"],
                                         "u": ["{id: present, env: {username: U}}"],
                                         "v": ["present", "present@2"]},
                                 pull={"t": "present"}))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsteps: [\n")
    assert wb_cli("pipeline", "lint", str(good))[:2] == (
        0, "no problems: every reference resolves and fits, every pipeline parses\n")
    code, out, _ = wb_cli("pipeline", "lint", str(good), str(bad), str(broken))
    assert code == 1
    assert f"{bad}:6: step s: credential 'present' has no version 5" in out
    assert "step t: unknown credential 'absent'\n" in out
    assert "step t: unknown credential 'presnt'; did you mean 'present'?" in out
    # what `run` refuses once every reference resolves: a binding that does not fit the type,
    # a variable bound twice; each in run's own words and file:line
    assert (f"{bad}:17: step u: credential present (secret_text): secret_text credentials "
            "have no bindable field 'username'") in out
    assert f"{bad}:22: step v: credential present@2 (secret_text): PRESENT is bound twice" in out
    assert f"{broken}:" in out and "YAML syntax error" in out
    assert "good" not in out.replace(str(good), "")


def test_the_credentials_table_sorts_by_used_by_within_each_workspace(vault, local_repo):
    for cid in ("shared", "only-b", "unused"):
        _cred(vault, cid)
    for cid in ("shared", "lonely"):
        _cred(vault, cid, workspace="other")
    _index(vault, local_repo, {"pipelines/c.yaml": pipeline_yaml("c", {"one": ["lonely"]})},
           workspace="other")
    _index(vault, local_repo, {
        "pipelines/a.yaml": pipeline_yaml("a", {"one": ["shared"], "two": ["shared"]}),
        "pipelines/b.yaml": pipeline_yaml("b", {"one": ["shared", "only-b"]})})
    with vault.factory() as s:
        def order(sort, workspace="default"):
            rows, _ = credentials.list_credentials(s, workspace=workspace, sort=sort)
            return [c.cred_id for c in rows]
        assert order("-used_by") == ["shared", "only-b", "unused"]
        assert order("used_by") == ["unused", "only-b", "shared"]
        # "shared" has two pipelines in default and none in other
        assert order("-used_by", "other") == ["lonely", "shared"]


def test_all_workspaces_sort_by_workspace_name(vault):
    _cred(vault, "in-zeta", workspace="zeta")
    _cred(vault, "in-alpha", workspace="alpha")
    with vault.factory() as s:
        for sort, want in (("workspace", ["in-alpha", "in-zeta"]),
                           ("-workspace", ["in-zeta", "in-alpha"])):
            rows, total = credentials.list_credentials(s, workspace=None, sort=sort)
            assert [c.cred_id for c in rows] == want and total == 2
