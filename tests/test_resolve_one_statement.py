"""A repeated resolve of one reference takes one statement on both databases
(resolution.Answers: the checks and the audit row together, then the answer given before).
Whatever changed since, the answer and the audit rows are what the full path gives."""
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from workbench import audit, credentials, resolution, scopes, statements
from workbench.audit import SYSTEM
from workbench.config import Settings
from workbench.db import utcnow
from workbench.errors import ConfigError
from workbench.models import ApiToken, AuditEvent, Credential, CredentialVersion

from .test_resolve_path import _store


@pytest.fixture
def trips(vault, monkeypatch):
    """Statements the hot path sends to PostgreSQL (round trips; none counted on SQLite)."""
    sent = []
    send, together = statements._Libpq.send, statements._Libpq.together
    monkeypatch.setattr(statements._Libpq, "send",
                        lambda self, *a: sent.append("execute") or send(self, *a))
    monkeypatch.setattr(statements._Libpq, "together",
                        lambda self, *a: sent.append("together") or together(self, *a))
    return sent


def _rows(vault, action="credential.resolve"):
    with vault.factory() as s:
        return [(e.actor, e.outcome, e.workspace, e.target, e.source, e.details)
                for e in s.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                   .order_by(AuditEvent.id))]


def test_a_repeated_resolve_is_one_round_trip_and_audited_alike(api_as, vault, trips):
    editor, runner = api_as("editor"), api_as("runner")
    _store(editor, "db", password="pw-canary-1")
    body = {"refs": ["db"], "context": {"pipeline": "deploy", "step": "migrate", "x": "y"}}
    first = runner.post("/resolve", body)
    trips.clear()
    again = [runner.post("/resolve", body) for _ in range(3)]
    assert [r.get_json() for r in again] == [first.get_json()] * 3
    assert first.get_json()["credentials"][0]["values"]["password"] == "pw-canary-1"
    rows = _rows(vault)
    assert len(rows) == 4 and all(r == rows[0] for r in rows)  # the same row each time
    assert rows[0][1] == "ok" and rows[0][5] == {"pipeline": "deploy", "step": "migrate",
                                                 "version": 1}
    if vault.engine.dialect.name == "postgresql":
        assert trips == ["execute"] * 3  # one statement per resolve, audit row included
    # each repeat audits its own context and time, though the rest is encoded once per answer
    for step in ("seed", "migrate"):
        assert runner.post("/resolve", {**body, "context": {"step": step}}).status_code == 200
    with vault.factory() as s:
        last = s.scalars(select(AuditEvent).where(AuditEvent.action == "credential.resolve")
                         .order_by(AuditEvent.id.desc()).limit(3)).all()
    assert [e.details for e in last] == [{"step": "migrate", "version": 1},
                                         {"step": "seed", "version": 1},
                                         {"pipeline": "deploy", "step": "migrate", "version": 1}]
    assert last[0].at >= last[1].at >= last[2].at and last[0].at != last[2].at
    # the pinned version too
    pinned = [runner.post("/resolve", {"refs": ["db@1"]}) for _ in range(2)]
    assert pinned[0].get_json() == pinned[1].get_json()
    assert [r[1:4] for r in _rows(vault)[-2:]] == [("ok", "default", "db")] * 2


def test_refusals_after_a_resolve_are_audited_as_refusals_only(api_as, vault):
    """Each change below comes after the version was resolved (and so could take the one
    statement): the refusal is audited as before, and no "ok" row is added."""
    editor, admin = api_as("editor"), api_as("admin")
    _store(editor, "db")
    cases = []

    runner = api_as("runner")
    assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200
    cases.append((runner.post("/resolve?workspace=other", {"refs": ["db"]}), 403, "denied"))

    assert admin.put("/credentials/db/policy", {"protected": True}).status_code == 200
    cases.append((runner.post("/resolve", {"refs": ["db"]}), 403, "denied"))
    assert admin.put("/credentials/db/policy", {"protected": False}).status_code == 200
    assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200

    tok = [t for t in admin.get("/tokens").get_json()["items"] if t["kind"] == "runner"][-1]
    assert admin.delete(f"/tokens/{tok['id']}").status_code == 200
    r = runner.post("/resolve", {"refs": ["db"]})
    assert r.status_code == 401 and "pw-canary" not in r.get_data(as_text=True)

    other = api_as("runner", allow=["elsewhere"])
    cases.append((other.post("/resolve", {"refs": ["db"]}), 403, "denied"))
    ok_before = [r for r in _rows(vault) if r[1] == "ok"]
    for response, status, outcome in cases:
        assert response.status_code == status
        assert "pw-canary" not in response.get_data(as_text=True)
    rows = _rows(vault)
    assert [r[1] for r in rows] == ["ok", "denied", "denied", "ok", "denied"]
    assert len(ok_before) == 2


def test_a_new_version_or_altered_ciphertext_is_not_taken_for_the_one_decrypted(api_as, vault):
    editor, runner = api_as("editor"), api_as("runner")
    _store(editor, "a-cred", password="value-of-a")
    _store(editor, "b-cred", password="value-of-b")
    for cid in ("a-cred", "b-cred"):
        assert runner.post("/resolve", {"refs": [cid]}).status_code == 200
    # a new version: answered and audited as version 2
    editor.post("/credentials/a-cred/versions", {"values": {"password": "value-of-a2"}})
    r = runner.post("/resolve", {"refs": ["a-cred"]})
    assert r.get_json()["credentials"][0]["values"]["password"] == "value-of-a2"
    assert _rows(vault)[-1][1:4] == ("ok", "default", "a-cred")
    assert _rows(vault)[-1][5] == {"version": 2}
    # b's ciphertext replaced by a's: refused, audited as failed and as nothing else
    with vault.factory.begin() as s:
        a_pk, b_pk = (s.scalar(select(Credential.pk).where(Credential.cred_id == c))
                      for c in ("a-cred", "b-cred"))
        wk, ct = s.execute(select(CredentialVersion.wrapped_key, CredentialVersion.ciphertext)
                           .where(CredentialVersion.credential_pk == a_pk,
                                  CredentialVersion.version == 1)).one()
        s.execute(update(CredentialVersion).where(CredentialVersion.credential_pk == b_pk)
                  .values(wrapped_key=wk, ciphertext=ct))
    before = len(_rows(vault))
    r = runner.post("/resolve", {"refs": ["b-cred"], "context": {"step": "s1"}})
    assert r.status_code == 500 and r.get_json()["error"]["code"] == "crypto"
    assert "value-of" not in r.get_data(as_text=True)
    assert [(x[1], x[3], x[5]) for x in _rows(vault)[before:]] == \
        [("failed", "b-cred", {"step": "s1", "version": 1})]


def test_a_nearer_credential_that_appears_shadows_the_inherited_one(api_as, vault):
    with audit.unit(vault.factory) as s:
        scopes.create_scope(s, SYSTEM, "team", parent="default")
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                      cred_id="db", type="secret_text",
                                      values={"secret": "from-default"})
    runner = api_as("runner", workspace="team")
    got = [runner.post("/resolve?workspace=team", {"refs": ["db"]}) for _ in range(2)]
    assert [g.get_json()["credentials"][0]["values"]["secret"] for g in got] == \
        ["from-default"] * 2
    assert [r[5] for r in _rows(vault)] == [{"version": 1, "from": "default"}] * 2
    with audit.unit(vault.factory) as s:
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace="team",
                                      cred_id="db", type="secret_text",
                                      values={"secret": "own"})
    r = runner.post("/resolve?workspace=team", {"refs": ["db"]})
    assert r.get_json()["credentials"][0]["values"]["secret"] == "own"
    assert _rows(vault)[-1][2:4] == ("team", "db") and _rows(vault)[-1][5] == {"version": 1}


def test_when_the_own_credential_goes_the_inherited_one_is_resolved(api_as, vault):
    with audit.unit(vault.factory) as s:
        scopes.create_scope(s, SYSTEM, "team", parent="default")
        for scope, value in (("default", "from-default"), ("team", "own")):
            credentials.create_credential(s, vault.barrier, SYSTEM, workspace=scope,
                                          cred_id="db", type="secret_text",
                                          values={"secret": value})
    runner = api_as("runner", workspace="team")
    for _ in range(2):
        r = runner.post("/resolve?workspace=team", {"refs": ["db"]})
        assert r.get_json()["credentials"][0]["values"]["secret"] == "own"
    with audit.unit(vault.factory) as s:
        credentials.delete_credential(s, SYSTEM, workspace="team", cred_id="db")
    r = runner.post("/resolve?workspace=team", {"refs": ["db"]})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["credentials"][0]["values"]["secret"] == "from-default"
    assert [e[5] for e in _rows(vault)] == [{"version": 1}] * 2 + \
        [{"version": 1, "from": "default"}]


def test_last_used_times_are_still_written_once_a_minute(api_as, vault):
    """An answer given again writes no "last used" time, so it is not given when one is due:
    the full path answers and writes both (the token's and the credential's)."""
    editor, runner = api_as("editor"), api_as("runner")
    _store(editor, "db")
    assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200
    long_ago = utcnow() - timedelta(hours=1)
    with vault.factory.begin() as s:
        s.execute(update(Credential).values(last_used_at=long_ago))
        s.execute(update(ApiToken).where(ApiToken.kind == "runner").values(last_used_at=long_ago))
    assert runner.post("/resolve", {"refs": ["db"]}).status_code == 200
    recent = (long_ago + timedelta(minutes=59)).replace(tzinfo=None)
    with vault.factory() as s:
        for when in (s.scalar(select(Credential.last_used_at)),
                     s.scalar(select(ApiToken.last_used_at).where(ApiToken.kind == "runner"))):
            assert when.replace(tzinfo=None) > recent
    assert [r[1] for r in _rows(vault)] == ["ok", "ok"]


def test_answers_expire_and_are_bounded(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(resolution, "monotonic", lambda: now[0])
    answers = resolution.Answers(60)
    answers.put("a", {"v": 1}, {"answer": 1})
    now[0] += 59
    assert answers.get("a") == ({"v": 1}, {"answer": 1})
    now[0] += 2
    assert answers.get("a") is None and answers._got == {}  # gone, values and all
    for i in range(resolution.Answers.LIMIT + 5):
        answers.put(i, {}, {})
    assert len(answers._got) <= resolution.Answers.LIMIT
    off = resolution.Answers(0)
    off.put("a", {}, {})
    assert off.get("a") is None


def test_the_cache_can_be_switched_off(tmp_path):
    env = {"WORKBENCH_INSTANCE": str(tmp_path)}
    assert Settings.from_env(env).resolve_cache_seconds == 60
    assert Settings.from_env({**env, "WORKBENCH_RESOLVE_CACHE_SECONDS": "0"}) \
        .resolve_cache_seconds == 0
    for bad in ("-1", "forever", "86400"):
        with pytest.raises(ConfigError, match="WORKBENCH_RESOLVE_CACHE_SECONDS"):
            Settings.from_env({**env, "WORKBENCH_RESOLVE_CACHE_SECONDS": bad})
