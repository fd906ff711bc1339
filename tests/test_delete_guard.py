"""Breaking changes to referenced credentials: delete, type change and prune warn with the list."""
from __future__ import annotations

import pytest

from tests.fixtures.pipeline_repo import pipeline_yaml
from workbench import audit, credentials, sources
from workbench.audit import SYSTEM

EXPECTED = [  # (pipeline, path, step, version, binding) in index order
    ("build", "pipelines/build.yaml", "compile", None, "default"),
    ("build", "pipelines/build.yaml", "release", 1, "default"),
    ("deploy", "pipelines/deploy.yaml", "apply", None, "image pull")]


@pytest.fixture
def indexed(vault, local_repo):
    """Credential ``shared`` (3 versions) used by two pipelines, ``loner`` by none."""
    with vault.factory.begin() as s:
        for cid in ("shared", "loner", "other"):
            credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                          cred_id=cid, type="secret_text",
                                          values={"secret": "s1"})
        for n in (2, 3):
            credentials.update_credential(s, vault.barrier, SYSTEM, workspace="default",
                                          cred_id="shared", changes={"values": {"secret": f"s{n}"}})
    local_repo.commit({
        "pipelines/build.yaml": pipeline_yaml("build", {"compile": ["shared"],
                                                        "release": ["shared@1", "other"]}),
        "pipelines/deploy.yaml": pipeline_yaml("deploy", {"apply": []}, pull={"apply": "shared"})})
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, "default", kind="git", url=local_repo.url,
                                 name="r").id
    sources.sync_source(vault.factory, vault, SYSTEM, sid)
    return sid


def _listed(refs) -> list[tuple]:
    return [(r["pipeline"], r["path"], r["step"], r["version"], r["binding"]) for r in refs]


def _exists(api, cred_id) -> bool:
    return api.get(f"/credentials/{cred_id}").status_code == 200


def test_deleting_a_referenced_credential_answers_409_with_every_step(api_as, vault, indexed):
    editor = api_as("editor")
    resp = editor.delete("/credentials/shared")
    assert resp.status_code == 409
    err = resp.get_json()["error"]
    assert err["code"] == "in_use" and "3 reference(s) in 2 pipeline(s)" in err["message"]
    assert _listed(err["details"]["references"]) == EXPECTED
    assert _exists(editor, "shared")
    with vault.factory() as s:
        refused = audit.query(s, target="shared", action="credential.deletion")
    assert [e.outcome for e in refused] == ["refused"]
    assert _listed(refused[0].details["references"]) == EXPECTED


def test_an_admin_can_force_the_delete_and_the_list_is_audited(api_as, vault, indexed):
    resp = api_as("admin").delete("/credentials/shared?force=true")
    assert resp.status_code == 200
    assert _listed(resp.get_json()["forced_references"]) == EXPECTED
    assert not _exists(api_as("viewer"), "shared")
    with vault.factory() as s:
        [ev] = audit.query(s, target="shared", action="credential.delete")
    assert ev.outcome == "ok" and ev.details["forced"] is True
    assert _listed(ev.details["references"]) == EXPECTED


def test_an_editor_cannot_force(api_as, vault, indexed):
    editor = api_as("editor")
    resp = editor.delete("/credentials/shared?force=true")
    assert resp.status_code == 403
    assert _exists(editor, "shared")
    with vault.factory() as s:
        assert [e.outcome for e in audit.query(s, target="shared",
                                               action="credential.deletion")] == ["denied"]


def test_an_unreferenced_credential_just_deletes(api_as, indexed):
    editor = api_as("editor")
    resp = editor.delete("/credentials/loner")
    assert resp.status_code == 200 and resp.get_json()["forced_references"] == []
    assert not _exists(editor, "loner")


def test_once_a_sync_drops_the_last_reference_the_delete_goes_through(api_as, vault, local_repo,
                                                                        indexed):
    editor = api_as("editor")
    assert editor.delete("/credentials/other").status_code == 409
    local_repo.commit({"pipelines/build.yaml": pipeline_yaml(
        "build", {"compile": ["shared"], "release": ["shared@1"]})})
    assert editor.post(f"/pipeline-sources/{indexed}/sync").get_json()["changed"] == 1
    assert editor.delete("/credentials/other").status_code == 200


def test_a_type_change_warns_the_same_way(api_as, indexed):
    change = {"type": "username_password", "values": {"username": "u", "password": "p"}}
    resp = api_as("editor").patch("/credentials/shared", json=change)
    assert resp.status_code == 409
    assert _listed(resp.get_json()["error"]["details"]["references"]) == EXPECTED
    forced = api_as("admin").patch("/credentials/shared?force=true", json=change)
    assert forced.status_code == 200 and forced.get_json()["type"] == "username_password"


def test_pruning_a_pinned_version_warns_with_only_the_pinned_steps(api_as, indexed):
    editor = api_as("editor")
    resp = editor.post("/credentials/shared/versions/prune", json={"keep": 1})
    assert resp.status_code == 409
    assert _listed(resp.get_json()["error"]["details"]["references"]) == [EXPECTED[1]]
    assert [v["version"] for v in editor.get("/credentials/shared/versions").get_json()["items"]] \
        == [3, 2, 1]
    # keeping version 1 (pinned) while dropping nothing pinned is fine
    assert editor.post("/credentials/other/versions/prune", json={"keep": 1}).status_code == 200


def test_the_cli_shows_the_list_and_asks_before_a_forced_delete(vault, indexed, wb_cli):
    code, out, err = wb_cli("cred", "delete", "shared")
    assert code == 4 and "refusing to delete" in err
    assert "shared is used by 3 step(s)" in err
    assert "pipeline build step compile" in err and "pipeline deploy step apply" in err
    code, out, err = wb_cli("cred", "delete", "shared", "--force", input="n\n")
    assert code != 0 and "Delete shared?" in out and "pipeline build step compile" in err
    code, out, err = wb_cli("cred", "show", "shared")
    assert code == 0
    code, out, err = wb_cli("cred", "delete", "shared", "--force", input="y\n")
    assert code == 0 and "deleted shared" in out
    with vault.factory() as s:
        [ev] = audit.query(s, target="shared", action="credential.delete")
    assert _listed(ev.details["references"]) == EXPECTED


def test_removing_the_source_drops_its_references(api_as, vault, indexed):
    editor, viewer = api_as("editor"), api_as("viewer")
    assert viewer.delete(f"/pipeline-sources/{indexed}").status_code == 403
    assert editor.delete("/credentials/other").status_code == 409
    resp = editor.delete(f"/pipeline-sources/{indexed}")
    assert resp.get_json() == {"removed": "r", "pipelines": 2}
    assert editor.get("/pipelines").get_json()["items"] == []
    assert editor.get("/pipeline-sources").get_json()["items"] == []
    assert editor.delete("/credentials/other").status_code == 200
    assert not (vault.settings.instance / "sources" / str(indexed)).exists()
