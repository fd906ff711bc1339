"""Encryption at rest, keys, roles, token scoping and the audit trail."""
import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from workbench import create_app, crypto
from workbench.config import Settings
from workbench.db import Base
from workbench.errors import ConfigError
from workbench.model_modules import import_all
from workbench.models import Credential, CredentialVersion
from workbench.vault import Vault

CANARY = "canary-Zq8vW3xK9pL2"


def _create(api, cid="db-pass", secret=CANARY, **kw):
    r = api.post("/credentials", {"id": cid, "type": "secret_text", "values": {"secret": secret},
                                  **kw})
    assert r.status_code == 201, r.get_json()
    return r


def _all_rows_text(vault) -> str:
    import_all()
    out = []
    with vault.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                out.append(repr(tuple(row)))
    return "\n".join(out)


def test_no_plaintext_anywhere_in_the_database(api_as, vault, caplog):
    caplog.set_level(logging.DEBUG)
    editor, runner = api_as("editor"), api_as("runner")
    _create(editor)
    editor.patch("/credentials/db-pass", {"values": {"secret": CANARY + "-v2"}})
    assert runner.post("/resolve", {"refs": ["db-pass"]}).status_code == 200
    assert CANARY not in _all_rows_text(vault)
    url = vault.settings.database_url
    if url.startswith("sqlite"):
        db = Path(url.removeprefix("sqlite:///"))
        for f in db.parent.glob(db.name + "*"):  # the file, its WAL and shared memory
            assert CANARY.encode() not in f.read_bytes(), f
    assert CANARY not in caplog.text


def test_ciphertext_moved_to_another_row_does_not_decrypt(api_as, vault):
    editor, runner = api_as("editor"), api_as("runner")
    _create(editor, "a-cred", "value-of-a")
    _create(editor, "b-cred", "value-of-b")
    with vault.factory.begin() as s:
        rows = {c: (wk, ct) for c, wk, ct in s.execute(
            select(Credential.cred_id, CredentialVersion.wrapped_key, CredentialVersion.ciphertext)
            .join(Credential, Credential.pk == CredentialVersion.credential_pk))}
        b_pk = s.scalar(select(Credential.pk).where(Credential.cred_id == "b-cred"))
        s.execute(update(CredentialVersion).where(CredentialVersion.credential_pk == b_pk)
                  .values(wrapped_key=rows["a-cred"][0], ciphertext=rows["a-cred"][1]))
    r = runner.post("/resolve", {"refs": ["b-cred"], "context": {"step": "s1"}})
    assert r.status_code == 500 and r.get_json()["error"]["code"] == "crypto"
    assert "'b-cred' version 1 does not decrypt" in r.get_json()["error"]["message"]
    assert "value-of" not in r.get_data(as_text=True)
    # The attempt is audited as failed, and as nothing else.
    events = api_as("admin").get("/audit?target=b-cred&action=credential.resolve").get_json()
    assert [(e["outcome"], e["details"]) for e in events["items"]] == \
        [("failed", {"step": "s1", "version": 1})]
    assert "value-of" not in json.dumps(events)
    assert runner.post("/resolve", {"refs": ["a-cred"]}).status_code == 200


def test_wrong_or_missing_key_stops_startup_and_changes_nothing(api_as, vault, tmp_path):
    _create(api_as("editor"))
    wrong = Settings.from_env({}, instance=str(tmp_path / "other"),
                              database_url=vault.settings.database_url,
                              master_key=crypto.encode_key(crypto.generate_key()))
    with pytest.raises(ConfigError, match="does not match this vault"):
        create_app(wrong)
    missing = Settings.from_env({}, instance=str(tmp_path / "none"),
                                database_url=vault.settings.database_url)
    with pytest.raises(ConfigError, match="no master key"):
        create_app(missing)
    assert not (tmp_path / "none" / "master.key").exists()  # never generated over data


def test_first_start_of_an_empty_vault_creates_a_private_key(tmp_path):
    s = Settings.from_env({}, instance=str(tmp_path / "inst"))
    create_app(s)
    key = tmp_path / "inst" / "master.key"
    assert key.stat().st_mode & 0o777 == 0o600
    create_app(Settings.from_env({}, instance=str(tmp_path / "inst")))  # same key reopens


@pytest.mark.parametrize("role, method, path, body, status", [
    ("viewer", "post", "/credentials", {"id": "x", "type": "secret_text",
                                        "values": {"secret": "abcdef"}}, 403),
    ("viewer", "delete", "/credentials/db-pass", None, 403),
    ("viewer", "patch", "/credentials/db-pass", {"name": "n"}, 403),
    ("editor", "post", "/users", {"username": "u", "password": "p" * 12, "role": "admin"}, 403),
    ("editor", "post", "/resolve", {"refs": ["db-pass"]}, 403),
    ("admin", "post", "/resolve", {"refs": ["db-pass"]}, 403),
    ("runner", "get", "/credentials", None, 403),
    ("runner", "get", "/audit", None, 403),
    ("viewer", "get", "/credentials/db-pass", None, 200),
    ("editor", "post", "/credentials/db-pass/verify", None, 200),
    ("viewer", "post", "/credentials/db-pass/verify", None, 403),
])
def test_roles(api_as, role, method, path, body, status):
    _create(api_as("editor"))
    api = api_as(role)
    r = getattr(api, method)(path, json=body) if body is not None else getattr(api, method)(path)
    assert r.status_code == status, r.get_json()
    if status == 403:
        assert r.get_json()["error"]["code"] == "forbidden"


def test_runner_tokens_are_scoped_to_their_workspace(api_as):
    _create(api_as("editor"))
    other = api_as("runner", workspace="team-b")
    r = other.post("/resolve", {"refs": ["db-pass"]})
    assert r.status_code == 403 and "team-b" in r.get_json()["error"]["message"]
    denied = api_as("admin").get("/audit?action=credential.resolve&outcome=denied").get_json()
    assert denied["items"] and denied["items"][0]["target"] == "db-pass"


def test_missing_bad_and_revoked_tokens_are_401(api_as, client):
    assert client.get("/api/v1/credentials").status_code == 401
    assert client.get("/api/v1/credentials",
                      headers={"Authorization": "Bearer wbp_nope"}).status_code == 401
    admin = api_as("admin")
    created = admin.post("/tokens", {"name": "ci", "kind": "runner"}).get_json()
    assert created["token"].startswith("wbr_")
    assert created["token"] not in admin.get("/tokens").get_data(as_text=True)
    admin.delete(f"/tokens/{created['id']}")
    r = client.post("/api/v1/resolve", json={"refs": ["x"]},
                    headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 401


def test_audit_records_every_change_and_refusal_without_values(api_as):
    editor, viewer, runner, admin = (api_as(r) for r in ("editor", "viewer", "runner", "admin"))
    _create(editor)
    editor.patch("/credentials/db-pass", {"name": "Database"})
    editor.patch("/credentials/db-pass", {"values": {"secret": CANARY + "-2"}})
    runner.post("/resolve", {"refs": ["db-pass"], "context": {"pipeline": "p", "step": "s"}})
    viewer.delete("/credentials/db-pass")
    runner.post("/resolve", {"refs": ["nope"]})
    editor.delete("/credentials/db-pass")
    r = admin.get("/audit?limit=50")
    events = r.get_json()["items"]
    seen = [(e["action"], e["outcome"]) for e in reversed(events)
            if e["action"].startswith("credential.")]
    assert seen == [("credential.create", "ok"), ("credential.rename", "ok"),
                    ("credential.update", "ok"), ("credential.resolve", "ok"),
                    ("credential.delete", "denied"), ("credential.resolve", "failed"),
                    ("credential.delete", "ok")]
    resolve = next(e for e in events if e["action"] == "credential.resolve" and
                   e["outcome"] == "ok")
    assert resolve["details"] == {"pipeline": "p", "step": "s", "version": 2}
    assert CANARY not in r.get_data(as_text=True)


def test_audit_log_is_append_only(api_as, vault):
    from workbench.errors import PermissionDenied
    from workbench.models import AuditEvent
    _create(api_as("editor"))
    with pytest.raises(PermissionDenied):
        with vault.factory.begin() as s:
            s.delete(s.scalars(select(AuditEvent)).first())
