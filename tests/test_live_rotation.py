"""Key rotation while a real `workbench serve` (4 worker processes) serves resolves and creates."""
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.fixtures._net import free_port
from tests.test_rotation import ROWS, _cli, _env, keyed_vault  # noqa: F401 (a fixture)
from workbench.accounts import create_token, create_user
from workbench.audit import SYSTEM
from workbench.vault import Vault

ROOT = Path(__file__).resolve().parent.parent


def _serve(settings, workers: int):
    """Start `workbench serve` and wait until it answers; (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", "--port", str(port),
                             "--workers", str(workers)], env=_env(settings), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, "server exited"
        assert time.monotonic() < deadline, "server did not answer within 60 s"
        time.sleep(0.2)


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


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
        runner = create_token(s, SYSTEM, "ci", kind="runner", workspace="default").secret
    v.close()
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
