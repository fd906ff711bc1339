"""CPU per resolve in-process: the whole WSGI app called directly, no server, no load generator.

The server benchmark (`resolve_bench.py`) is the figure that counts, but on a shared machine its
runs differ by ±50 µs per request, more than most changes to the hot path make.  This one calls
the app of each checkout in a fresh process, alternating checkouts from round to round, and
reports the median CPU per call of that process and of the local PostgreSQL server: it tells
whether a change to the hot path saves work, before the server benchmark tells by how much.

Usage: python bench/resolve_cpu.py [--calls 3000] [--rounds 6] [--backend sqlite,postgresql]
                                   [--compare DIR]...  (other checkouts, e.g. before a change)
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def environ(token: str, i: int, n_creds: int) -> dict:
    """The request resolve_bench's wrk script sends, as a WSGI environ."""
    body = ('{"refs":["cred-%03d"]}' % (i % n_creds + 1)).encode()
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/v1/resolve", "SCRIPT_NAME": "",
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/json", "HTTP_AUTHORIZATION": f"Bearer {token}",
            "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000", "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.version": (1, 0)}


def child(calls: int, n_creds: int) -> None:
    """In the checkout under test (cwd, PYTHONPATH): time ``calls`` resolves; print JSON."""
    from workbench import create_app  # the checkout's: imported before resolve_bench adds ours
    from resolve_bench import database_cpu_seconds
    token = sys.stdin.readline().strip()
    app = create_app()
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call(i: int) -> None:
        for _ in app(environ(token, i, n_creds), start_response):
            pass
    for i in range(300):  # warm-up: statement caches, prepared statements, the pool
        call(i)
    db, cpu = database_cpu_seconds(), time.process_time()
    for i in range(calls):
        call(i)
    cpu, db = time.process_time() - cpu, database_cpu_seconds() - db
    if any(not s.startswith("200") for s in statuses):
        raise SystemExit(f"not every resolve answered 200: {sorted(set(statuses))}")
    print(json.dumps({"app": cpu / calls * 1e6, "database": db / calls * 1e6}))


def measure(backend: str, calls: int, rounds: int, checkouts: list[Path]) -> dict:
    sys.path.insert(0, str(HERE.parent))
    import resolve_bench as rb
    tmp = Path(tempfile.mkdtemp(prefix="wb-resolve-cpu-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env["WORKBENCH_INSTANCE"] = str(tmp / "instance")
    schema = None
    if backend == "postgresql":
        schema = f"wb_cpu_{uuid.uuid4().hex[:8]}"
        rb.pg_schema(True, schema)
        env["WORKBENCH_DATABASE_URL"] = f"{rb.PG_URL}?options=-csearch_path%3D{schema}"
    try:
        token = rb.seed(env)
        got: dict[Path, list[dict]] = {c: [] for c in checkouts}
        for r in range(rounds):  # alternate, so that each checkout meets the noise in each slot
            for src in checkouts[r % len(checkouts):] + checkouts[:r % len(checkouts)]:
                run = subprocess.run(
                    [sys.executable, __file__, "--child", str(calls), "--creds", str(rb.N_CREDS)],
                    input=token + "\n", cwd=src, capture_output=True, text=True,
                    env={**env, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])})
                if run.returncode:
                    raise SystemExit(f"{src}: {run.stderr[-3000:]}")
                got[src].append(json.loads(run.stdout.strip().splitlines()[-1]))
        return got
    finally:
        if schema:
            rb.pg_schema(False, schema)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--creds", type=int, default=100, help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--backend", default="sqlite,postgresql")
    ap.add_argument("--compare", metavar="DIR", action="append", default=[])
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.creds)
    checkouts = [HERE.parent] + [Path(c).resolve() for c in a.compare]
    print(f"{a.calls} resolves per run, {a.rounds} alternating runs per checkout, one ref per "
          f"request, load average {os.getloadavg()[0]:.2f}\n")
    print("| backend | checkout | CPU µs per resolve: app + database (medians) | app, each run |")
    print("|---|---|---|---|", flush=True)
    for backend in a.backend.split(","):
        for src, runs in measure(backend, a.calls, a.rounds, checkouts).items():
            app = statistics.median(r["app"] for r in runs)
            db = statistics.median(r["database"] for r in runs)
            each = ", ".join(f"{r['app']:.0f}" for r in runs)
            print(f"| {backend} | {src.name} | {app:.0f} + {db:.0f} = {app + db:.0f} | {each} |",
                  flush=True)


if __name__ == "__main__":
    main()
