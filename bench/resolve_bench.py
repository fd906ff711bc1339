"""Resolve throughput of the real server against a plain Flask "hello" under the same gunicorn.

Both servers run as `workbench serve`-style gunicorn (gthread, same workers/threads, access log
on) on 127.0.0.1; `wrk` loads each for a fixed duration, alternating, and the medians and their
ratio are printed as a markdown table.  A third server, the *floor*, does the least any audited
resolve must do: it commits one audit row on the same database through the hot path's own
write (``audit.append`` on a ``statements`` connection) and answers, with no Flask, no token
check, no read and no decryption.  Its ratio to hello bounds what a resolve can reach on this
machine and backend.  Needs `wrk` (Debian package) on PATH.

Usage: python bench/resolve_bench.py [--duration 10] [--rounds 3] [--backend sqlite,postgresql]
                                    [--workers N] [--threads N]  (default: `workbench serve`'s)
                                    [--compare DIR]...  (other checkouts, e.g. before a change)
"""
from __future__ import annotations

import argparse
import os
import re
import resource
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
from collections import Counter
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.cli.admin import SERVE_THREADS, default_workers, run_gunicorn  # noqa: E402

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
    """The baseline: one JSON endpoint."""
    from flask import Flask, jsonify, request

    app = Flask("hello")

    @app.post("/hello")
    def hello():
        request.get_json(silent=True)
        return jsonify({"hello": "world"})

    run_gunicorn(lambda: app, host="127.0.0.1", port=port, workers=workers, threads=threads)


def floor_server(port: int, workers: int, threads: int) -> None:
    """The floor: per request, one audit row committed before the answer, and nothing else.
    Its vault is opened in each worker, after the fork: the connections are that worker's own."""
    from workbench import audit, statements
    from workbench.audit import Actor
    from workbench.config import Settings
    from workbench.vault import Vault

    actor = Actor("floor", role="runner", source="127.0.0.1", kind="runner")
    answer = b'{"floor":true}\n'

    def app():
        vault = Vault(Settings.from_env())

        def floor(environ, start_response):
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            with statements.connection(vault.hot_pool) as raw:
                audit.append(raw, actor, "bench.floor", [("floor", {})], workspace="default")
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(answer)))])
            return [answer]
        return floor

    run_gunicorn(app, host="127.0.0.1", port=port, workers=workers, threads=threads)


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
        # ad hoc (no run): since run tokens, a runner token needs an allow-list for that
        token = accounts.create_token(s, SYSTEM, "bench", kind="runner",
                                      workspace="default", allow=["*"]).secret
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


def database_cpu_seconds() -> float:
    """User+system CPU of the local PostgreSQL server's processes (0 when it runs elsewhere, and
    for SQLite, whose work is inside the server's own processes)."""
    ticks = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "postgres":
                fields = (proc / "stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])
        except OSError:  # gone meanwhile
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def backends_cpu(app_name: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected with ``application_name`` (a server's
    own connections: on a shared machine the other PostgreSQL processes serve other people's
    tests, so ``database_cpu_seconds`` would count their work too)."""
    import psycopg
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"),
                         autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity "
                                           "WHERE application_name = %s", (app_name,))]
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def with_app_name(env: dict[str, str], name: str) -> dict[str, str]:
    """``env`` whose PostgreSQL connections say ``application_name=name`` (see backends_cpu)."""
    url = env.get("WORKBENCH_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        return env
    return {**env, "WORKBENCH_DATABASE_URL":
            f"{url}{'&' if '?' in url else '?'}application_name={name}"}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def millis(text: str) -> float:
    """wrk's latency figure ("812.00us", "1.25ms", "2.01s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


class Run(NamedTuple):
    """One wrk run: throughput, latency, and CPU µs per request of each part of the machine."""
    rps: float
    requests: int
    server_us: float  # gunicorn master and workers
    database_us: float  # the local PostgreSQL server's processes
    wrk_us: float  # the load generator
    p50: float
    p99: float
    load: float  # the machine's 1-minute load average when the run started

    @property
    def total_us(self) -> float:
        return self.server_us + self.database_us + self.wrk_us


def load(port: int, script: Path, duration: int, connections: int,
         proc: subprocess.Popen | None = None, app_name: str | None = None) -> Run:
    """One wrk run against a server; any non-2xx answer or socket error stops.  Database CPU:
    the backends of ``app_name`` on PostgreSQL (see ``backends_cpu``), else none."""
    load_avg = os.getloadavg()[0]
    cpu = cpu_seconds(proc) if proc else 0.0
    db0 = backends_cpu(app_name) if app_name else {}
    gen = children_cpu_seconds()
    run = subprocess.run(["wrk", "--latency", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         check=True)
    gen = children_cpu_seconds() - gen
    db = sum(t - db0.get(pid, 0.0) for pid, t in backends_cpu(app_name).items()) \
        if app_name else 0.0
    out = run.stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out) or re.search(r"Socket errors", out):
        errors = "\n".join(line for line in Path(script.parent / f"server-{port}.log")
                           .read_text().splitlines() if '" 200 ' not in line)
        raise SystemExit(f"load run had failures:\n{out}\n{run.stderr[:3000]}\n"
                         f"server log:\n{errors[-5000:]}")
    n = int(re.search(r"(\d+) requests in", out).group(1))
    per = 1e6 / max(n, 1)
    cpu = (cpu_seconds(proc) - cpu) * per if proc else 0.0
    p50, p99 = (millis(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1)) for q in (50, 99))
    return Run(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), n, cpu, db * per,
               gen * per, p50, p99, load_avg)


def pg_schema(create: bool, name: str) -> None:
    from sqlalchemy import create_engine, text
    eng = create_engine(PG_URL)
    with eng.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"' if create else
                          f'DROP SCHEMA "{name}" CASCADE'))
    eng.dispose()


def fresh_env(tmp: Path, backend: str) -> tuple[dict[str, str], str | None]:
    """The environment of a fresh vault under ``tmp`` (PostgreSQL: in a new schema, returned
    for ``pg_schema(False, …)``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_INSTANCE=str(tmp / "instance"), PYTHONPATH=str(ROOT))
    schema = None
    if backend == "postgresql":
        schema = f"wb_bench_{uuid.uuid4().hex[:8]}"
        pg_schema(True, schema)
        env["WORKBENCH_DATABASE_URL"] = f"{PG_URL}?options=-csearch_path%3D{schema}"
    return env, schema


def bench(backend: str, duration: int, rounds: int, connections: int,
          compare: list[Path], workers: int, threads: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="wb-resolve-bench-"))
    env, schema = fresh_env(tmp, backend)
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
            app_name = f"wbbench-{port}"
            procs.append(start([py, "-m", "workbench", "serve", "--host", "127.0.0.1", "--port",
                                str(port), "--workers", str(workers), "--threads", str(threads)],
                               {**with_app_name(env, app_name), "PYTHONPATH": str(src)}, port,
                               "/healthz", cwd=src))
            servers[label] = (port, scripts["resolve"], procs[-1], app_name)
        for label, flag in (("floor", "--floor-server"), ("hello", "--hello-server")):
            port = free_port()
            app_name = f"wbbench-{port}"
            procs.append(start([py, __file__, flag, str(port), "--workers", str(workers),
                                "--threads", str(threads)], with_app_name(env, app_name), port,
                               "/hello"))
            servers[label] = (port, scripts["hello"], procs[-1], app_name)
        runs: dict[str, list[Run]] = {label: [] for label in servers}
        counts: Counter[str] = Counter()  # requests answered, to check against the audit log
        pg = backend == "postgresql"
        for label, (port, script, _, _) in servers.items():  # warm-up
            counts[label.split()[0]] += load(port, script, 2, connections).requests
        labels = list(servers)
        for r in range(rounds):  # rotate the order so each server meets the noise in each slot
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                port, script, proc, app_name = servers[label]
                runs[label].append(load(port, script, duration, connections, proc,
                                        app_name if pg else None))
                counts[label.split()[0]] += runs[label][-1].requests
        return {"backend": backend, "runs": runs, "resolved": counts["resolve"],
                "floored": counts["floor"], "audited": count_audit(env, "credential.resolve"),
                "floor_audited": count_audit(env, "bench.floor")}
    finally:
        for p in procs:
            stop(p)
        if schema:
            pg_schema(False, schema)
        shutil.rmtree(tmp, ignore_errors=True)


def count_audit(env: dict[str, str], action: str) -> int:
    """Proof the benchmark did not skip the audit: events of one action in the log."""
    from sqlalchemy import func, select
    from workbench.config import Settings
    from workbench.models import AuditEvent
    from workbench.vault import Vault
    v = Vault(Settings.from_env(env))
    with v.factory() as s:
        n = s.scalar(select(func.count()).select_from(AuditEvent)
                     .where(AuditEvent.action == action))
    v.close()
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hello-server", type=int)
    ap.add_argument("--floor-server", type=int)
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
    if a.floor_server:
        return floor_server(a.floor_server, a.workers, a.threads)
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk")
    print(f"gunicorn gthread {a.workers} workers x {a.threads} threads, wrk -t2 -c{a.connections} "
          f"-d{a.duration}s, {a.rounds} alternating rounds, {N_CREDS} credentials, one ref "
          f"per request, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    compare = [Path(c).resolve() for c in a.compare or []]
    print("| backend | server | req/s (median) | ratio to hello | ratio to floor | runs (load "
          "average at each) | CPU µs/req: server + database + wrk (medians) | CPU ratio "
          "hello/this | CPU ratio floor/this | latency p50 / p99 ms (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    notes = []
    for backend in a.backend.split(","):
        r = bench(backend, a.duration, a.rounds, a.connections, compare, a.workers, a.threads)
        med = {label: Run(*(statistics.median(getattr(x, f) for x in runs) for f in Run._fields))
               for label, runs in r["runs"].items()}
        hello, floor = med["hello"], med["floor"]
        for label, m in med.items():
            runs = ", ".join(f"{x.rps:.0f} ({x.load:.1f})" for x in r["runs"][label])
            print(f"| {r['backend']} | {label} | {m.rps:.0f} | {m.rps / hello.rps:.2f} | "
                  f"{m.rps / floor.rps:.2f} | {runs} | {m.server_us:.0f} + {m.database_us:.0f} + "
                  f"{m.wrk_us:.0f} | {hello.total_us / m.total_us:.2f} | "
                  f"{floor.total_us / m.total_us:.2f} | {m.p50:.1f} / {m.p99:.1f} |", flush=True)
        notes.append(f"{r['backend']}: {r['resolved']} resolve requests answered 200, "
                     f"{r['audited']} credential.resolve audit rows; the floor answered "
                     f"{r['floored']} requests and wrote {r['floor_audited']} rows")
    print("\n" + "\n".join(notes))

if __name__ == "__main__":
    main()
