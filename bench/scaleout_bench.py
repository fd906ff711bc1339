"""Several `workbench serve` instances on one PostgreSQL under many concurrent resolving
clients, with faults: an instance killed with SIGKILL, or PostgreSQL restarted.

Everything runs on a private PostgreSQL cluster (initdb into a temporary folder, its own port,
run as the `postgres` user when started as root), so that restarting it disturbs no one.  Each
instance has its own instance folder and shares only the database and the master key.  One
`wrk` per instance plays the load balancer's share of the clients (connections / instances
each).  A run has two phases: `load` (the fault, if any, comes a third of the way in) and
`after` (5 s on the instances still up: do they answer again by themselves?).  For each phase
it prints requests, answers 200, other answers, socket errors, the worst instance's p50/p99
and the `credential.resolve` audit rows written: every answered resolve must have its row.

Usage: python bench/scaleout_bench.py [--instances 3] [--connections 200] [--duration 20]
                                      [--fault none|kill|pg-restart] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resolve_bench import (LUA, N_CREDS, ROOT, count_audit, free_port, millis, seed,  # noqa: E402
                           start, stop)

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1] if \
    Path("/usr/lib/postgresql").exists() else None


class Cluster:
    """A private PostgreSQL cluster in a temporary folder."""

    def __init__(self, tmp: Path):
        self.dir, self.port = tmp / "pg", free_port()
        self.dir.mkdir(mode=0o700)
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(tmp, "postgres")
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(PG_BIN / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _ctl(self, action: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-m", "fast",
                  "-l", str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=300 -c fsync=on", action)

    def start(self):
        self._ctl("start")

    def restart(self):
        self._ctl("restart")

    def stop(self):
        self._ctl("stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


def wrk(port: int, script: Path, duration: int, connections: int, out: dict) -> None:
    run = subprocess.run(["wrk", "--latency", "-t1", f"-c{connections}", f"-d{duration}s",
                          "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True)
    text = run.stdout
    n = int(m.group(1)) if (m := re.search(r"(\d+) requests in", text)) else 0
    bad = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    sock = sum(map(int, m.groups())) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)) else 0
    lat = {q: millis(m.group(1)) for q in (50, 99)
           if (m := re.search(rf"^\s+{q}%\s+(\S+)", text, re.M))}
    out[port] = {"requests": n, "ok": n - bad, "bad": bad, "socket": sock, **lat}


def phase(ports: list[int], script: Path, duration: int, connections: int,
          fault=None) -> dict:
    """wrk against every port at once; ``fault()`` runs a third of the way in."""
    out: dict = {}
    each = max(1, connections // len(ports))
    threads = [threading.Thread(target=wrk, args=(p, script, duration, each, out))
               for p in ports]
    for t in threads:
        t.start()
    if fault:
        time.sleep(duration / 3)
        fault()
    for t in threads:
        t.join()
    return out


def row(name: str, res: dict, audited: int) -> str:
    total = {k: sum(r[k] for r in res.values()) for k in ("requests", "ok", "bad", "socket")}
    p50 = max((r.get(50, 0) for r in res.values()), default=0)
    p99 = max((r.get(99, 0) for r in res.values()), default=0)
    verdict = "yes" if audited >= total["ok"] else "NO"
    return (f"| {name} | {total['requests']} | {total['ok']} | {total['bad']} | "
            f"{total['socket']} | {p50:.1f} / {p99:.1f} | {audited} | {verdict} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--workers", type=int, default=None, help="gunicorn workers per instance")
    ap.add_argument("--fault", choices=("none", "kill", "pg-restart"), default="none")
    a = ap.parse_args()
    if not shutil.which("wrk") or PG_BIN is None:
        raise SystemExit("needs wrk and PostgreSQL's server binaries (apt-get install wrk "
                         "postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="wb-scaleout-"))
    tmp.chmod(0o755)
    pg = Cluster(tmp)
    procs, ports = [], []
    try:
        from workbench import crypto
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
        env.update(PYTHONPATH=str(ROOT), WORKBENCH_DATABASE_URL=pg.url,
                   WORKBENCH_MASTER_KEY=crypto.encode_key(crypto.generate_key()),
                   WORKBENCH_INSTANCE=str(tmp / "seed"))
        token = seed(env)
        script = tmp / "resolve.lua"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT, 0o600)  # holds the token
        os.write(fd, (LUA % {"token": token, "n": N_CREDS, "path": "/api/v1/resolve"})
                 .replace('if status ~= 200 then io.stderr:write(status .. " " .. '
                          'string.sub(body, 1, 300) .. "\\n") end', "").encode())
        os.close(fd)
        workers = ["--workers", str(a.workers)] if a.workers else []
        for i in range(a.instances):
            port = free_port()
            ienv = {**env, "WORKBENCH_INSTANCE": str(tmp / f"app{i}" / "instance")}
            (tmp / f"app{i}").mkdir()
            procs.append(start([sys.executable, "-m", "workbench", "serve", "--port",
                                str(port), *workers], ienv, port, "/healthz"))
            ports.append(port)
        phase(ports, script, 2, a.connections)  # warm-up
        faults = {"none": None, "kill": lambda: os.killpg(procs[0].pid, signal.SIGKILL),
                  "pg-restart": pg.restart}
        serve = " ".join(["workbench serve", *workers])
        print(f"{a.instances} instances (`{serve}`), {a.connections} connections, {a.duration} s, fault: {a.fault}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
        print("| phase | requests | answered 200 | other answers | socket errors | "
              "p50 / p99 ms (worst instance) | audit rows | rows ≥ answers |")
        print("|---|---|---|---|---|---|---|---|")
        before = count_audit(env, "credential.resolve")
        res = phase(ports, script, a.duration, a.connections, faults[a.fault])
        mid = count_audit(env, "credential.resolve")
        print(row("load", res, mid - before), flush=True)
        alive = ports[1:] if a.fault == "kill" else ports
        res2 = phase(alive, script, 5, a.connections)
        print(row("after", res2, count_audit(env, "credential.resolve") - mid))
        for port, r in res.items():
            print(f"\ninstance :{port}: {r}", end="")
        print()
    finally:
        for p in procs:
            try:
                stop(p)
            except ProcessLookupError:
                pass
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
