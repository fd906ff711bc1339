"""What a scope inherits, beyond resolve: the credentials table and list API show it (marked
with where it comes from), "used by" counts every scope that gets a credential, run tokens
resolve it, and pipeline sources clone with it (SQLite and PostgreSQL)."""
import re

import pytest

from tests.fixtures.pipeline_repo import pipeline_yaml, unique_name
from tests.test_web import as_role  # noqa: F401 (a fixture)
from workbench import audit, credentials, references, scopes, sources
from workbench.audit import SYSTEM
from workbench.errors import NotFound
from workbench.pipeline import records

from tests.test_inheritance import TREE, _secret  # the same tree as resolve's tests


@pytest.fixture
def tree(vault):
    """org → team → proj, other (below org).  org: registry, cfg; team: db, team-only (not
    inherited), cfg (not inherited: proj gets org's); proj: db (shadows team's), proj-own;
    other: other-own."""
    with vault.factory.begin() as s:
        for name, parent in TREE:
            scopes.create_scope(s, SYSTEM, name, parent=parent)
    for ws, cid, inherit in (("org", "registry", True), ("org", "cfg", True),
                             ("team", "db", True), ("team", "team-only", False),
                             ("team", "cfg", False), ("proj", "db", True),
                             ("proj", "proj-own", True), ("other", "other-own", True)):
        _secret(vault, ws, cid, f"{ws}-{cid}-value", inherit)
    return vault


def _listed(api, query):
    r = api.get(f"/credentials?{query}")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    return {(i["id"], i["scope"], i["inherited"]) for i in body["items"]}, body["total"]


def test_the_list_api_shows_what_a_scope_inherits_and_where_from(api_as, tree):
    viewer = api_as("viewer")
    got, total = _listed(viewer, "workspace=proj")
    assert got == {("proj-own", "proj", False), ("db", "proj", False),
                   ("registry", "org", True), ("cfg", "org", True)}
    assert total == 4
    # the same rule as a resolve: what the list says proj gets is what explain says
    with tree.factory() as s:
        for cid, scope, _ in got:
            assert scopes.explain(s, "proj", cid)["gets"] == scope
    got, total = _listed(viewer, "workspace=team")
    assert got == {("db", "team", False), ("team-only", "team", False),
                   ("cfg", "team", False), ("registry", "org", True)} and total == 4
    assert _listed(viewer, "workspace=other")[0] == {
        ("other-own", "other", False), ("registry", "org", True), ("cfg", "org", True)}
    # the opt-out: own ones only
    assert _listed(viewer, "workspace=proj&inherited=false") == (
        {("proj-own", "proj", False), ("db", "proj", False)}, 2)
    # the top of the tree inherits nothing
    assert _listed(viewer, "workspace=org") == (
        {("registry", "org", False), ("cfg", "org", False)}, 2)
    # search, type filter and the item's address (its own workspace) still hold
    assert _listed(viewer, "workspace=proj&q=regis")[0] == {("registry", "org", True)}
    item = viewer.get("/credentials?workspace=proj&q=regis").get_json()["items"][0]
    assert item["workspace"] == "org"
    assert viewer.get("/credentials/registry?workspace=org").status_code == 200


def test_sorting_and_pages_walk_own_and_inherited_rows_once(api_as, tree):
    viewer = api_as("viewer")
    for sort in ("id", "-id", "name", "workspace", "-created_at", "used_by"):
        whole = [i["id"] for i in viewer.get(
            f"/credentials?workspace=proj&sort={sort}&limit=50").get_json()["items"]]
        paged = []
        for offset in range(0, 5):
            body = viewer.get(f"/credentials?workspace=proj&sort={sort}&limit=1"
                              f"&offset={offset}").get_json()
            assert body["total"] == 4
            paged += [i["id"] for i in body["items"]]
        assert paged == whole and sorted(whole) == ["cfg", "db", "proj-own", "registry"], sort
    ids = [i["id"] for i in viewer.get("/credentials?workspace=proj&sort=id").get_json()["items"]]
    assert ids == ["cfg", "db", "proj-own", "registry"]


def _index(vault, repo, workspace, files, name=None):
    repo.commit(files)
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, workspace, kind="git", url=repo.url,
                                 name=name or f"r-{workspace}").id
    sources.sync_source(vault.factory, vault, SYSTEM, sid)
    return sid


@pytest.fixture
def used(tree, tmp_path):
    """Pipelines using registry in team (1) and in proj (2), db in proj (1) and in team (1),
    cfg in team (1: team's own) and in proj (1: org's)."""
    from tests.fixtures.pipeline_repo import LocalRepo
    for ws, files in (
            ("team", {"pipelines/t.yaml": pipeline_yaml("t", {"a": ["registry", "db", "cfg"]})}),
            ("proj", {"pipelines/p1.yaml": pipeline_yaml("p1", {"a": ["registry", "db"]}),
                      "pipelines/p2.yaml": pipeline_yaml("p2", {"a": ["registry", "cfg"],
                                                                "b": ["registry"]})})):
        _index(tree, LocalRepo(tmp_path / ws), ws, files)
    return tree


def test_used_by_counts_every_scope_that_gets_the_credential(api_as, as_role, used):
    viewer = api_as("viewer")
    # sort by "used by": org's registry is used by 3 pipelines below it, org's cfg by p2 only
    items = viewer.get("/credentials?workspace=org&sort=-used_by").get_json()["items"]
    assert [i["id"] for i in items] == ["registry", "cfg"]
    items = viewer.get("/credentials?workspace=team&sort=-used_by&inherited=false"
                       ).get_json()["items"]
    # team's db: its own pipeline t only (proj's p1 gets proj's db); team's cfg: t only
    assert [i["id"] for i in items][-1] == "team-only"
    page = as_role("viewer").get("/?workspace=org&sort=-used_by").get_data(as_text=True)
    assert _used(page, "registry") == "3 pipelines" and _used(page, "cfg") == "1 pipeline"
    page = as_role("viewer").get("/?workspace=team&inherited=false").get_data(as_text=True)
    assert _used(page, "db") == "1 pipeline" and _used(page, "cfg") == "1 pipeline"
    assert _used(page, "team-only") == "unused"
    page = as_role("viewer").get("/?workspace=proj").get_data(as_text=True)
    assert _used(page, "db") == "1 pipeline" and _used(page, "registry") == "3 pipelines"
    # the "used by" filter agrees with the count
    page = as_role("viewer").get("/?workspace=team&used_by=unused").get_data(as_text=True)
    assert _row_ids(page) == ["team-only"]
    page = as_role("viewer").get("/?workspace=org&used_by=used").get_data(as_text=True)
    assert sorted(_row_ids(page)) == ["cfg", "registry"]


def _rows(page: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(
        r'<td data-col="id"[^>]*><a href="/credentials/[^/]+/([^"]+)">.*?</tr>', page, re.S)}


def _row_ids(page: str) -> list[str]:
    return list(_rows(page))


def _used(page: str, cid: str) -> str:
    cell = re.search(r'<td data-col="used_by"[^>]*>(.*?)</td>', _rows(page)[cid], re.S).group(1)
    return re.sub(r"<[^>]+>", "", cell).strip()


def test_the_table_marks_inherited_rows_and_edits_them_where_they_live(as_role, tree):
    editor = as_role("editor")
    page = editor.get("/?workspace=proj").get_data(as_text=True)
    rows = _rows(page)
    assert sorted(rows) == ["cfg", "db", "proj-own", "registry"]
    reg = rows["registry"]
    assert re.search(r'<a class="badge" href="/credentials/org/registry"[^>]*>from org</a>', reg)
    assert 'href="/credentials/org/registry/edit">Edit in org<' in reg
    assert "from " not in rows["db"] and 'href="/credentials/proj/db/edit">Edit<' in rows["db"]
    # the edit link opens the credential's own scope's form
    assert editor.get("/credentials/org/registry/edit").status_code == 200
    # the filter for own ones only, and the unfiltered table (every scope's own, no badges)
    page = editor.get("/?workspace=proj&inherited=false").get_data(as_text=True)
    assert sorted(_row_ids(page)) == ["db", "proj-own"]
    assert '<option value="false" selected>Own only</option>' in page
    page = editor.get("/").get_data(as_text=True)
    assert page.count('<td data-col="id"') == 8 and "from org" not in page


def _record(vault, workspace, run_id, uses):
    with vault.factory.begin() as s:
        records.store_run(s, workspace, {
            "id": run_id, "status": "success", "pipeline": f"pipe-{workspace}",
            "steps": [{"name": "s", "status": "success"}],
            "uses": [{"step": "s", "credential_id": cid, "version": 1} for cid in uses]})


def _recent(page: str) -> list[str]:
    section = page.split('id="runs"', 1)[1].split("</section>", 1)[0]
    return re.findall(r'href="/runs/([^"]+)"', section)


def test_a_credential_page_lists_the_runs_of_the_scopes_that_inherit_it(as_role, tree):
    _record(tree, "proj", "run-proj", ["registry", "db"])  # proj's db shadows team's
    _record(tree, "team", "run-team", ["db", "cfg"])  # team's own cfg shadows org's for team
    _record(tree, "other", "run-other", ["cfg"])
    viewer = as_role("viewer")
    page = viewer.get("/credentials/org/registry").get_data(as_text=True)
    assert _recent(page) == ["run-proj"] and "No run has used" not in page
    assert _recent(viewer.get("/credentials/org/cfg").get_data(as_text=True)) == ["run-other"]
    assert _recent(viewer.get("/credentials/team/db").get_data(as_text=True)) == ["run-team"]
    assert _recent(viewer.get("/credentials/proj/db").get_data(as_text=True)) == ["run-proj"]
    assert _recent(viewer.get("/credentials/team/cfg").get_data(as_text=True)) == ["run-team"]
    # the "last used" filter agrees: org's registry was used, by a run in proj
    page = viewer.get("/?workspace=org&last_used=ever&inherited=false").get_data(as_text=True)
    assert sorted(_row_ids(page)) == ["cfg", "registry"]
    with tree.factory() as s:
        assert references.last_used(s, "org", ["registry"])["registry"] is not None
        assert references.last_used(s, "team", ["registry"])["registry"] is None


# ---- run tokens ---------------------------------------------------------------------------

SHIP = """\
name: ship
steps:
  - name: build
    run: make
    credentials: [registry, db]
  - name: deploy
    run: ./deploy
    credentials: [prod-key]
  - name: sibling
    run: ./x
    credentials: [other-own]
"""


def _open_run(runner, **body):
    r = runner.post("/runs?workspace=proj", {"source": "r-proj", "pipeline": "ship",
                                              "event": "push", **body})
    assert r.status_code == 201, r.get_json()
    return r.get_json()["token"]


def _step(client, token, step, workspace="proj", attempt=1):
    r = client.post(f"/api/v1/resolve?workspace={workspace}",
                    json={"step": step, "attempt": attempt},
                    headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.get_json()


def test_a_run_token_resolves_inherited_credentials_by_the_nearest_rule(
        api_as, client, tree, local_repo):
    _secret(tree, "team", "prod-key", "team-prod-key")
    sid = _index(tree, local_repo, "proj", {"pipelines/ship.yaml": SHIP})
    admin = api_as("admin")
    assert admin.put(f"/pipeline-sources/{sid}/protected-refs?workspace=proj",
                     {"patterns": ["main"]}).status_code == 200
    # the rules of an inherited credential go with it: team's prod-key is protected
    assert admin.put("/credentials/prod-key/policy?workspace=team",
                     {"protected": True}).status_code == 200
    runner = api_as("runner", workspace="proj", allow=None)
    token = _open_run(runner, ref="feature/x")
    status, body = _step(client, token, "build")
    assert status == 200, body
    assert {c["id"]: c["values"]["secret"] for c in body["credentials"]} == {
        "registry": "org-registry-value", "db": "proj-db-value"}
    with tree.factory() as s:
        evs = {e.target: e for e in audit.query(s, action="credential.resolve", outcome="ok")}
    assert evs["registry"].workspace == "proj" and evs["registry"].details["from"] == "org"
    assert "from" not in evs["db"].details
    # a protected inherited credential is withheld from an unprotected ref …
    status, body = _step(client, token, "deploy")
    assert status == 403 and "protected" in body["error"]["message"]
    # … and released on a protected one
    status, body = _step(client, _open_run(runner, ref="main"), "deploy")
    assert status == 200 and body["credentials"][0]["values"]["secret"] == "team-prod-key"
    # a sibling's credential is not inherited: missing, audited as failed
    status, body = _step(client, token, "sibling")
    assert status == 404 and body["error"]["details"]["missing"] == ["other-own"]
    # the token stays bound to its run's workspace, inherited or not
    status, body = _step(client, token, "build", workspace="team", attempt=2)
    assert status == 403 and "scoped to workspace 'proj'" in body["error"]["message"]
    # once per attempt holds for inherited credentials too
    status, body = _step(client, token, "build")
    assert status == 403 and "already received" in body["error"]["message"]
    # a nearer credential created later shadows the inherited one at once
    _secret(tree, "proj", "registry", "proj-registry")
    status, body = _step(client, _open_run(runner, ref="main"), "build")
    assert {c["id"]: c["values"]["secret"] for c in body["credentials"]}["registry"] \
        == "proj-registry"


# ---- pipeline sources ---------------------------------------------------------------------

def test_a_source_clones_with_an_inherited_credential(api_as, tree, git_http_server):
    server = git_http_server
    repo = unique_name("inherited-clone")
    url = server.create_repo(repo, {"ci/app.yaml": pipeline_yaml("app", {"t": ["registry"]})})
    with tree.factory.begin() as s:
        credentials.create_credential(s, tree.barrier, SYSTEM, workspace="team",
                                      cred_id="git-login", type="username_password",
                                      values={"username": server.username,
                                              "password": server.password})
    editor = api_as("editor")
    r = editor.post("/pipeline-sources?workspace=proj",
                    {"kind": "git", "url": url, "name": "app", "path_glob": "ci/*.yaml",
                     "credential_id": "git-login"})
    assert r.status_code == 201, r.get_json()
    sid = r.get_json()["id"]
    r = editor.post(f"/pipeline-sources/{sid}/sync?workspace=proj")
    assert r.status_code == 200, r.get_json()
    assert [p["name"] for p in editor.get("/pipelines?workspace=proj").get_json()["items"]] \
        == ["app"]
    with tree.factory() as s:
        ev = audit.query(s, target="git-login", action="credential.resolve")[0]
    assert ev.workspace == "proj" and ev.details["from"] == "team"
    listed = editor.get("/pipeline-sources?workspace=proj").get_json()["items"]
    assert listed[0]["credential_scope"] == "team"
    # team's credential is guarded by proj's source; a sibling cannot clone with it
    r = editor.delete("/credentials/git-login?workspace=team")
    assert r.status_code == 409
    assert [(x["workspace"], x["kind"]) for x in r.get_json()["error"]["details"]
            ["references"]] == [("proj", "source")]
    with tree.factory.begin() as s, pytest.raises(NotFound):
        sources.add_source(s, SYSTEM, "other", kind="git", url=url, name="nope",
                           credential_id="git-login")
    # not inherited any more: the next sync fails clearly, naming the credential
    admin = api_as("admin")
    assert admin.patch("/credentials/git-login?workspace=team&force=true",
                       {"inherit": False}).status_code == 200
    r = editor.post(f"/pipeline-sources/{sid}/sync?workspace=proj")
    assert r.status_code in (400, 404) and "git-login" in r.get_json()["error"]["message"]
    assert server.password not in r.get_data(as_text=True)
