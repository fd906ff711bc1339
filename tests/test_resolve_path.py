"""The resolve hot path: audit per credential, throttled "last used" times, token checks."""
from datetime import timedelta

from sqlalchemy import update

from workbench.db import utcnow
from workbench.models import ApiToken, Credential, User


def _store(api, cid, password="pw-canary-9191"):
    r = api.post("/credentials", {"id": cid, "type": "username_password",
                                  "values": {"username": "u", "password": password}})
    assert r.status_code == 201, r.get_json()


def test_each_resolved_credential_is_audited_and_findable_by_id(api_as):
    editor, runner, admin = api_as("editor"), api_as("runner"), api_as("admin")
    _store(editor, "db-a")
    _store(editor, "db-b")
    editor.post("/credentials/db-b/versions", {"values": {"password": "pw-canary-9292"}})
    r = runner.post("/resolve", {"refs": ["db-a", "db-b@1"],
                                 "context": {"pipeline": "deploy", "step": "migrate"}})
    assert r.status_code == 200
    for cid, version in (("db-a", 1), ("db-b", 1)):
        items = admin.get(f"/audit?target={cid}&action=credential.resolve").get_json()["items"]
        assert len(items) == 1
        ev = items[0]
        assert ev["outcome"] == "ok" and ev["actor"].startswith("runner:")
        assert ev["details"] == {"pipeline": "deploy", "step": "migrate", "version": version}
    log = admin.get("/audit?action=credential.resolve").get_data(as_text=True)
    assert "pw-canary" not in log


def test_unknown_reference_resolves_nothing_and_is_audited_as_failed(api_as):
    editor, runner, admin = api_as("editor"), api_as("runner"), api_as("admin")
    _store(editor, "known")
    r = runner.post("/resolve", {"refs": ["known", "known@7", "absent"]})
    assert r.status_code == 404
    assert sorted(r.get_json()["error"]["details"]["missing"]) == ["absent", "known@7"]
    evs = admin.get("/audit?action=credential.resolve").get_json()["items"]
    assert [e["outcome"] for e in evs] == ["failed"]
    assert editor.get("/credentials/known").get_json()["last_used_at"] is None


def test_last_used_is_set_on_first_use_and_refreshed_at_most_once_a_minute(api_as, vault):
    editor, runner, admin = api_as("editor"), api_as("runner"), api_as("admin")
    _store(editor, "busy")
    assert editor.get("/credentials/busy").get_json()["last_used_at"] is None
    runner.post("/resolve", {"refs": ["busy"]})
    first = editor.get("/credentials/busy").get_json()["last_used_at"]
    token_first = [t for t in admin.get("/tokens").get_json()["items"]
                   if t["kind"] == "runner"][0]["last_used_at"]
    assert first is not None and token_first is not None
    runner.post("/resolve", {"refs": ["busy"]})
    assert editor.get("/credentials/busy").get_json()["last_used_at"] == first
    # Two minutes later (moved back in the database), the next use refreshes both.
    earlier = utcnow() - timedelta(minutes=2)
    with vault.factory.begin() as s:
        s.execute(update(Credential).values(last_used_at=earlier))
        s.execute(update(ApiToken).values(last_used_at=earlier))
    runner.post("/resolve", {"refs": ["busy"]})
    assert editor.get("/credentials/busy").get_json()["last_used_at"] > first
    token_now = [t for t in admin.get("/tokens").get_json()["items"]
                 if t["kind"] == "runner"][0]["last_used_at"]
    assert token_now > token_first


def test_revoked_token_and_disabled_user_are_refused(api_as, vault):
    editor, admin = api_as("editor"), api_as("admin")
    assert editor.get("/credentials").status_code == 200
    with vault.factory.begin() as s:
        s.execute(update(User).where(User.username == "editor1").values(disabled=True))
    assert editor.get("/credentials").status_code == 401
    runner = api_as("runner")
    tok = [t for t in admin.get("/tokens").get_json()["items"] if t["kind"] == "runner"][0]
    assert admin.delete(f"/tokens/{tok['id']}").status_code == 200
    r = runner.post("/resolve", {"refs": ["x"]})
    assert r.status_code == 401
    assert "wbr_" not in r.get_data(as_text=True)


def test_runner_token_of_another_workspace_cannot_resolve(api_as):
    editor = api_as("editor")
    _store(editor, "scoped")
    other = api_as("runner", workspace="elsewhere")
    r = other.post("/resolve", {"refs": ["scoped"]})
    assert r.status_code == 403
    assert "pw-canary" not in r.get_data(as_text=True)
