"""Accounts a team can run: password changes, forced changes, disabling, resets, deleting, and
the last active admin who can never be removed (web, API; on SQLite and PostgreSQL)."""
import pytest

from workbench import audit, passwords
from workbench.audit import SYSTEM
from workbench.models import User
from tests.test_web import as_role, csrf, login, post  # noqa: F401 (as_role: a fixture)

NEW_PW = "correct horse battery 42"


def _user(vault, name) -> User:
    with vault.factory() as s:
        return s.query(User).filter_by(username=name).one()


def _events(vault, action):
    with vault.factory() as s:
        return [(e.target, e.outcome) for e in audit.query(s, action=action)]


@pytest.mark.parametrize("password, message", [
    ("short-pw", "at least 10 characters"),
    ("Password123", "too common"),      # in the shipped breached-password list, any case
    ("qwertyuiop", "too common"),
    ("carol-the-admin", "too common"),  # the username itself
])
def test_weak_passwords_are_refused_with_the_rule(api_as, password, message):
    r = api_as("admin").post("/users", {"username": "carol-the-admin", "password": password,
                                        "role": "viewer"})
    assert r.status_code == 422 and message in r.get_json()["error"]["message"]
    assert r.get_json()["error"]["details"]["field"] == "password"
    assert password not in r.get_data(as_text=True)


def test_hashes_use_the_documented_argon2id_parameters():
    assert passwords.hash_password("x" * 12).startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert len(passwords.common()) > 10_000 and "password123" in passwords.common()


def test_change_own_password_through_the_api(api_as, users, vault, client):
    name, old = users["editor"]
    editor = api_as("editor")
    wrong = editor.post("/account/password", {"current_password": "nope-nope-nope",
                                              "password": NEW_PW})
    assert wrong.status_code == 422 and "current password is wrong" in wrong.get_data(True)
    assert _events(vault, "user.password") == [(name, "denied")]
    weak = editor.post("/account/password", {"current_password": old, "password": "123456789a"})
    assert weak.status_code == 422
    ok = editor.post("/account/password", {"current_password": old, "password": NEW_PW})
    assert ok.status_code == 200 and NEW_PW not in ok.get_data(as_text=True)
    assert login(client, name, old).status_code == 401
    assert login(client, name, NEW_PW).status_code == 302
    runner = api_as("runner").post("/account/password", {"current_password": old,
                                                         "password": NEW_PW})
    assert runner.status_code == 403


def test_change_own_password_on_the_web_ends_other_sessions(app, users):
    name, old = users["viewer"]
    me, elsewhere = app.test_client(), app.test_client()
    for c in (me, elsewhere):
        assert login(c, name, old).status_code == 302
    r = post(me, "/account/password", {"current_password": old, "password": NEW_PW,
                                       "password_confirm": NEW_PW + "x"})
    assert r.status_code == 422 and "differ" in r.get_data(as_text=True)
    assert NEW_PW not in r.get_data(as_text=True)
    r = post(me, "/account/password", {"current_password": old, "password": NEW_PW,
                                       "password_confirm": NEW_PW})
    assert r.status_code == 302
    assert me.get("/").status_code == 200  # this session goes on
    assert elsewhere.get("/").status_code == 302  # the other one is signed out


def test_a_password_an_admin_sets_must_be_changed_at_first_sign_in(as_role, app, vault):
    admin = as_role("admin")
    r = post(admin, "/admin/users", {"username": "newbie", "password": "set-by-the-admin",
                                     "role": "editor"})
    assert r.status_code == 302 and _user(vault, "newbie").must_change_password
    c = app.test_client()
    assert login(c, "newbie", "set-by-the-admin").status_code == 302
    for page in ("/", "/admin/tokens", "/pipelines"):
        r = c.get(page)
        assert r.status_code == 302 and r.headers["Location"].endswith("/account/password")
    assert "Choose your own" in c.get("/account/password").get_data(as_text=True)
    r = post(c, "/account/password", {"current_password": "set-by-the-admin",
                                      "password": NEW_PW, "password_confirm": NEW_PW},
             page="/account/password")
    assert r.status_code == 302
    assert c.get("/").status_code == 200 and not _user(vault, "newbie").must_change_password


def test_admin_reset_forces_a_change_and_ends_sessions(api_as, users, app, vault):
    name, old = users["editor"]
    session = app.test_client()
    assert login(session, name, old).status_code == 302
    r = api_as("admin").post(f"/users/{name}/password", {"password": "temporary-pw-7"})
    assert r.status_code == 200 and r.get_json()["must_change_password"] is True
    assert session.get("/").status_code == 302  # signed out
    assert login(session, name, "temporary-pw-7").status_code == 302
    assert session.get("/").headers["Location"].endswith("/account/password")
    assert api_as("editor").post(f"/users/{name}/password",
                                 {"password": "temporary-pw-7"}).status_code == 403
    assert _events(vault, "user.password_reset") == [(name, "denied"), (name, "ok")]


def test_disabling_stops_sessions_and_tokens_at_once(api_as, users, app, vault):
    name, pw = users["editor"]
    session = app.test_client()
    assert login(session, name, pw).status_code == 302
    editor = api_as("editor")
    assert editor.get("/credentials").status_code == 200
    admin = api_as("admin")
    r = admin.patch(f"/users/{name}", {"disabled": True})
    assert r.status_code == 200 and r.get_json()["disabled"] is True
    assert editor.get("/credentials").status_code == 401
    assert session.get("/").status_code == 302
    assert login(app.test_client(), name, pw).status_code == 401
    assert admin.patch(f"/users/{name}", {"disabled": False}).status_code == 200
    assert editor.get("/credentials").status_code == 200  # the token works again
    assert session.get("/").status_code == 302  # the old session stays ended
    assert login(session, name, pw).status_code == 302
    assert [a for a, _ in _events(vault, "user.disable")] == [name]


def test_disable_enable_reset_and_delete_from_the_users_page(as_role, users, vault):
    admin = as_role("admin")
    name = users["viewer"][0]
    assert post(admin, f"/admin/users/{name}/disable", {}).status_code == 302
    assert "disabled" in admin.get("/admin/users").get_data(as_text=True)
    assert _user(vault, name).disabled
    assert post(admin, f"/admin/users/{name}/enable", {}).status_code == 302
    assert not _user(vault, name).disabled
    post(admin, f"/admin/users/{name}/password", {"password": "123456789a"})
    assert not _user(vault, name).must_change_password  # a common password: refused
    assert post(admin, f"/admin/users/{name}/password",
                {"password": "reset-by-admin-9"}).status_code == 302
    assert _user(vault, name).must_change_password
    assert post(admin, f"/admin/users/{name}/delete", {}).status_code == 302
    assert f"{name} is deleted" in admin.get("/admin/users").get_data(as_text=True)
    assert name not in admin.get("/admin/users").get_data(as_text=True)
    editor = as_role("editor")
    assert post(editor, f"/admin/users/{users['admin'][0]}/disable", {}).status_code == 403


def test_deleting_a_user_revokes_their_tokens(api_as, users, vault):
    viewer = api_as("viewer")
    assert viewer.get("/credentials").status_code == 200
    assert api_as("admin").delete(f"/users/{users['viewer'][0]}").status_code == 200
    assert viewer.get("/credentials").status_code == 401


def test_the_last_active_admin_cannot_be_demoted_disabled_or_deleted(api_as, users, vault):
    me = users["admin"][0]
    admin = api_as("admin")
    for call in (lambda: admin.patch(f"/users/{me}", {"role": "editor"}),
                 lambda: admin.patch(f"/users/{me}", {"disabled": True}),
                 lambda: admin.delete(f"/users/{me}")):
        r = call()
        assert r.status_code == 409 and "last active admin" in r.get_json()["error"]["message"]
    assert _user(vault, me).role == "admin" and not _user(vault, me).disabled
    assert [o for _, o in _events(vault, "user.role")] == ["denied"]
    # with a second admin, one may step down; then the other is the last again
    second = users["editor"][0]
    assert admin.patch(f"/users/{second}", {"role": "admin"}).status_code == 200
    assert admin.patch(f"/users/{me}", {"disabled": True}).status_code == 200
    other = api_as("editor")  # now an admin
    assert other.patch(f"/users/{second}", {"role": "viewer"}).status_code == 409
    # a disabled admin does not count: re-enabling is always allowed
    assert other.patch(f"/users/{me}", {"disabled": False}).status_code == 200


def test_the_last_admin_cannot_demote_themselves_on_the_web(as_role, users, vault):
    admin = as_role("admin")
    me = users["admin"][0]
    r = post(admin, f"/admin/users/{me}/role", {"role": "viewer"})
    assert r.status_code == 302
    assert "last active admin" in admin.get("/admin/users").get_data(as_text=True)
    assert _user(vault, me).role == "admin"
    assert admin.get("/admin/users").status_code == 200
    assert csrf(admin, "/admin/users")


def test_two_admins_demoting_each_other_at_once_leave_one_admin(vault, users, db_url):
    """PostgreSQL: the second demotion waits for the first's row locks, then sees its change."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time")
    import threading
    from workbench import accounts
    from workbench.audit import Actor
    from workbench.errors import Conflict
    with vault.factory.begin() as s:
        accounts.set_role(s, SYSTEM, users["editor"][0], "admin")
    first = vault.factory()
    first.begin()
    accounts.set_role(first, Actor("admin1", role="admin"), users["admin"][0], "viewer")
    first.flush()  # holds the admin rows' locks until it commits
    outcome = []

    def second():
        try:
            with vault.factory.begin() as s:
                accounts.set_role(s, Actor("editor1", role="admin"), users["editor"][0],
                                  "viewer")
            outcome.append("demoted")
        except Conflict as e:
            outcome.append(e.message)
    t = threading.Thread(target=second)
    t.start()
    t.join(1.0)
    assert t.is_alive()  # waiting for the first transaction's locks
    first.commit()
    first.close()
    t.join(30)
    assert outcome == ["'editor1' is the last active admin; make another user admin first"]
    with vault.factory() as s:
        admins = [u.username for u in accounts.list_users(s) if u.role == "admin"]
    assert admins == ["editor1"]
