"""The scope tree: a credential is resolved in its scope and every scope below it (unless not
inherited), a nearer one with the same ID shadows it, and references and the delete guard
follow the same rule (SQLite and PostgreSQL)."""
import pytest

from tests.fixtures.pipeline_repo import pipeline_yaml
from tests.test_web import as_role, post  # noqa: F401 (as_role: a fixture)
from workbench import audit, credentials, references, scopes, sources
from workbench.audit import SYSTEM
from workbench.resolution import VaultResolver
from workbench.pipeline.resolve import Ref

TREE = [("org", None), ("team", "org"), ("proj", "team"), ("other", "org")]


def _secret(vault, workspace, cid, value, inherit=True):
    with vault.factory.begin() as s:
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace=workspace,
                                      cred_id=cid, type="secret_text",
                                      values={"secret": value}, inherit=inherit)


@pytest.fixture
def tree(vault):
    """org → team → proj, and other (a sibling of team): ``registry`` in org (2 versions),
    ``db`` in team and again in proj (shadowing), ``team-only`` in team, not inherited."""
    with vault.factory.begin() as s:
        for name, parent in TREE:
            scopes.create_scope(s, SYSTEM, name, parent=parent)
    _secret(vault, "org", "registry", "org-registry-v1")
    with vault.factory.begin() as s:
        credentials.update_credential(s, vault.barrier, SYSTEM, workspace="org",
                                      cred_id="registry",
                                      changes={"values": {"secret": "org-registry-v2"}})
    _secret(vault, "team", "db", "team-db")
    _secret(vault, "proj", "db", "proj-db")
    _secret(vault, "team", "team-only", "team-only-value", inherit=False)
    return vault


def _resolve(api_as, workspace, *refs):
    r = api_as("runner", workspace=workspace).post(f"/resolve?workspace={workspace}",
                                                   {"refs": list(refs)})
    if r.status_code != 200:
        return r.status_code, r.get_json()["error"]
    return 200, {c["ref"]: c["values"]["secret"] for c in r.get_json()["credentials"]}


def test_runs_get_inherited_credentials_and_the_nearest_shadows(api_as, tree):
    assert _resolve(api_as, "proj", "registry", "db") == (
        200, {"registry": "org-registry-v2", "db": "proj-db"})
    assert _resolve(api_as, "proj", "db", "registry@1") == (
        200, {"db": "proj-db", "registry@1": "org-registry-v1"})
    assert _resolve(api_as, "team", "db", "team-only") == (
        200, {"db": "team-db", "team-only": "team-only-value"})
    assert _resolve(api_as, "other", "registry") == (200, {"registry": "org-registry-v2"})
    # not inherited, a sibling's, a parent's view of a child's: none resolve
    for workspace, ref in (("proj", "team-only"), ("other", "db"), ("org", "db")):
        status, err = _resolve(api_as, workspace, ref)
        assert status == 404 and err["details"]["missing"] == [ref], (workspace, ref)
    # shadowing is by ID: proj's db has no version 2, so db@2 does not fall through to team's
    status, err = _resolve(api_as, "proj", "db@1", "db@2")
    assert status == 404 and err["details"]["missing"] == ["db@2"]


def test_the_embedded_runner_resolves_the_same_way(tree):
    out = VaultResolver(tree, "proj").resolve([Ref("registry"), Ref("db")])
    assert out[Ref("registry")].values["secret"] == "org-registry-v2"
    assert out[Ref("db")].values["secret"] == "proj-db"


def test_an_inherited_resolve_is_audited_with_where_it_came_from(api_as, tree):
    _resolve(api_as, "proj", "registry", "db")
    with tree.factory() as s:
        evs = {e.target: e for e in audit.query(s, action="credential.resolve")}
    assert evs["registry"].workspace == "proj" and evs["registry"].details["from"] == "org"
    assert "from" not in evs["db"].details


def test_the_api_says_which_credential_a_pipeline_gets(api_as, tree):
    viewer = api_as("viewer")
    got = viewer.get("/scopes/proj/credentials/db").get_json()
    assert (got["gets"], got["inherited"], got["shadowed"]) == ("proj", False, ["team"])
    got = viewer.get("/scopes/proj/credentials/registry").get_json()
    assert (got["gets"], got["inherited"]) == ("org", True)
    got = viewer.get("/scopes/proj/credentials/team-only").get_json()
    assert (got["gets"], got["not_inherited"]) == (None, ["team"])
    assert viewer.get("/scopes/nope/credentials/db").status_code == 404
    listed = {i["id"]: i for i in viewer.get("/scopes").get_json()["items"]}
    assert listed["proj"]["parent"] == "team" and listed["org"]["parent"] is None
    assert viewer.get("/credentials/team-only?workspace=team").get_json()["inherit"] is False


def _index(vault, repo, workspace, files):
    repo.commit(files)
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, workspace, kind="git", url=repo.url,
                                 name=f"r-{workspace}").id
    sources.sync_source(vault.factory, vault, SYSTEM, sid)


def test_references_and_the_delete_guard_follow_inheritance(api_as, tree, local_repo):
    _index(tree, local_repo, "proj", {
        "pipelines/ship.yaml": pipeline_yaml("ship", {"push": ["registry"], "migrate": ["db"]})})
    editor, admin = api_as("editor"), api_as("admin")
    # the project pipeline uses org's registry: not dangling, and org's delete is guarded
    pipes = editor.get("/pipelines?workspace=proj").get_json()["items"]
    assert [(p["name"], p["dangling"]) for p in pipes] == [("ship", 0)]
    r = editor.delete("/credentials/registry?workspace=org")
    assert r.status_code == 409
    refs = r.get_json()["error"]["details"]["references"]
    assert [(x["workspace"], x["pipeline"], x["step"]) for x in refs] == [("proj", "ship", "push")]
    used = editor.get("/credentials/registry/references?workspace=org").get_json()["items"]
    assert [x["workspace"] for x in used] == ["proj"]
    # team's db is shadowed in proj by proj's own: deleting it breaks nothing
    r = editor.delete("/credentials/db?workspace=team")
    assert r.status_code == 200 and r.get_json()["forced_references"] == []
    # a pipeline's page says which scope each credential comes from
    pid = pipes[0]["id"]
    steps = editor.get(f"/pipelines/{pid}?workspace=proj").get_json()["steps"]
    came = {u["credential_id"]: u["scope"] for st in steps for u in st["credentials"]}
    assert came == {"registry": "org", "db": "proj"}
    # stopping inheritance is guarded too; an admin may force it, then the reference dangles
    r = editor.patch("/credentials/registry?workspace=org", {"inherit": False})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "in_use"
    r = admin.patch("/credentials/registry?workspace=org&force=true", {"inherit": False})
    assert r.status_code == 200 and r.get_json()["inherit"] is False
    pipes = editor.get("/pipelines?workspace=proj").get_json()["items"]
    assert pipes[0]["dangling"] == 1
    assert _resolve(api_as, "proj", "registry")[0] == 404


def test_the_tree_is_built_and_taken_down_in_order(api_as, tree):
    admin = api_as("admin")
    r = admin.post("/scopes", {"id": "lost", "parent": "nowhere"})
    assert r.status_code == 404 and "nowhere" in r.get_json()["error"]["message"]
    r = admin.delete("/scopes/other")
    assert r.status_code == 200
    r = admin.delete("/scopes/org")
    assert r.status_code == 409 and r.get_json()["error"]["details"]["contents"]["scopes"] == 1
    with tree.factory() as s:
        assert scopes.descendants(s, "org") == ["org", "team", "proj"]


def test_the_pages_show_where_a_credential_comes_from(as_role, tree, local_repo):
    _index(tree, local_repo, "proj", {
        "pipelines/ship.yaml": pipeline_yaml("ship", {"push": ["registry"], "migrate": ["db"]})})
    editor = as_role("editor")
    with tree.factory() as s:
        pid = [p["id"] for p in references.list_pipelines(s, "proj")][0]
    page = editor.get(f"/pipelines/{pid}?workspace=proj").get_data(as_text=True)
    assert "from org" in page and "/credentials/org/registry" in page
    assert "from proj" not in page and "/credentials/proj/db" in page
    r = post(editor, "/credentials/new?type=secret_text",
             {"type": "secret_text", "id": "local", "name": "", "workspace": "team",
              "no_inherit": "1", "v_secret": "local-only-1"})
    assert r.status_code == 302
    shown = editor.get("/credentials/team/local").get_data(as_text=True)
    assert "do not get it (not inherited)" in shown
