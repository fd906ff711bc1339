"""Workspaces (scopes) are created, renamed and deleted explicitly: a typo never creates one."""
from alembic import command
from sqlalchemy import create_engine, text

from tests.fixtures.vault import add_scopes
from tests.test_cli import wb  # noqa: F401 (a fixture)
from tests.test_web import as_role, post  # noqa: F401 (as_role: a fixture)
from workbench import scopes
from workbench.audit import SYSTEM
from workbench.models import Workspace
from workbench.vault import alembic_config

SECRET = {"id": "db", "type": "secret_text", "values": {"secret": "scope-canary-1"}}


def _names(vault) -> list[str]:
    with vault.factory() as s:
        return [ws.name for ws in scopes.list_scopes(s)]


def test_create_list_rename_and_delete_through_the_api(api_as, vault):
    admin = api_as("admin")
    r = admin.post("/scopes", {"id": "team-a", "title": "Team A"})
    assert r.status_code == 201 and r.get_json()["id"] == "team-a"
    assert admin.post("/scopes", {"id": "team-a"}).status_code == 409
    assert admin.post("/scopes", {"id": "Team A!"}).status_code == 422
    items = {i["id"]: i for i in api_as("viewer").get("/scopes").get_json()["items"]}
    assert set(items) == {"default", "team-a"} and items["team-a"]["title"] == "Team A"
    assert items["team-a"]["contents"] == {"scopes": 0, "credentials": 0, "sources": 0,
                                           "runner_tokens": 0}

    renamed = admin.patch("/scopes/team-a", {"title": "Team Alpha"})
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "Team Alpha"
    moved = admin.patch("/scopes/team-a", {"id": "team-b"})
    assert moved.status_code == 422 and moved.get_json()["error"]["code"] == "immutable"
    assert _names(vault) == ["default", "team-a"]

    # not empty: 409 names what is left; empty: gone
    assert api_as("editor").post("/credentials?workspace=team-a", SECRET).status_code == 201
    tok = admin.post("/tokens", {"name": "ci", "kind": "runner", "workspace": "team-a"})
    full = admin.delete("/scopes/team-a")
    assert full.status_code == 409
    assert full.get_json()["error"]["details"]["contents"] == {"credentials": 1,
                                                                "runner_tokens": 1}
    assert api_as("editor").delete("/credentials/db?workspace=team-a").status_code == 200
    assert admin.delete(f"/tokens/{tok.get_json()['id']}").status_code == 200
    assert admin.delete("/scopes/team-a").status_code == 200
    assert _names(vault) == ["default"]
    assert admin.delete("/scopes/default").status_code == 403
    assert admin.get("/scopes/team-a").status_code == 404


def test_only_admins_manage_workspaces(api_as, vault):
    add_scopes(vault, "team-a")
    for role in ("editor", "viewer"):
        api = api_as(role)
        assert api.post("/scopes", {"id": "mine"}).status_code == 403
        assert api.patch("/scopes/team-a", {"title": "x"}).status_code == 403
        assert api.delete("/scopes/team-a").status_code == 403
    assert _names(vault) == ["default", "team-a"]


def test_a_typo_never_creates_a_workspace(api_as, vault):
    editor, admin = api_as("editor"), api_as("admin")
    r = editor.post("/credentials?workspace=defualt", SECRET)
    assert r.status_code == 404
    assert "workspace 'defualt' does not exist" in r.get_json()["error"]["message"]
    r = admin.post("/tokens", {"name": "ci", "kind": "runner", "workspace": "defualt"})
    assert r.status_code == 404
    r = admin.post("/pipeline-sources?workspace=defualt",
                   {"name": "s", "kind": "git", "url": "https://git.example/x.git"})
    assert r.status_code == 404
    assert _names(vault) == ["default"]
    assert editor.get("/credentials?workspace=defualt").get_json()["total"] == 0
    with vault.factory() as s:
        assert s.query(Workspace).count() == 1


def test_the_web_form_says_the_workspace_does_not_exist(as_role, vault):
    editor = as_role("editor")
    r = post(editor, "/credentials/new?type=secret_text",
             {"type": "secret_text", "id": "db", "name": "", "workspace": "defualt",
              "v_secret": "scope-canary-2"})
    page = r.get_data(as_text=True)
    assert r.status_code == 422 and 'id="err-workspace"' in page
    assert "does not exist" in page and "scope-canary-2" not in page
    assert _names(vault) == ["default"]


def test_the_workspaces_page(as_role, vault):
    admin = as_role("admin")
    assert post(admin, "/admin/scopes", {"id": "team-a", "title": "Team A"}).status_code == 302
    r = post(admin, "/admin/scopes", {"id": "bad id", "title": ""})
    assert r.status_code == 422 and 'id="err-id"' in r.get_data(as_text=True)
    assert post(admin, "/admin/scopes/team-a/rename", {"title": "Team Alpha"}).status_code == 302
    page = admin.get("/admin/scopes").get_data(as_text=True)
    assert "Team Alpha" in page and "renamed" in page
    assert post(admin, "/admin/scopes/team-a/delete", {}).status_code == 302
    assert _names(vault) == ["default"]
    viewer = as_role("viewer")
    assert "team-a" not in viewer.get("/admin/scopes").get_data(as_text=True)
    assert post(viewer, "/admin/scopes", {"id": "mine", "title": ""}).status_code == 403
    assert post(viewer, "/admin/scopes/default/delete", {}).status_code == 403


def test_existing_workspaces_survive_the_migration_unchanged(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, created_at) "
                          "VALUES (7, 'team-x', '2026-01-01 00:00:00')"))
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, name, title FROM workspaces")).one()
    engine.dispose()
    assert tuple(row) == (7, "team-x", "")


def test_scopes_from_the_cli(wb):
    wb("init")
    wb("scope", "create", "team-a", "--title", "Team A")
    assert "team-a" in wb("scope", "list").stdout
    typo = wb("cred", "add", "x", "--type", "secret_text", "--workspace", "team-z",
              "--values-stdin", input='{"secret": "cli-canary-3"}', check=False)
    assert typo.returncode == 3 and "workspace 'team-z' does not exist" in typo.stderr
    assert "team-z" not in wb("scope", "list").stdout
    wb("scope", "rename", "team-a", "Team Alpha")
    assert "Team Alpha" in wb("scope", "list").stdout
    wb("scope", "delete", "team-a")
    assert "team-a" not in wb("scope", "list", "--json").stdout
    gone = wb("scope", "delete", "default", check=False)
    assert gone.returncode == 4 and "cannot be deleted" in gone.stderr

