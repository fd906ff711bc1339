"""Issue 17's resolve targets: resolve against the floor on both databases, and three app
instances on one PostgreSQL under 200 concurrent clients.

Part 1 runs `bench/resolve_bench.py`'s servers (the real `workbench serve`, the floor that only
commits the same audit row, and hello) with wrk, alternating, on SQLite and PostgreSQL, and
reports each round (load average, req/s, CPU per request of the server and its own PostgreSQL
backends) and the medians: resolve/floor by req/s (target ≥ 0.8) and by CPU.

Part 2 starts three `workbench serve` processes with different instance folders on one
PostgreSQL schema and the same master key file, and runs ``--clients`` concurrent clients
(`bench/resolve_client.py`, spread round-robin over the instances) for ``--seconds`` per round.
It reports p50/p99 latency, errors, and checks, per credential, that the audit log gained
exactly one ``credential.resolve`` ok row per 200 the clients received (target: p99 < 100 ms,
0 errors, rows = answers).  Three floor servers on the same database, loaded by the same
clients in alternate rounds, are the baseline: what any server that commits an audit row per
request gets on this machine (``--no-floor`` skips them).

With ``--pace``, the clients also run paced (each sends a request every so many seconds, as CI
steps do), since 200 clients sending back to back measure queueing: by Little's law their mean
latency is 200 ÷ throughput, whatever the instances do.

Usage: python bench/scale_bench.py [--part ratio,scale] [--rounds 3] [--duration 5]
                                   [--seconds 15] [--clients 200] [--pace 0,1] [--workers N]
                                   [--threads N] [--no-floor]
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


def start_instance(env: dict[str, str], folder: Path, workers: int, threads: int = 1):
    """One `workbench serve` with its own instance folder; (process, port)."""
    port = rb.free_port()
    env = {**env, "WORKBENCH_INSTANCE": str(folder)}
    proc = rb.start([sys.executable, "-m", "workbench", "serve", "--host", "127.0.0.1",
                     "--port", str(port), "--workers", str(workers), "--threads", str(threads)],
                    env, port, "/healthz")
    return proc, port


def start_floor(env: dict[str, str], folder: Path, workers: int, threads: int = 1):
    """One floor server (``resolve_bench.floor_server``: per request one audit row committed
    through the hot path's write, nothing else) on the same database; (process, port)."""
    port = rb.free_port()
    folder.mkdir(parents=True, exist_ok=True)
    env = {**env, "WORKBENCH_INSTANCE": str(folder)}
    proc = rb.start([sys.executable, str(Path(rb.__file__)), "--floor-server", str(port),
                     "--workers", str(workers), "--threads", str(threads)], env, port, "/hello")
    return proc, port


@contextmanager
def instances(env: dict[str, str], tmp: Path, n: int, workers: int, threads: int = 1,
              floor: bool = False) -> Iterator[list]:
    """``n`` running instances (floor servers with ``floor``), each [process, port]; all
    stopped at the end."""
    running = []
    try:
        for k in range(n):
            if floor:
                running.append(list(start_floor(env, tmp / f"floor-{k}", workers, threads)))
            else:
                running.append(list(start_instance(env, tmp / f"instance-{k}", workers,
                                                   threads)))
        yield running
    finally:
        for proc, _ in running:
            if proc.poll() is None:
                rb.stop(proc)


def audit_ok(env: dict[str, str], action: str = "credential.resolve") -> Counter:
    """``action``'s ok rows per target (credential ID; ``floor`` for the floor's rows)."""
    from sqlalchemy import func, select
    from workbench.config import Settings
    from workbench.models import AuditEvent
    from workbench.vault import Vault
    v = Vault(Settings.from_env(env))
    with v.factory() as s:
        rows = s.execute(select(AuditEvent.target, func.count()).where(
            AuditEvent.action == action, AuditEvent.outcome == "ok")
            .group_by(AuditEvent.target)).all()
    v.close()
    return Counter(dict(rows))


def ratio(rounds: int, duration: int, workers: int) -> None:
    print(f"## resolve vs floor (wrk -t2 -c16 -d{duration}s, {rounds} alternating rounds, "
          f"{workers} workers x 1 thread, load average {os.getloadavg()[0]:.1f})\n")
    print("CPU µs/req: the server's processes + its own PostgreSQL backends (medians); "
          "CPU ratio: floor's total ÷ resolve's (what req/s would give on an idle machine)\n")
    print("| backend | round | load avg | resolve req/s | floor req/s | resolve ÷ floor | "
          "resolve CPU µs/req | floor CPU µs/req | CPU ratio | resolve p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for backend in ("sqlite", "postgresql"):
        r = rb.bench(backend, duration, rounds, 16, [], workers, 1)["runs"]
        rows = []
        for k, (a, b) in enumerate(zip(r["resolve"], r["floor"])):
            rows.append((a.rps / b.rps, a.server_us + a.database_us,
                         b.server_us + b.database_us))
            print(f"| {backend} | {k + 1} | {a.load:.1f} | {a.rps:.0f} | {b.rps:.0f} | "
                  f"{a.rps / b.rps:.2f} | {a.server_us:.0f} + {a.database_us:.0f} | "
                  f"{b.server_us:.0f} + {b.database_us:.0f} | "
                  f"{(b.server_us + b.database_us) / (a.server_us + a.database_us):.2f} | "
                  f"{a.p50:.1f} / {a.p99:.1f} |", flush=True)
        med = lambda xs: statistics.median(xs)  # noqa: E731
        res_cpu, floor_cpu = med(x[1] for x in rows), med(x[2] for x in rows)
        print(f"| **{backend}** | **median** | | {med(x.rps for x in r['resolve']):.0f} | "
              f"{med(x.rps for x in r['floor']):.0f} | **{med(x[0] for x in rows):.2f}** | "
              f"{res_cpu:.0f} | {floor_cpu:.0f} | **{floor_cpu / res_cpu:.2f}** | "
              f"{med(x.p50 for x in r['resolve']):.1f} / {med(x.p99 for x in r['resolve']):.1f}"
              " |", flush=True)


def _own_cpu() -> float:
    """CPU seconds this process (the clients) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def check_audit(before: Counter, after: Counter, tally: resolve_client.Tally,
                floor: bool = False) -> str:
    """Per credential (the floor: in all): the audit rows gained, against the 200s received."""
    gained = after - before
    if floor:
        got, want = sum(gained.values()), sum(tally.ok.values())
        return (f"FAIL: {want} 200s, {got} rows" if got < want else
                f"ok ({got} rows, {got - want} more than 200s; {tally.lost} answers lost)")
    short = {c: (tally.ok[c], gained[c]) for c in tally.ok if gained[c] < tally.ok[c]}
    extra = sum(gained.values()) - sum(tally.ok.values())
    if short:
        return f"FAIL: 200s without audit rows {short}"
    return f"ok ({sum(gained.values())} rows, {extra} more than 200s; {tally.lost} answers lost)"


def scale(rounds: int, seconds: float, clients: int, workers: int, threads: int,
          paces: list[float], floor: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wb-scale-bench-"))
    schema = f"wb_scale_{uuid.uuid4().hex[:8]}"
    rb.pg_schema(True, schema)
    env = instance_env(tmp, f"{rb.PG_URL}?options=-csearch_path%3D{schema}")
    kinds = ["resolve", "floor"] if floor else ["resolve"]
    try:
        token = rb.seed(env)
        with instances(env, tmp, 3, workers, threads) as apps, \
                instances(env, tmp, 3 if floor else 0, workers, threads, floor=True) as floors:
            ports = {"resolve": [p for _, p in apps], "floor": [p for _, p in floors]}
            for kind in kinds:
                resolve_client.run(ports[kind], token, clients, 2)  # warm-up
            print(f"\n## 3 instances x {workers} workers x {threads} threads on one PostgreSQL, "
                  f"{clients} clients, {seconds:g} s rounds"
                  f"{' (server: floor = 3 floor servers, the same settings)' if floor else ''}\n")
            print("| clients send | server | round | load avg (1 min) | answered | req/s | "
                  "p50 ms | p99 ms | non-200 | connection errors | audit rows vs 200s | "
                  "client CPU (of one core) |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
            for pace in paces:
                mode = f"every {pace:g} s" if pace else "back to back"
                figures: dict[str, list] = {k: [] for k in kinds}
                for r in range(rounds):
                    for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                        action = "bench.floor" if kind == "floor" else "credential.resolve"
                        before = audit_ok(env, action)
                        load, cpu = os.getloadavg()[0], _own_cpu()
                        t = resolve_client.run(ports[kind], token, clients, seconds, pace)
                        cpu = _own_cpu() - cpu
                        check = check_audit(before, audit_ok(env, action), t, kind == "floor")
                        non200 = t.answered - t.statuses[200]
                        figures[kind].append((t.answered / seconds, t.percentile(50),
                                              t.percentile(99)))
                        print(f"| {mode} | {kind} | {r + 1} | {load:.1f} | {t.answered} | "
                              f"{t.answered / seconds:.0f} | {t.percentile(50):.1f} | "
                              f"{t.percentile(99):.1f} | {non200} | {sum(t.errors.values())} | "
                              f"{check} | {cpu / seconds * 100:.0f} % |", flush=True)
                for kind in kinds:
                    med = [statistics.median(f[i] for f in figures[kind]) for i in range(3)]
                    print(f"| {mode} | **{kind}** | **median** | | | {med[0]:.0f} | "
                          f"{med[1]:.1f} | **{med[2]:.1f}** | | | | |", flush=True)
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
    ap.add_argument("--threads", type=int, default=1, help="threads per worker (scale)")
    ap.add_argument("--no-floor", action="store_true",
                    help="scale: skip the floor servers' rounds (the baseline)")
    a = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if "ratio" in a.part:
        ratio(a.rounds, a.duration, a.workers)
    if "scale" in a.part:
        scale(a.rounds, a.seconds, a.clients, a.workers, a.threads,
              [float(p) for p in a.pace.split(",")], not a.no_floor)


if __name__ == "__main__":
    main()
