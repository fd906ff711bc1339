"""Resolve throughput of the real server against a plain Flask "hello" under the same gunicorn.

Both servers run as `workbench serve`-style gunicorn (gthread, same workers/threads, access log
on) on 127.0.0.1; `wrk` loads each for a fixed duration, alternating, and the medians and their
ratio are printed as a markdown table.  Needs `wrk` (Debian package) on PATH.

Usage: python bench/resolve_bench.py [--duration 10] [--rounds 3] [--backend sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("WORKBENCH_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORKERS, THREADS = 2, 4  # the defaults of `workbench serve`
N_CREDS = 100
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local i = 0
request = function()
  i = (i %% %(n)d) + 1
  return wrk.format(nil, "%(path)s", nil, string.format('{"refs":["cred-%%03d"]}', i))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hello_server(port: int) -> None:
    """The baseline: one JSON endpoint, served exactly like `workbench serve` serves the vault."""
    from flask import Flask, jsonify, request
    from gunicorn.app.base import BaseApplication

    app = Flask("hello")

    @app.post("/hello")
    def hello():
        request.get_json(silent=True)
        return jsonify({"hello": "world"})

    class _App(BaseApplication):
        def load_config(self):
            for k, val in {"bind": f"127.0.0.1:{port}", "workers": WORKERS, "threads": THREADS,
                           "accesslog": "-", "worker_class": "gthread"}.items():
                self.cfg.set(k, val)

        def load(self):
            return app

    _App().run()


def seed(env: dict[str, str]) -> str:
    """Create N_CREDS credentials and a runner token in a fresh vault; return the token."""
    from workbench import accounts, credentials
    from workbench.audit import SYSTEM, unit
    from workbench.config import Settings
    from workbench.vault import Vault

    v = Vault(Settings.from_env(env)).open()
    with unit(v.factory) as s:
        for i in range(1, N_CREDS + 1):
            credentials.create_credential(
                s, v.barrier, SYSTEM, workspace="default", cred_id=f"cred-{i:03d}",
                type="username_password",
                values={"username": f"user{i}", "password": uuid.uuid4().hex})
        token = accounts.create_token(s, SYSTEM, "bench", kind="runner",
                                      workspace="default").secret
    v.engine.dispose()
    return token


def start(cmd: list[str], env: dict[str, str], port: int, probe: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{probe}", timeout=1)
            return proc
        except OSError as e:  # refused while starting; HTTP errors mean it is up
            if getattr(e, "code", None):
                return proc
            time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"server {cmd} did not start")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def load(port: int, script: Path, duration: int, connections: int) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if bad or errors:
        raise SystemExit(f"load run had failures:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def pg_schema(create: bool, name: str) -> None:
    from sqlalchemy import create_engine, text
    eng = create_engine(PG_URL)
    with eng.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"' if create else
                          f'DROP SCHEMA "{name}" CASCADE'))
    eng.dispose()


def bench(backend: str, duration: int, rounds: int, connections: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="wb-resolve-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_INSTANCE=str(tmp / "instance"), PYTHONPATH=str(ROOT))
    schema = None
    if backend == "postgresql":
        schema = f"wb_bench_{uuid.uuid4().hex[:8]}"
        pg_schema(True, schema)
        env["WORKBENCH_DATABASE_URL"] = f"{PG_URL}?options=-csearch_path%3D{schema}"
    procs = []
    try:
        token = seed(env)
        scripts = {}
        for name, path in (("resolve", "/api/v1/resolve"), ("hello", "/hello")):
            scripts[name] = tmp / f"{name}.lua"
            fd = os.open(scripts[name], os.O_WRONLY | os.O_CREAT, 0o600)  # holds the token
            os.write(fd, (LUA % {"token": token, "n": N_CREDS, "path": path}).encode())
            os.close(fd)
        pv, ph = free_port(), free_port()
        py = sys.executable
        procs.append(start([py, "-m", "workbench", "serve", "--host", "127.0.0.1", "--port",
                            str(pv), "--workers", str(WORKERS), "--threads", str(THREADS)],
                           env, pv, "/healthz"))
        procs.append(start([py, __file__, "--hello-server", str(ph)], env, ph, "/hello"))
        load(pv, scripts["resolve"], 2, connections)  # warm-up both
        load(ph, scripts["hello"], 2, connections)
        got = {"resolve": [], "hello": []}
        for r in range(rounds):
            order = [("resolve", pv), ("hello", ph)]
            for name, port in order if r % 2 == 0 else order[::-1]:
                got[name].append(load(port, scripts[name], duration, connections))
        audited = count_resolve_audit(env)
        return {"backend": backend, "resolve": got["resolve"], "hello": got["hello"],
                "audited": audited}
    finally:
        for p in procs:
            stop(p)
        if schema:
            pg_schema(False, schema)
        shutil.rmtree(tmp, ignore_errors=True)


def count_resolve_audit(env: dict[str, str]) -> int:
    """Proof the benchmark did not skip the audit: resolve events in the log."""
    from sqlalchemy import func, select
    from workbench.config import Settings
    from workbench.models import AuditEvent
    from workbench.vault import Vault
    v = Vault(Settings.from_env(env))
    with v.factory() as s:
        n = s.scalar(select(func.count()).select_from(AuditEvent)
                     .where(AuditEvent.action == "credential.resolve"))
    v.engine.dispose()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hello-server", type=int)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--backend", default="sqlite,postgresql")
    a = ap.parse_args()
    if a.hello_server:
        return hello_server(a.hello_server)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    print(f"gunicorn gthread {WORKERS} workers x {THREADS} threads, wrk -t2 -c{a.connections} "
          f"-d{a.duration}s, {a.rounds} alternating rounds, {N_CREDS} credentials, one ref "
          f"per request, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    rows = [bench(b, a.duration, a.rounds, a.connections) for b in a.backend.split(",")]
    print("| backend | resolve req/s (median) | hello req/s (median) | ratio | runs resolve "
          "| runs hello | resolve audit rows |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mr, mh = statistics.median(r["resolve"]), statistics.median(r["hello"])
        print(f"| {r['backend']} | {mr:.0f} | {mh:.0f} | {mr / mh:.2f} | "
              f"{', '.join(f'{x:.0f}' for x in r['resolve'])} | "
              f"{', '.join(f'{x:.0f}' for x in r['hello'])} | {r['audited']} |")


if __name__ == "__main__":
    main()
