"""Issue 17's fault test for the resolve path: three app instances on a private PostgreSQL
cluster under concurrent resolve clients; one instance is killed with SIGKILL, then PostgreSQL
is stopped and started again.

Checks: no resolve answered 200 without its audit row (per credential, client-side 200s against
``credential.resolve`` ok rows), which errors the clients saw and when, and that every
surviving instance answers again by itself once PostgreSQL is back (the hot path replaces dead
connections: ``statements.Raw``).  The cluster is its own (initdb into a temporary folder,
its own port): the shared server is never touched.  As root, PostgreSQL runs as the
``postgres`` user (initdb refuses root).

Usage: python bench/fault_bench.py [--clients 200] [--seconds 36] [--kill-at 8]
                                   [--restart-at 16] [--outage 3] [--workers N]
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resolve_bench as rb  # noqa: E402
import resolve_client  # noqa: E402
import scale_bench  # noqa: E402


class Cluster:
    """A throw-away PostgreSQL cluster, run by the ``postgres`` user."""

    def __init__(self, root: Path):
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent
        self.data, self.port = root / "pgdata", rb.free_port()
        self.sudo = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        root.mkdir(exist_ok=True)
        if self.sudo:
            shutil.chown(root, "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([*self.sudo, str(self.bin / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ctl(self, action: str) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "-l",
                 str(self.data.parent / "postgres.log"), "-o",
                 f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 "
                 "-c max_connections=200", action)


@contextmanager
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="wb-fault-pg-"))
    os.chmod(root, 0o755)
    c = Cluster(root / "pg")
    c.ctl("start")
    try:
        yield c
    finally:
        try:
            c.ctl("stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


def phases(events, marks: dict[str, float]) -> list[tuple[str, Counter]]:
    """Outcomes counted between the marks (kill, PostgreSQL down, PostgreSQL up)."""
    bounds = [("before the kill", 0.0)] + sorted(marks.items(), key=lambda kv: kv[1])
    out = []
    for k, (name, start) in enumerate(bounds):
        end = bounds[k + 1][1] if k + 1 < len(bounds) else float("inf")
        out.append((name, Counter(o for t, _, o in events if start <= t < end)))
    return out


def recovery(events, up: float, ports: list[int]) -> dict[int, tuple[float, float]]:
    """Per instance: seconds from PostgreSQL up to its first 200, and to its last failure."""
    out = {}
    for port in ports:
        after = [(t, o) for t, p, o in events if p == port and t >= up]
        first = next((t for t, o in after if o == "200"), None)
        last_bad = max((t for t, o in after if o != "200"), default=up)
        out[port] = (first - up if first else float("nan"), last_bad - up)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=36)
    ap.add_argument("--kill-at", type=float, default=8)
    ap.add_argument("--restart-at", type=float, default=16)
    ap.add_argument("--outage", type=float, default=3, help="seconds PostgreSQL stays down")
    ap.add_argument("--workers", type=int, default=rb.WORKERS, help="gunicorn workers each")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="wb-fault-bench-"))
    try:
        with cluster() as pg:
            env = scale_bench.instance_env(tmp, pg.url)
            token = rb.seed(env)
            with scale_bench.instances(env, tmp, 3, a.workers) as running:
                ports = [port for _, port in running]
                before = scale_bench.audit_ok(env)
                result: list[resolve_client.Tally] = []
                load = threading.Thread(target=lambda: result.append(
                    resolve_client.run(ports, token, a.clients, a.seconds)))
                t0 = time.monotonic()
                load.start()
                time.sleep(a.kill_at)
                marks = {"instance killed": time.monotonic()}
                os.killpg(running[0][0].pid, signal.SIGKILL)
                running[0][0].wait()
                time.sleep(max(0.0, t0 + a.restart_at - time.monotonic()))
                marks["PostgreSQL stopping"] = time.monotonic()
                pg.ctl("stop")
                marks["PostgreSQL down"] = time.monotonic()
                time.sleep(a.outage)
                pg.ctl("start")
                marks["PostgreSQL up"] = time.monotonic()
                load.join()
                tally = result[0]
                after = scale_bench.audit_ok(env)
                probes = {port: resolve_client.run([port], token, 1, 0.01).statuses
                          for port in ports[1:]}
        report(a, tally, before, after, marks, t0, ports, probes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(a, tally, before, after, marks, t0, ports, probes) -> None:
    print(f"3 instances x {a.workers} workers, private PostgreSQL, {a.clients} clients for "
          f"{a.seconds:.0f} s; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(", ".join(f"{k} at {v - t0:.1f} s" for k, v in marks.items()))
    print(f"\nanswered {tally.answered} ({dict(tally.statuses)}), connection errors "
          f"{dict(tally.errors)}, p50 {tally.percentile(50):.1f} ms, p99 "
          f"{tally.percentile(99):.1f} ms")
    print("audit rows vs 200s, per credential:",
          scale_bench.check_audit(before, after, tally))
    print("\n| phase | outcomes (HTTP status or connection error: count) |\n|---|---|")
    for name, counts in phases(tally.events, marks):
        print(f"| {name} | {', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))} |")
    print()
    for port, (first, last) in recovery(tally.events, marks["PostgreSQL up"], ports).items():
        print(f"instance :{port}: first 200 {first:.2f} s after PostgreSQL was up, last failure "
              f"{last:.2f} s after; probe after the run: {dict(probes.get(port, {})) or 'killed'}")


if __name__ == "__main__":
    main()
