"""Key rotation while a real `workbench serve` (4 worker processes) serves resolves and creates."""
import os
import random
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures._net import start_serve, stop_serve
from tests.test_rotation import ROWS, _cli, _env, keyed_vault  # noqa: F401 (a fixture)
from workbench.accounts import create_token, create_user
from workbench.audit import SYSTEM
from workbench.config import Settings
from workbench.vault import Vault

ROOT = Path(__file__).resolve().parent.parent


def _serve(settings, workers: int):
    """Start `workbench serve` and wait until it answers; (process, base URL)."""
    return start_serve(_env(settings), ROOT, workers)


_stop = stop_serve


class Load:
    """Client threads resolving existing and new credentials, and creating new ones."""

    def __init__(self, url: str, runner: str, admin: str, known: dict):
        self.url, self.known = url, dict(known)
        self.runner = {"Authorization": f"Bearer {runner}"}
        self.admin = {"Authorization": f"Bearer {admin}"}
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.counts = {"resolve": 0, "create": 0}
        self.lock = threading.Lock()

    def _resolve(self, http: requests.Session) -> None:
        cid = random.choice(list(self.known))
        r = http.post(f"{self.url}/api/v1/resolve", json={"refs": [cid]}, headers=self.runner,
                      timeout=30)
        ok = r.status_code == 200 and \
            r.json()["credentials"][0]["values"] == self.known[cid]
        self._count("resolve", ok, f"resolve {cid}: {r.status_code} {r.text[:200]}")

    def _create(self, http: requests.Session, n: int) -> None:
        cid, values = f"live-{n}", {"username": f"u{n}", "password": f"pw-{n}-{os.getpid()}"}
        r = http.post(f"{self.url}/api/v1/credentials", headers=self.admin, timeout=30,
                      json={"id": cid, "type": "username_password", "values": values})
        self._count("create", r.status_code == 201, f"create {cid}: {r.status_code} {r.text[:200]}")
        if r.status_code == 201:
            self.known[cid] = values

    def _count(self, kind: str, ok: bool, what: str) -> None:
        with self.lock:
            self.counts[kind] += 1
            if not ok:
                self.failures.append(what)

    def run(self, creator: int | None) -> None:
        http, n = requests.Session(), 0
        while not self.stop.is_set():
            try:
                if creator is not None:
                    n += 1
                    self._create(http, creator * 100000 + n)
                else:
                    self._resolve(http)
            except requests.RequestException as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}")


def test_rotation_while_four_workers_serve_loses_no_request(keyed_vault):
    settings, _old_key, values = keyed_vault
    v = Vault(settings).open(migrate=False)
    with v.factory.begin() as s:
        create_user(s, SYSTEM, "ops", "a-long-password-1", "admin")
        admin = create_token(s, SYSTEM, "ops", username="ops").secret
        runner = create_token(s, SYSTEM, "ci", kind="runner", workspace="default",
                              allow=["*"]).secret
    v.close()
    # The new key is prepared first (to be copied to other hosts): nothing uses it yet.
    prepared = _cli(settings, "keys", "rotate", "--prepare")
    assert prepared.returncode == 0 and "Copy it next to the key file" in prepared.stdout
    assert "master.key.next: no key term of this vault" in _cli(settings, "keys", "status").stdout
    server, url = _serve(settings, workers=4)
    load = Load(url, runner, admin, {cid: values[cid] for cid in list(values)[:200]})
    threads = [threading.Thread(target=load.run, args=(c,), daemon=True)
               for c in (None, None, None, 1, 2)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        before = dict(load.counts)
        rotation = _cli(settings, "keys", "rotate", "--batch", "20")
        during = {k: load.counts[k] - before[k] for k in before}
        time.sleep(1.0)  # and after: the workers now meet rows of the new term
        load.stop.set()
        for t in threads:
            t.join(60)
        assert rotation.returncode == 0, rotation.stderr
        assert during["resolve"] > 20 and during["create"] > 2, during
        assert load.failures == [], (len(load.failures), load.failures[:5])
        assert "Back up the new key now" in rotation.stdout
    finally:
        load.stop.set()
        _stop(server)

    doctor = _cli(settings, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    created = len(load.known) - 200
    assert f"checked {ROWS + created} credential versions: 0 do not decrypt" in doctor.stdout
    status = _cli(settings, "keys", "status")
    assert f"{settings.key_path}.1: no key term of this vault" in status.stdout, status.stdout
    assert f"{settings.key_path}: key term 2, {ROWS + created} credential versions" \
        in status.stdout, status.stdout

    # A restart opens the vault with the new key file alone and serves every credential.
    server, url = _serve(settings, workers=1)
    try:
        new = sorted(c for c in load.known if c.startswith("live-"))
        r = requests.post(f"{url}/api/v1/resolve", json={"refs": [new[0], new[-1], "c00001"]},
                          headers={"Authorization": f"Bearer {runner}"}, timeout=30)
        assert r.status_code == 200, r.text
        got = {c["id"]: c["values"] for c in r.json()["credentials"]}
        assert got == {cid: load.known.get(cid, values.get(cid))
                       for cid in (new[0], new[-1], "c00001")}
    finally:
        _stop(server)
    # Another host that got the new key as master.key.next, its master.key still the old one,
    # opens the vault too (with the old key alone it would not).
    other = settings.instance.parent / "other-host"
    other.mkdir()
    (other / "master.key").write_text(Path(f"{settings.key_path}.1").read_text())
    (other / "master.key.next").write_text(settings.key_path.read_text())
    for key in other.iterdir():
        key.chmod(0o600)  # a key file others can read is refused
    elsewhere = Settings.from_env({}, instance=str(other), database_url=settings.database_url)
    v = Vault(elsewhere)
    try:
        assert v.open(migrate=False).barrier.active == 2
    finally:
        v.close()


def test_a_running_process_follows_a_rotation_started_elsewhere(db_url, tmp_path):
    from tests.fixtures.vault import _empty
    from workbench import crypto, keyring
    from workbench.credentials import create_credential
    from workbench.crypto import Barrier
    from workbench.errors import ConfigError
    from workbench.models import CredentialVersion, KeyCheck
    from workbench.pipeline.resolve import Ref
    from workbench.resolution import VaultResolver
    from sqlalchemy import select

    settings = Settings.from_env({}, instance=str(tmp_path / "instance"), database_url=db_url)
    v = Vault(settings)
    _empty(v)
    v.open(migrate=False)  # this process: term 1 only

    def add(cred_id: str):
        with v.factory.begin() as s:
            create_credential(s, v.barrier, SYSTEM, workspace="default", cred_id=cred_id,
                              type="secret_text", values={"secret": f"value-of-{cred_id}"})

    def term_of(cred_id: str) -> int:
        with v.factory() as s:
            return s.scalar(select(CredentialVersion.key_term).join(CredentialVersion.credential)
                            .where(CredentialVersion.credential.has(cred_id=cred_id)))

    add("before")
    # Another process starts a rotation: the new key file first, then its term.
    new = crypto.generate_key()
    keyring._write_secret_file(keyring.next_path(settings), crypto.encode_key(new))
    with v.factory.begin() as s:
        s.add(KeyCheck(term=2, blob=Barrier.make_check(new, 2)))
    add("during")
    assert term_of("during") == 2, "a write sealed under the term being retired"
    # ... and re-wraps the older rows: this process opens them without a restart.
    other = Vault(settings).open(migrate=False)
    try:
        keyring._rewrap(other.factory, other.barrier, 2, 100)
    finally:
        other.close()
    assert term_of("before") == 2
    got = VaultResolver(v, "default").resolve([Ref("before"), Ref("during")])
    assert {r.id: c.values["secret"] for r, c in got.items()} == {
        "before": "value-of-before", "during": "value-of-during"}
    # A newer term whose key this host does not have: writes are refused, nothing is written.
    with v.factory.begin() as s:
        s.add(KeyCheck(term=3, blob=Barrier.make_check(crypto.generate_key(), 3)))
    with pytest.raises(ConfigError, match="term 3"):
        add("after")
    with v.factory() as s:
        assert s.scalar(select(CredentialVersion.pk).join(CredentialVersion.credential)
                        .where(CredentialVersion.credential.has(cred_id="after"))) is None
    v.close()
