"""Issue 17's resolve targets: resolve against the floor on both databases, and three app
instances on one PostgreSQL under 200 concurrent clients.

Part 1 runs `bench/resolve_bench.py`'s servers (the real `workbench serve`, the floor that only
commits the same audit row, and hello) with wrk, alternating, on SQLite and PostgreSQL, and
reports the median resolve/floor ratio (target ≥ 0.8).

Part 2 starts three `workbench serve` processes with different instance folders on one
PostgreSQL schema and the same master key file, and runs ``--clients`` concurrent clients
(`bench/resolve_client.py`, spread round-robin over the instances) for ``--seconds`` per round.
It reports p50/p99 latency, errors, and checks, per credential, that the audit log gained
exactly one ``credential.resolve`` ok row per 200 the clients received (target: p99 < 100 ms,
0 errors, rows = answers).

With ``--pace``, the clients also run paced (each sends a request every so many seconds, as CI
steps do), since 200 clients sending back to back measure queueing: by Little's law their mean
latency is 200 ÷ throughput, whatever the instances do.

Usage: python bench/scale_bench.py [--part ratio,scale] [--rounds 3] [--duration 5]
                                   [--seconds 15] [--clients 200] [--pace 0,1] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resolve_bench as rb  # noqa: E402
import resolve_client  # noqa: E402


def instance_env(tmp: Path, url: str) -> dict[str, str]:
    """The environment every instance shares: the database and the master key file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_DATABASE_URL=url, WORKBENCH_MASTER_KEY_FILE=str(tmp / "master.key"),
               WORKBENCH_INSTANCE=str(tmp / "seed"), PYTHONPATH=str(rb.ROOT))
    return env


def start_instance(env: dict[str, str], folder: Path, workers: int):
    """One `workbench serve` with its own instance folder; (process, port)."""
    port = rb.free_port()
    env = {**env, "WORKBENCH_INSTANCE": str(folder)}
    proc = rb.start([sys.executable, "-m", "workbench", "serve", "--host", "127.0.0.1",
                     "--port", str(port), "--workers", str(workers)], env, port, "/healthz")
    return proc, port


@contextmanager
def instances(env: dict[str, str], tmp: Path, n: int, workers: int) -> Iterator[list]:
    """``n`` running instances, each [process, port]; all stopped at the end."""
    running = []
    try:
        for k in range(n):
            running.append(list(start_instance(env, tmp / f"instance-{k}", workers)))
        yield running
    finally:
        for proc, _ in running:
            if proc.poll() is None:
                rb.stop(proc)


def audit_ok(env: dict[str, str]) -> Counter:
    """``credential.resolve`` ok rows per credential ID."""
    from sqlalchemy import func, select
    from workbench.config import Settings
    from workbench.models import AuditEvent
    from workbench.vault import Vault
    v = Vault(Settings.from_env(env))
    with v.factory() as s:
        rows = s.execute(select(AuditEvent.target, func.count()).where(
            AuditEvent.action == "credential.resolve", AuditEvent.outcome == "ok")
            .group_by(AuditEvent.target)).all()
    v.close()
    return Counter(dict(rows))


def ratio(rounds: int, duration: int, workers: int) -> None:
    print(f"## resolve vs floor (wrk -c16 -d{duration}s, {rounds} alternating rounds, "
          f"{workers} workers x 1 thread, load average {os.getloadavg()[0]:.1f})\n")
    print("| backend | resolve req/s (runs) | floor req/s (runs) | resolve/floor (median of "
          "per-round ratios) | resolve p50 / p99 ms |")
    print("|---|---|---|---|---|", flush=True)
    for backend in ("sqlite", "postgresql"):
        r = rb.bench(backend, duration, rounds, 16, [], workers, 1)["runs"]
        per_round = [a.rps / b.rps for a, b in zip(r["resolve"], r["floor"])]
        fmt = lambda runs: ", ".join(f"{x.rps:.0f}" for x in runs)  # noqa: E731
        print(f"| {backend} | {fmt(r['resolve'])} | {fmt(r['floor'])} | "
              f"{statistics.median(per_round):.2f} ({', '.join(f'{x:.2f}' for x in per_round)})"
              f" | {statistics.median(x.p50 for x in r['resolve']):.1f} / "
              f"{statistics.median(x.p99 for x in r['resolve']):.1f} |", flush=True)


def _own_cpu() -> float:
    """CPU seconds this process (the clients) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def check_audit(before: Counter, after: Counter, tally: resolve_client.Tally) -> str:
    """Per credential: the audit rows gained, against the 200s the clients received."""
    gained = after - before
    short = {c: (tally.ok[c], gained[c]) for c in tally.ok if gained[c] < tally.ok[c]}
    extra = sum(gained.values()) - sum(tally.ok.values())
    if short:
        return f"FAIL: 200s without audit rows {short}"
    return f"ok ({sum(gained.values())} rows, {extra} more than 200s; {tally.lost} answers lost)"


def scale(rounds: int, seconds: float, clients: int, workers: int, paces: list[float]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wb-scale-bench-"))
    schema = f"wb_scale_{uuid.uuid4().hex[:8]}"
    rb.pg_schema(True, schema)
    env = instance_env(tmp, f"{rb.PG_URL}?options=-csearch_path%3D{schema}")
    try:
        token = rb.seed(env)
        with instances(env, tmp, 3, workers) as running:
            ports = [port for _, port in running]
            resolve_client.run(ports, token, clients, 2)  # warm-up
            print(f"\n## 3 instances x {workers} workers on one PostgreSQL, {clients} clients, "
                  f"{seconds:.0f} s rounds\n")
            print("| clients send | round | load avg (1 min) | answered | req/s | p50 ms | "
                  "p99 ms | non-200 | connection errors | audit rows vs 200s | client CPU (of one core) |")
            print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
            for pace in paces:
                mode = f"every {pace:g} s" if pace else "back to back"
                figures = []
                for r in range(rounds):
                    before = audit_ok(env)
                    cpu = _own_cpu()
                    t = resolve_client.run(ports, token, clients, seconds, pace)
                    cpu = _own_cpu() - cpu
                    check = check_audit(before, audit_ok(env), t)
                    non200 = t.answered - t.statuses[200]
                    figures.append((t.answered / seconds, t.percentile(50), t.percentile(99)))
                    print(f"| {mode} | {r + 1} | {os.getloadavg()[0]:.1f} | {t.answered} | "
                          f"{t.answered / seconds:.0f} | {t.percentile(50):.1f} | "
                          f"{t.percentile(99):.1f} | {non200} | {sum(t.errors.values())} | "
                          f"{check} | {cpu / seconds * 100:.0f} % |", flush=True)
                med = [statistics.median(f[i] for f in figures) for i in range(3)]
                print(f"| {mode} | median | | | {med[0]:.0f} | {med[1]:.1f} | {med[2]:.1f} | | "
                      "| | |", flush=True)
    finally:
        rb.pg_schema(False, schema)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="ratio,scale")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (ratio)")
    ap.add_argument("--seconds", type=float, default=15, help="seconds per round (scale)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--pace", default="0,1", help="seconds between a client's requests, "
                    "comma-separated (0: back to back); rounds run for each")
    ap.add_argument("--workers", type=int, default=rb.WORKERS, help="gunicorn workers each")
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if "ratio" in a.part:
        ratio(a.rounds, a.duration, a.workers)
    if "scale" in a.part:
        scale(a.rounds, a.seconds, a.clients, a.workers, [float(p) for p in a.pace.split(",")])


if __name__ == "__main__":
    main()
