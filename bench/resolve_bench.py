"""Resolve throughput of the real server against a plain Flask "hello" under the same gunicorn.

Both servers run as `workbench serve`-style gunicorn (gthread, same workers/threads, access log
on) on 127.0.0.1; `wrk` loads each for a fixed duration, alternating, and the medians and their
ratio are printed as a markdown table.  Needs `wrk` (Debian package) on PATH.

Usage: python bench/resolve_bench.py [--duration 10] [--rounds 3] [--backend sqlite,postgresql]
                                    [--workers N] [--threads N]  (default: `workbench serve`'s)
                                    [--compare DIR]...  (other checkouts, e.g. before a change)
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

from workbench.cli.admin import SERVE_THREADS, default_workers  # noqa: E402

PG_URL = os.environ.get("WORKBENCH_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
WORKERS, THREADS = default_workers(), SERVE_THREADS  # `workbench serve`'s defaults
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
response = function(status, headers, body)
  if status ~= 200 then io.stderr:write(status .. " " .. string.sub(body, 1, 300) .. "\\n") end
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hello_server(port: int, workers: int, threads: int) -> None:
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
            for k, val in {"bind": f"127.0.0.1:{port}", "workers": workers, "threads": threads,
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
    v.close()
    return token


def start(cmd: list[str], env: dict[str, str], port: int, probe: str,
          cwd: Path = ROOT) -> subprocess.Popen:
    log = open(Path(env["WORKBENCH_INSTANCE"]).parent / f"server-{port}.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
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


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User+system CPU of a server: its master and worker processes (from /proc)."""
    pids = [proc.pid] + subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                       text=True).stdout.split()
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def millis(text: str) -> float:
    """wrk's latency figure ("812.00us", "1.25ms", "2.01s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def load(port: int, script: Path, duration: int, connections: int,
         proc: subprocess.Popen | None = None) -> tuple[float, int, float, float, float]:
    """(requests/s, requests, server CPU µs per request, p50 ms, p99 ms) of one wrk run; any
    non-2xx answer or socket error stops."""
    cpu = cpu_seconds(proc) if proc else 0.0
    run = subprocess.run(["wrk", "--latency", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         check=True)
    out = run.stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out) or re.search(r"Socket errors", out):
        errors = "\n".join(line for line in Path(script.parent / f"server-{port}.log")
                           .read_text().splitlines() if '" 200 ' not in line)
        raise SystemExit(f"load run had failures:\n{out}\n{run.stderr[:3000]}\n"
                         f"server log:\n{errors[-5000:]}")
    n = int(re.search(r"(\d+) requests in", out).group(1))
    cpu = (cpu_seconds(proc) - cpu) * 1e6 / max(n, 1) if proc else 0.0
    p50, p99 = (millis(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1)) for q in (50, 99))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), n, cpu, p50, p99


def pg_schema(create: bool, name: str) -> None:
    from sqlalchemy import create_engine, text
    eng = create_engine(PG_URL)
    with eng.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"' if create else
                          f'DROP SCHEMA "{name}" CASCADE'))
    eng.dispose()


def bench(backend: str, duration: int, rounds: int, connections: int,
          compare: list[Path], workers: int, threads: int) -> dict:
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
        py = sys.executable
        servers = {}  # label -> (port, lua script)
        for label, src in [("resolve", ROOT)] + [(f"resolve ({c.name})", c) for c in compare]:
            port = free_port()
            procs.append(start([py, "-m", "workbench", "serve", "--host", "127.0.0.1", "--port",
                                str(port), "--workers", str(workers), "--threads", str(threads)],
                               {**env, "PYTHONPATH": str(src)}, port, "/healthz", cwd=src))
            servers[label] = (port, scripts["resolve"], procs[-1])
        port = free_port()
        procs.append(start([py, __file__, "--hello-server", str(port), "--workers", str(workers),
                            "--threads", str(threads)], env, port, "/hello"))
        servers["hello"] = (port, scripts["hello"], procs[-1])
        got: dict[str, list[float]] = {label: [] for label in servers}
        cpu: dict[str, list[float]] = {label: [] for label in servers}
        lat: dict[str, list[tuple[float, float]]] = {label: [] for label in servers}
        resolved = 0
        for label, (port, script, _) in servers.items():  # warm-up
            resolved += load(port, script, 2, connections)[1] if label != "hello" else 0
        labels = list(servers)
        for r in range(rounds):  # rotate the order so each server meets the noise in each slot
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                port, script, proc = servers[label]
                rps, n, us, p50, p99 = load(port, script, duration, connections, proc)
                got[label].append(rps)
                cpu[label].append(us)
                lat[label].append((p50, p99))
                resolved += n if label != "hello" else 0
        audited = count_resolve_audit(env)
        return {"backend": backend, "runs": got, "cpu": cpu, "latency": lat, "audited": audited,
                "resolved": resolved}
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
    v.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hello-server", type=int)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=WORKERS, help="gunicorn workers, both servers")
    ap.add_argument("--threads", type=int, default=THREADS, help="threads per worker, both")
    ap.add_argument("--backend", default="sqlite,postgresql")
    ap.add_argument("--compare", metavar="DIR", action="append",
                    help="also serve the resolve API from another checkout (e.g. the code before "
                    "a change), in the same rounds; may be repeated")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop servers, remove files
    if a.hello_server:
        return hello_server(a.hello_server, a.workers, a.threads)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    print(f"gunicorn gthread {a.workers} workers x {a.threads} threads, wrk -t2 -c{a.connections} "
          f"-d{a.duration}s, {a.rounds} alternating rounds, {N_CREDS} credentials, one ref "
          f"per request, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    compare = [Path(c).resolve() for c in a.compare or []]
    print("| backend | server | req/s (median) | ratio to hello | runs | server CPU µs/req "
          "(median) | CPU ratio hello/server | latency p50 / p99 ms (median) |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    notes = []
    for backend in a.backend.split(","):
        r = bench(backend, a.duration, a.rounds, a.connections, compare, a.workers, a.threads)
        hello = statistics.median(r["runs"]["hello"])
        hello_cpu = statistics.median(r["cpu"]["hello"])
        for label, runs in r["runs"].items():
            med, us = statistics.median(runs), statistics.median(r["cpu"][label])
            p50, p99 = (statistics.median(x[i] for x in r["latency"][label]) for i in (0, 1))
            print(f"| {r['backend']} | {label} | {med:.0f} | {med / hello:.2f} | "
                  f"{', '.join(f'{x:.0f}' for x in runs)} | {us:.0f} | {hello_cpu / us:.2f} | "
                  f"{p50:.1f} / {p99:.1f} |", flush=True)
        notes.append(f"{r['backend']}: {r['resolved']} resolve requests answered 200, "
                     f"{r['audited']} credential.resolve audit rows")
    print("\n" + "\n".join(notes))

if __name__ == "__main__":
    main()
