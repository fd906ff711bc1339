"""Connectivity tests: one overall deadline, and run off the request workers."""
import socket
import threading
import time
from pathlib import Path

import requests

from tests.fixtures._net import start_serve
from workbench import checks
from workbench.accounts import create_token, create_user
from workbench.audit import SYSTEM
from workbench.config import Settings
from workbench.vault import Vault

ROOT = Path(__file__).resolve().parent.parent


class SlowTarget:
    """A TCP server that accepts and then never answers (``trickle`` False) or sends the start
    of an HTTP answer one byte at a time, forever (``trickle`` True)."""

    def __init__(self, trickle: bool):
        self.trickle, self.stop = trickle, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            prefix = b"HTTP/1.1 200 OK\r\nX-Slow: "
            i = 0
            while not self.stop.wait(0.2):
                if self.trickle:
                    try:
                        conn.sendall(prefix[i:i + 1] if i < len(prefix) else b"a")
                    except OSError:
                        return
                    i += 1

    def close(self):
        self.stop.set()
        self.sock.close()


def _timed_verify(target: str, timeout: float):
    """(condition or None if still running after 30 s, seconds taken)."""
    out = []
    began = time.monotonic()
    t = threading.Thread(target=lambda: out.append(checks.verify(
        "secret_text", {"secret": "s3cret-token", "target": target}, timeout)), daemon=True)
    t.start()
    t.join(30)
    return (out[0] if out else None), time.monotonic() - began


def test_a_trickling_target_is_cut_at_the_deadline():
    slow = SlowTarget(trickle=True)
    try:
        cond, _ = _timed_verify(slow.url, 2)
    finally:
        slow.close()
    assert cond is not None, "the check was still reading a trickling answer after 30 s"
    assert (cond.status, cond.reason) == ("False", "Unreachable")
    assert "within 2 s" in cond.message


def test_one_deadline_covers_every_request_of_a_check():
    # secret_text asks the target whether it speaks git, then sends the request itself: with a
    # timeout per request, a silent target held the check for twice the promised time.
    slow = SlowTarget(trickle=False)
    try:
        cond, took = _timed_verify(slow.url, 4)
    finally:
        slow.close()
    assert cond is not None and cond.reason == "Unreachable" and "within 4 s" in cond.message
    assert took < 4 + 2.5, f"the check took {took:.1f} s with a 4 s deadline"


def _serve(settings: Settings, workers: int):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_INSTANCE=str(settings.instance), PYTHONPATH=str(ROOT),
               WORKBENCH_DATABASE_URL=settings.database_url)
    return start_serve(env, ROOT, workers)


def test_two_slow_checks_do_not_stop_a_two_worker_server(db_url, tmp_path):
    from tests.fixtures.vault import _empty
    settings = Settings.from_env({}, instance=str(tmp_path / "instance"), database_url=db_url)
    v = Vault(settings)
    _empty(v)
    v.open(migrate=False)
    with v.factory.begin() as s:
        create_user(s, SYSTEM, "ed", "a-long-password-1", "editor")
        token = create_token(s, SYSTEM, "ed", username="ed").secret
    v.close()
    slow = [SlowTarget(trickle=False), SlowTarget(trickle=True)]
    proc, url = _serve(settings, workers=2)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        for i, target in enumerate(slow):
            r = requests.post(f"{url}/api/v1/credentials", headers=auth, timeout=10, json={
                "id": f"slow-{i}", "type": "secret_text",
                "values": {"secret": "s3cret-token", "target": target.url}})
            assert r.status_code == 201, r.text
        for i in range(2):
            r = requests.post(f"{url}/api/v1/credentials/slow-{i}/verify", timeout=10,
                              headers={**auth, "Prefer": "respond-async"})
            assert r.status_code == 202 and r.json()["status"] == "Checking…", r.text
            assert r.headers["Location"].endswith(f"/api/v1/credentials/slow-{i}?workspace=default")
        # Both tests are running; the two workers still answer everyone else.
        listed = requests.get(f"{url}/api/v1/credentials", headers=auth, timeout=5)
        assert listed.status_code == 200
        assert [c["status"] for c in listed.json()["items"]] == ["Checking…", "Checking…"]
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        assert requests.post(f"{url}/api/v1/credentials/slow-0/verify?wait=false", timeout=5,
                             headers=auth).status_code == 202  # not a second run
        done: dict = {}
        deadline = time.monotonic() + 60
        while len(done) < 2 and time.monotonic() < deadline:
            for i in range(2):
                c = requests.get(f"{url}/api/v1/credentials/slow-{i}", headers=auth,
                                 timeout=5).json()
                if c["status"] != "Checking…":
                    done[i] = c
            time.sleep(0.5)
        assert len(done) == 2, "the tests did not finish"
        for c in done.values():
            assert c["status"] == "Issues found" and "within 10 s" in c["status_message"], c
    finally:
        proc.terminate()
        proc.wait(30)
        for target in slow:
            target.close()
