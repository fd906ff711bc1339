"""Roles per scope: a grant on a scope covers it and every scope below it; a scope a user may
not see answers exactly like one that does not exist; instance roles remain (issue 19)."""
from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.fixtures.vault import Api
from tests.test_cli import wb  # noqa: F401 (a fixture)
from tests.test_web import login, post
from workbench import access, accounts, audit, scopes
from workbench.audit import SYSTEM
from workbench.cli.pipelines import index_folder
from workbench.models import User

SECRET = {"type": "secret_text", "values": {"secret": "scope-role-canary-1"}}
PASSWORD = "a-long-password-for-tests-7"


@pytest.fixture
def tree(vault):
    """org → team → proj, and sib beside team (below org)."""
    with vault.factory.begin() as s:
        scopes.create_scope(s, SYSTEM, "org")
        scopes.create_scope(s, SYSTEM, "team", parent="org")
        scopes.create_scope(s, SYSTEM, "proj", parent="team")
        scopes.create_scope(s, SYSTEM, "sib", parent="org")
    return vault


@pytest.fixture
def person(tree, client):
    """``person("carol", team="editor")`` → an Api client of a new user with instance role
    ``role`` (default none) and those grants (set up as an instance admin would)."""
    def make(name: str, role: str = "none", **grants: str) -> Api:
        with tree.factory.begin() as s:
            accounts.create_user(s, SYSTEM, name, PASSWORD, role, must_change=False)
            for scope, scope_role in grants.items():
                access.grant(s, SYSTEM, scope, name, scope_role)
            secret = accounts.create_token(s, SYSTEM, f"t-{uuid.uuid4().hex[:6]}",
                                           username=name).secret
        return Api(client, secret)
    return make


def cred(cred_id: str) -> dict:
    return {"id": cred_id, **SECRET}


def test_an_editor_of_a_team_creates_credentials_there_and_below_not_beside(person):
    carol = person("carol", team="editor")
    assert carol.post("/credentials?workspace=proj", cred("db")).status_code == 201
    assert carol.post("/credentials?workspace=team", cred("db")).status_code == 201
    beside = carol.post("/credentials?workspace=sib", cred("db"))
    above = carol.post("/credentials?workspace=org", cred("db"))
    assert beside.status_code == 404 and above.status_code == 404
    # a scope created later below team is covered too
    admin = person("root", role="admin")
    assert admin.post("/scopes", {"id": "later", "parent": "proj"}).status_code == 201
    assert carol.post("/credentials?workspace=later", cred("db")).status_code == 201
    # reads: her scopes only, and the credential list of the default scope is not hers
    assert [c["id"] for c in carol.get("/credentials?workspace=proj").get_json()["items"]] \
        == ["db"]
    assert carol.get("/credentials").status_code == 404
    assert {i["id"] for i in carol.get("/scopes").get_json()["items"]} == \
        {"team", "proj", "later"}


def test_a_viewer_grant_reads_but_does_not_write(person):
    admin = person("root", role="admin")
    assert admin.post("/credentials?workspace=proj", cred("db")).status_code == 201
    vic = person("vic", team="viewer")
    assert vic.get("/credentials/db?workspace=proj").status_code == 200
    r = vic.patch("/credentials/db?workspace=proj", {"name": "x"})
    assert r.status_code == 403 and "editor role on workspace 'proj'" in \
        r.get_json()["error"]["message"]
    assert vic.delete("/credentials/db?workspace=proj").status_code == 403
    # the instance role still counts: an instance viewer with an admin grant on team
    boss = person("boss", role="viewer", team="admin")
    assert boss.delete("/credentials/db?workspace=proj").status_code == 200
    assert boss.post("/credentials?workspace=sib", cred("db")).status_code == 403


def test_a_scope_it_may_not_see_answers_like_one_that_does_not_exist(person, tree):
    carol = person("carol", team="editor")
    for path in ("/scopes/{}", "/scopes/{}/members", "/credentials?workspace={}",
                 "/pipelines?workspace={}", "/runs?workspace={}",
                 "/scopes/{}/credentials/db"):
        hidden, missing = carol.get(path.format("sib")), carol.get(path.format("nope"))
        assert hidden.status_code == missing.status_code == 404, path
        assert hidden.get_json()["error"]["message"].replace("sib", "X") == \
            missing.get_json()["error"]["message"].replace("nope", "X"), path
    for method, path, body in (("patch", "/scopes/sib", {"title": "x"}),
                               ("delete", "/scopes/sib", None),
                               ("put", "/scopes/sib/members/carol", {"role": "admin"})):
        args = (path, body) if body is not None else (path,)
        assert getattr(carol, method)(*args).status_code == 404, (method, path)


def test_members_are_granted_listed_and_revoked_by_an_admin_of_the_scope(person, tree):
    ann = person("ann", team="admin")
    person("bob")
    r = ann.put("/scopes/proj/members/bob", {"role": "editor"})
    assert r.status_code == 201 and r.get_json()["role"] == "editor"
    again = ann.put("/scopes/proj/members/bob", {"role": "viewer"})
    assert again.status_code == 200 and again.get_json()["role"] == "viewer"
    listed = ann.get("/scopes/proj/members").get_json()
    assert [(m["username"], m["role"], m["source"]) for m in listed["items"]] == [
        ("bob", "viewer", "manual")]
    assert [(m["username"], m["workspace"]) for m in listed["inherited"]] == [("ann", "team")]
    assert ann.put("/scopes/proj/members/bob", {"role": "owner"}).status_code == 422
    assert ann.put("/scopes/proj/members/nobody", {"role": "viewer"}).status_code == 404
    # only admins of the scope or above: an editor is refused, a sibling is not found
    ed = person("ed", team="editor")
    assert ed.put("/scopes/proj/members/ed", {"role": "admin"}).status_code == 403
    assert ann.put("/scopes/sib/members/bob", {"role": "viewer"}).status_code == 404
    assert ann.delete("/scopes/proj/members/bob").status_code == 204
    assert ann.delete("/scopes/proj/members/bob").status_code == 404
    with tree.factory() as s:
        assert access.members(s, "proj") == []
        acts = [(e.action, e.actor, e.workspace, e.target, e.outcome) for e in
                audit.query(s, limit=1000) if e.action.startswith("scope.")]
    assert ("scope.grant", "ann", "proj", "bob", "ok") in acts
    assert ("scope.revoke", "ann", "proj", "bob", "ok") in acts
    assert ("scope.grant", "ed", "proj", "ed", "denied") in acts


def test_scope_admins_create_rename_and_delete_below_their_scope(person, tree):
    ann = person("ann", team="admin")
    assert ann.post("/scopes", {"id": "proj2", "parent": "team"}).status_code == 201
    assert ann.post("/scopes", {"id": "top"}).status_code == 403  # top level: instance admin
    assert ann.post("/scopes", {"id": "x", "parent": "sib"}).status_code == 404
    assert ann.patch("/scopes/team", {"title": "Team"}).status_code == 200
    assert ann.delete("/scopes/proj2").status_code == 200  # admin of its parent
    r = ann.delete("/scopes/team")  # its parent is org: ann is not admin there
    assert r.status_code == 403 and "'org'" in r.get_json()["error"]["message"]
    # runner tokens of a scope: its admins
    tok = ann.post("/tokens", {"name": "ci", "kind": "runner", "workspace": "proj"})
    assert tok.status_code == 201
    assert ann.post("/tokens", {"name": "ci", "kind": "runner",
                                "workspace": "sib"}).status_code == 404
    ed = person("ed", team="editor")
    assert ed.post("/tokens", {"name": "ci2", "kind": "runner",
                               "workspace": "proj"}).status_code == 403
    assert [t["name"] for t in ann.get("/tokens").get_json()["items"] if t["kind"] == "runner"] \
        == ["ci"]
    assert [t for t in ed.get("/tokens").get_json()["items"] if t["kind"] == "runner"] == []
    assert ed.delete(f"/tokens/{tok.get_json()['id']}").status_code == 403
    assert ann.delete(f"/tokens/{tok.get_json()['id']}").status_code == 200
    # instance-wide things stay with the instance admin
    assert ann.get("/users").status_code == 403
    assert ann.get("/webhooks").status_code == 403


def test_a_scope_auditor_reads_only_the_audit_rows_of_its_subtree(person, tree, client):
    admin = person("root", role="admin")
    for ws in ("team", "proj", "sib"):
        assert admin.post(f"/credentials?workspace={ws}", cred(f"c-{ws}")).status_code == 201
    aud = person("aud", team="auditor")
    rows = aud.get("/audit?limit=1000").get_json()["items"]
    assert {r["workspace"] for r in rows} == {"team", "proj"}
    assert {r["target"] for r in rows if r["action"] == "credential.create"} == \
        {"c-team", "c-proj"}
    # an auditor is a viewer of its scopes otherwise
    assert aud.get("/credentials/c-proj?workspace=proj").status_code == 200
    assert aud.post("/credentials?workspace=proj", cred("x")).status_code == 403
    # the web: the Audit log page and a credential's trail, for its subtree only
    assert login(client, "aud", PASSWORD).status_code == 302
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "c-proj" in page and "c-sib" not in page
    assert "Audit trail" in client.get("/credentials/proj/c-proj").get_data(as_text=True)
    assert client.get("/credentials/sib/c-sib").status_code == 404
    # an editor of a scope reads no audit log; an instance auditor reads all of it
    ed = person("ed", team="editor")
    assert ed.get("/audit").status_code == 403
    other = client.application.test_client()
    assert login(other, "ed", PASSWORD).status_code == 302
    assert "Audit trail" not in other.get("/credentials/proj/c-proj").get_data(as_text=True)
    assert other.get("/admin/audit").status_code == 403
    everything = person("iaud", role="auditor").get("/audit?limit=1000").get_json()["items"]
    assert {"sib", ""} <= {r["workspace"] for r in everything}


def test_the_last_admin_is_still_protected_and_none_is_an_instance_role(person, tree,
                                                                       client):
    admin = person("root", role="admin")
    r = admin.patch("/users/root", {"role": "none"})
    assert r.status_code == 409 and "last active admin" in r.get_json()["error"]["message"]
    # a scope admin grant does not count as an instance admin
    person("ann", team="admin")
    assert admin.patch("/users/root", {"role": "none"}).status_code == 409
    assert admin.post("/users", {"username": "nina", "password": PASSWORD,
                                 "role": "none"}).status_code == 201
    # a none user signs in and changes their own password, and sees nothing else
    with tree.factory.begin() as s:
        s.query(User).filter_by(username="nina").update({"must_change_password": False})
    assert login(client, "nina", PASSWORD).status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "/admin/users" not in page and "/admin/audit" not in page
    assert 'href="/pipelines"' not in page and client.get("/pipelines").status_code == 404
    assert client.get("/credentials/default/x").status_code == 404
    assert client.get("/account/password").status_code == 200


def test_the_workspace_page_lists_members_and_takes_grants(person, tree, client):
    person("ann", team="admin")
    person("bob")
    assert login(client, "ann", PASSWORD).status_code == 302
    page = client.get("/admin/scopes/proj").get_data(as_text=True)
    assert "ann" in page and "Give role" in page
    r = post(client, "/admin/scopes/proj/members", {"username": "bob", "role": "editor"},
             page="/admin/scopes/proj")
    assert r.status_code == 302
    page = client.get("/admin/scopes/proj").get_data(as_text=True)
    assert "bob" in page and "role-editor" in page
    assert client.get("/admin/scopes/sib").status_code == 404
    listing = client.get("/admin/scopes").get_data(as_text=True)
    assert "/admin/scopes/team" in listing and "/admin/scopes/sib" not in listing
    # bob (editor of proj) sees no grant form, and a revoke by him is refused
    other = client.application.test_client()
    assert login(other, "bob", PASSWORD).status_code == 302
    assert "Give role" not in other.get("/admin/scopes/proj").get_data(as_text=True)
    post(other, "/admin/scopes/proj/members/bob/revoke", {}, page="/admin/scopes/proj")
    with tree.factory() as s:
        assert [m.user.username for m in access.members(s, "proj")] == ["bob"]


def test_grants_from_the_cli(wb):  # noqa: F811
    wb("init")
    wb("scope", "create", "team")
    wb("scope", "create", "proj", "--parent", "team")
    wb("user", "add", "carol", "--role", "none", "--password-stdin", input=PASSWORD + "\n")
    assert "carol is now editor of workspace team" in wb("scope", "grant", "team", "carol",
                                                         "editor").stdout
    rows = json.loads(wb("scope", "members", "proj", "--json").stdout)
    assert [(r["username"], r["role"], r["workspace"], r["inherited"]) for r in rows] == [
        ("carol", "editor", "team", True)]
    bad = wb("scope", "grant", "team", "carol", "owner", check=False)
    assert bad.returncode == 2
    missing = wb("scope", "grant", "nope", "carol", "viewer", check=False)
    assert missing.returncode == 3 and "workspace 'nope' does not exist" in missing.stderr
    wb("scope", "revoke", "team", "carol")
    assert json.loads(wb("scope", "members", "team", "-o", "json").stdout) == []
    again = wb("scope", "revoke", "team", "carol", check=False)
    assert again.returncode == 3


def test_a_project_member_sees_what_the_project_inherits_in_the_api_and_the_table(
        person, tree, client, tmp_path):
    """The list of a workspace holds what its runs get, for anyone who may see it: the same
    rows through the API and the table; "all workspaces" shows only what the user may see."""
    api = person("pia", proj="viewer")
    with tree.factory.begin() as s:
        from workbench import credentials
        for ws, cid in (("org", "registry"), ("team", "db"), ("sib", "sib-own")):
            credentials.create_credential(s, tree.barrier, SYSTEM, workspace=ws, cred_id=cid,
                                          type="secret_text",
                                          values={"secret": f"{cid}-canary-value"})
    listed = api.get("/credentials?workspace=proj").get_json()["items"]
    assert {(i["id"], i["scope"]) for i in listed} == {("registry", "org"), ("db", "team")}
    assert api.get("/credentials?workspace=team").status_code == 404  # not hers to browse
    assert login(client, "pia", PASSWORD).status_code == 302
    page = client.get("/?workspace=proj").get_data(as_text=True)
    assert "from org" in page and "from team" in page
    assert "registry" in page and "sib-own" not in page
    # no link to a page she may not open (a 404): the inherited rows name their scope only
    assert not re.search(r"/credentials/(org|team|sib)/", page)
    everything = client.get("/").get_data(as_text=True)  # all she may see: proj's own, none
    assert not re.search(r"/credentials/(org|team|sib)/", everything)
    # a pipeline of proj that uses them: named, and not linked to pages she may not open
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "deploy.yaml").write_text(
        "name: deploy\nsteps:\n  - name: push\n    run: 'true'\n"
        "    credentials:\n      - registry\n")
    index_folder(tree, str(tmp_path), workspace="proj")
    listing = client.get("/pipelines?workspace=proj").get_data(as_text=True)
    pid = re.search(r'/pipelines/(\d+)\?workspace=proj', listing).group(1)
    shown = client.get(f"/pipelines/{pid}?workspace=proj").get_data(as_text=True)
    assert "registry" in shown and "from org" in shown
    assert not re.search(r"/credentials/(org|team|sib)/", shown)
