"""What least privilege costs a run: opening a run on the server and resolving step by step with
its run token, against today's single resolve of every reference with a runner token.

One `workbench serve` (its default gunicorn settings) over a fresh vault: STEPS credentials and
an indexed pipeline (a local source) of STEPS steps, one credential each.  A runner-like client
(one keep-alive connection, requests in sequence, as a runner makes them) times whole runs:

- ``single``: today's runner, one `POST /resolve` with every reference (runner token);
- ``per-step``: one `POST /resolve` per step with the runner token (no run);
- ``run token``: `POST /runs` (open) and one `POST /resolve {"step"}` per step (run token).

The flows alternate in blocks, so noise on the shared machine hits each.  Printed: medians per
run, and the added milliseconds per step at p50, (run token − single) / STEPS; and the
server's CPU per run (gunicorn master and workers, from /proc; not the database's), which
a loaded machine inflates less than latency.

Usage: python bench/run_token_bench.py [--runs 200] [--rounds 3] [--steps 5]
                                       [--backend sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resolve_bench import (cpu_seconds, free_port, fresh_env, pg_schema, start,  # noqa: E402
                           stop)

FLOWS = ("single", "per-step", "run token")


def seed(env: dict[str, str], steps: int, folder: Path) -> tuple[str, str]:
    """Credentials, the indexed pipeline; (runner token allowing all ad hoc, default one)."""
    from workbench import accounts, credentials, sources
    from workbench.audit import SYSTEM, unit
    from workbench.config import Settings
    from workbench.vault import Vault

    (folder / "pipelines").mkdir(parents=True)
    (folder / "pipelines" / "bench.yaml").write_text("name: bench\nsteps:\n" + "".join(
        f"  - name: s{i}\n    run: 'true'\n    credentials: [cred-{i}]\n"
        for i in range(1, steps + 1)))
    v = Vault(Settings.from_env(env)).open()
    with unit(v.factory) as s:
        for i in range(1, steps + 1):
            credentials.create_credential(
                s, v.barrier, SYSTEM, workspace="default", cred_id=f"cred-{i}",
                type="username_password", values={"username": f"u{i}",
                                                  "password": uuid.uuid4().hex})
        any_token = accounts.create_token(s, SYSTEM, "bench-any", kind="runner",
                                          allow=["*"]).secret
        run_token = accounts.create_token(s, SYSTEM, "bench-runs", kind="runner").secret
        sid = sources.add_source(s, SYSTEM, "default", kind="local", url=str(folder),
                                 name="bench").id
    sources.sync_source(v.factory, v, SYSTEM, sid)
    v.close()
    return any_token, run_token


class Runner:
    """One keep-alive connection, as a runner holds it."""

    def __init__(self, url: str, token: str):
        self.url, self.http = url, requests.Session()
        self.http.trust_env = False
        self.token = token

    def post(self, path: str, body: dict, token: str | None = None) -> dict:
        r = self.http.post(f"{self.url}{path}?workspace=default", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {token or self.token}"})
        if r.status_code >= 300:
            raise SystemExit(f"{path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()


def one_run(flow: str, any_runner: Runner, run_runner: Runner, steps: int,
            parts: dict[str, list[float]]) -> float:
    """Milliseconds for one run's credentials in ``flow``."""
    refs = [f"cred-{i}" for i in range(1, steps + 1)]
    t0 = time.perf_counter()
    if flow == "single":
        got = any_runner.post("/api/v1/resolve", {"refs": refs})["credentials"]
    elif flow == "per-step":
        got = [c for ref in refs
               for c in any_runner.post("/api/v1/resolve", {"refs": [ref]})["credentials"]]
    else:
        run = run_runner.post("/api/v1/runs", {"source": "bench", "pipeline": "bench",
                                               "ref": "main"})
        t1 = time.perf_counter()
        got = []
        for i in range(1, steps + 1):
            t = time.perf_counter()
            got += run_runner.post("/api/v1/resolve", {"step": f"s{i}"},
                                   token=run["token"])["credentials"]
            parts["step resolve"].append((time.perf_counter() - t) * 1e3)
        parts["open"].append((t1 - t0) * 1e3)
    ms = (time.perf_counter() - t0) * 1e3
    assert len(got) == steps, got
    return ms


def bench(backend: str, runs: int, rounds: int, steps: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="wb-run-token-bench-"))
    env, schema = fresh_env(tmp, backend)
    proc = None
    try:
        any_token, run_token = seed(env, steps, tmp / "repo")
        port = free_port()
        proc = start([sys.executable, "-m", "workbench", "serve", "--host", "127.0.0.1",
                      "--port", str(port)], env, port, "/healthz")
        url = f"http://127.0.0.1:{port}"
        any_runner, run_runner = Runner(url, any_token), Runner(url, run_token)
        times: dict[str, list[float]] = {f: [] for f in FLOWS}
        cpu = dict.fromkeys(FLOWS, 0.0)  # the server's CPU seconds in each flow's blocks
        parts: dict[str, list[float]] = {"open": [], "step resolve": []}
        for flow in FLOWS:  # warm-up
            for _ in range(20):
                one_run(flow, any_runner, run_runner, steps, {"open": [], "step resolve": []})
        for r in range(rounds):
            order = FLOWS[r % 3:] + FLOWS[:r % 3]
            for block in range(0, runs, 25):  # alternate in blocks of 25 runs
                for flow in order:
                    before = cpu_seconds(proc)
                    for _ in range(min(25, runs - block)):
                        times[flow].append(one_run(flow, any_runner, run_runner, steps, parts))
                    cpu[flow] += cpu_seconds(proc) - before
        return {"backend": backend, "times": times, "parts": parts,
                "cpu_ms": {f: cpu[f] * 1e3 / len(times[f]) for f in FLOWS}}
    finally:
        if proc is not None:
            stop(proc)
        if schema:
            pg_schema(False, schema)
        shutil.rmtree(tmp, ignore_errors=True)


def report(results: list[dict], steps: int) -> str:
    lines = [f"| backend | single resolve, p50 | per-step, p50 | open + {steps} step resolves, "
             "p50 | added per step at p50 | open, p50 | step resolve, p50 / p90 | server CPU "
             "per run: single / run token (added per step) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        t, p = res["times"], res["parts"]
        med = {f: statistics.median(v) for f, v in t.items()}
        step_q = statistics.quantiles(p["step resolve"], n=10)
        lines.append(
            f"| {res['backend']} | {med['single']:.1f} ms | {med['per-step']:.1f} ms | "
            f"{med['run token']:.1f} ms | **{(med['run token'] - med['single']) / steps:.2f} ms**"
            f" | {statistics.median(p['open']):.1f} ms | "
            f"{statistics.median(p['step resolve']):.2f} / {step_q[8]:.2f} ms | "
            f"{res['cpu_ms']['single']:.1f} / {res['cpu_ms']['run token']:.1f} ms "
            f"({(res['cpu_ms']['run token'] - res['cpu_ms']['single']) / steps:.2f} ms) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per flow and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="sqlite,postgresql")
    a = ap.parse_args()
    results = [bench(b, a.runs, a.rounds, a.steps) for b in a.backend.split(",")]
    print(report(results, a.steps))


if __name__ == "__main__":
    main()
