"""The resolve hot path: audit per credential, throttled "last used" times, token checks."""
import fcntl
import os
import socket
import stat
import threading
from datetime import timedelta

from sqlalchemy import text, update

from workbench import statements
from workbench.db import make_engine, utcnow
from workbench.models import ApiToken, Credential, User

from .test_web import login


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
    name = [t["name"] for t in admin.get("/tokens").get_json()["items"] if t["kind"] == "runner"]
    for cid, version in (("db-a", 1), ("db-b", 1)):
        items = admin.get(f"/audit?target={cid}&action=credential.resolve").get_json()["items"]
        assert len(items) == 1
        ev = items[0]
        assert (ev["outcome"], ev["actor"], ev["workspace"]) == ("ok", f"runner:{name[0]}",
                                                                 "default")
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
    _store(api_as("admin"), "kept")
    tok = [t for t in admin.get("/tokens").get_json()["items"] if t["kind"] == "runner"][0]
    assert admin.delete(f"/tokens/{tok['id']}").status_code == 200
    r = runner.post("/resolve", {"refs": ["kept"]})
    assert r.status_code == 401
    assert "wbr_" not in r.get_data(as_text=True) and "pw-canary" not in r.get_data(as_text=True)
    assert admin.get("/audit?action=credential.resolve").get_json()["items"] == []


def test_runner_token_of_another_workspace_cannot_resolve(api_as):
    editor = api_as("editor")
    _store(editor, "scoped")
    other = api_as("runner", workspace="elsewhere")
    r = other.post("/resolve", {"refs": ["scoped"]})
    assert r.status_code == 403
    assert "pw-canary" not in r.get_data(as_text=True)
    events = api_as("admin").get("/audit?action=credential.resolve").get_json()["items"]
    assert [(e["outcome"], e["target"]) for e in events] == [("denied", "scoped")]


def test_the_token_is_checked_before_the_body(api_as, client):
    """The first reference is read together with the token, but a bad token still gets 401
    (audited) whatever the body holds, and nothing is resolved."""
    editor, admin = api_as("editor"), api_as("admin")
    _store(editor, "first")
    for headers in ({}, {"Authorization": "Bearer wbr_not-a-token"}):
        for body in ({"refs": ["first"]}, {"refs": "first"}, ["first"]):
            r = client.post("/api/v1/resolve", json=body, headers=headers)
            assert r.status_code == 401, (headers, body)
            assert "pw-canary" not in r.get_data(as_text=True)
    assert len(admin.get("/audit?action=auth.token").get_json()["items"]) == 3
    assert admin.get("/audit?action=credential.resolve").get_json()["items"] == []
    runner = api_as("runner")
    assert runner.post("/resolve", ["first"]).status_code == 400
    assert runner.post("/resolve", {"refs": "first"}).status_code == 422


def test_first_reference_read_with_the_token_follows_the_same_rules(api_as):
    editor, runner = api_as("editor"), api_as("runner")
    _store(editor, "db", password="pw-canary-1")
    editor.post("/credentials/db/versions", {"values": {"password": "pw-canary-2"}})
    got = {c["ref"]: c for c in runner.post("/resolve", {"refs": ["db@1", "db"]})
           .get_json()["credentials"]}
    assert got["db@1"]["values"]["password"] == "pw-canary-1"
    assert got["db"]["values"]["password"] == "pw-canary-2" and got["db"]["version"] == 2
    r = runner.post("/resolve", {"refs": ["absent", "db"]})
    assert r.status_code == 404 and r.get_json()["error"]["details"]["missing"] == ["absent"]
    r = runner.post("/resolve?workspace=other", {"refs": ["db"]})
    assert r.status_code == 403 and "pw-canary" not in r.get_data(as_text=True)


def test_api_answers_never_carry_or_accept_a_session_cookie(api_as, client, users):
    """The API takes bearer tokens only: a signed-in browser's cookie does not authenticate
    it, and no API answer sets a cookie."""
    assert login(client, *users["editor"]).status_code == 302
    assert client.get("/").status_code == 200  # signed in
    assert client.get("/api/v1/credentials").status_code == 401
    r = api_as("editor").get("/credentials")
    assert r.status_code == 200 and "Set-Cookie" not in r.headers


def test_a_dead_pooled_connection_is_replaced_without_failing_a_resolve(api_as, vault):
    """The database dropped the connection while it sat in the pool (PostgreSQL restarted; on
    SQLite, the connection was closed): the hot path does not ping before each use, so its
    first statement must recover."""
    editor, runner = api_as("editor"), api_as("runner")
    _store(editor, "db")
    assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200
    pooled = vault.hot_pool.connect()
    if vault.engine.dialect.name == "postgresql":
        pid = pooled.dbapi_connection.info.backend_pid
        with vault.engine.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    else:
        pooled.dbapi_connection.close()
    vault.hot_pool.release(pooled)  # back to the pool, dead
    r = runner.post("/resolve", {"refs": ["db"]})
    assert r.status_code == 200 and r.get_json()["credentials"][0]["id"] == "db"


def test_a_resolve_while_the_database_cannot_be_reached_is_a_503_to_retry(api_as, vault,
                                                                           tmp_path):
    """PostgreSQL down or restarting (here: a port nobody listens on; on SQLite, a file that
    cannot be opened): the runner gets a 503 that says to try again, not a bare 500, and no
    value; once the database is back, the same request succeeds and is audited once."""
    editor, runner, admin = api_as("editor"), api_as("runner"), api_as("admin")
    _store(editor, "db")
    if vault.engine.dialect.name == "postgresql":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"postgresql+psycopg://postgres@127.0.0.1:{s.getsockname()[1]}/gone"
    else:
        url = f"sqlite:///{tmp_path / 'no-such-folder' / 'workbench.db'}"
    live, vault.hot_pool = vault.hot_pool, statements.Pool(make_engine(url, autocommit=True))
    try:
        r = runner.post("/resolve", {"refs": ["db"]})
    finally:
        vault.hot_pool = live
    assert r.status_code == 503
    assert r.get_json()["error"]["code"] == "unavailable"
    assert "try again" in r.get_json()["error"]["message"]
    assert "pw-canary" not in r.get_data(as_text=True)
    assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200
    evs = admin.get("/audit?action=credential.resolve").get_json()["items"]
    assert [e["outcome"] for e in evs] == ["ok"]


def test_hot_path_writes_wait_their_turn_in_the_writer_queue(api_as, vault):
    """SQLite: a resolve's audit write waits for the writer queue's file lock (held here as
    another server process would hold it), instead of SQLite's sleep-and-retry; PostgreSQL
    locks rows and has no queue."""
    editor, runner = api_as("editor"), api_as("runner")
    _store(editor, "db")
    path = vault.hot_pool.writers.path
    if vault.engine.dialect.name != "sqlite":
        assert path is None
        assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200
        return
    assert path == vault.engine.url.database + "-writers.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(
        runner.post("/resolve", {"refs": ["db"]})))
    try:
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and not answers  # its turn has not come
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    waiting.join(10)
    assert answers[0].status_code == 200
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_writes_that_commit_together_commit_all_or_none(vault):
    """``Raw.together`` (a run-token step's claim and its audit rows; several audit rows): on
    PostgreSQL one pipeline and one implicit transaction, on SQLite BEGIN … COMMIT."""
    from sqlalchemy import select

    from workbench import audit
    from workbench.audit import Actor
    from workbench.models import AuditEvent
    actor = Actor("t", role="runner", source="test", kind="runner")
    stmt, rows = audit.appending(actor, "test.together", [("a", {"n": 1}), ("b", {"n": 2})])
    broken = [rows[0], {**rows[1], "actor": None}]  # NOT NULL: the second row fails
    with statements.connection(vault.hot_pool) as raw:
        try:
            raw.together((stmt, broken))
        except vault.hot_pool.dialect.loaded_dbapi.IntegrityError:
            pass
        else:
            raise AssertionError("a NULL actor was written")
    with statements.connection(vault.hot_pool) as raw:
        raw.together((stmt, rows))
    with vault.factory() as s:
        got = s.execute(select(AuditEvent.target, AuditEvent.details)
                        .where(AuditEvent.action == "test.together")
                        .order_by(AuditEvent.id)).all()
    assert [tuple(r) for r in got] == [("a", {"n": 1}), ("b", {"n": 2})]
