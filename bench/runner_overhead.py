"""Per-step overhead of the runner: N trivial steps with credentials (env + file) through
``run_pipeline`` and the local executor, against the same commands run bare via subprocess.

    python bench/runner_overhead.py [--steps 20] [--repeat 7]

Reports medians over the repeats, per step, in ms, and the ratio; the baseline is measured in
the same process, interleaved with the runner, so machine noise hits both alike.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.pipelines import DictResolver, canary  # noqa: E402
from workbench.pipeline.parse import parse_pipeline  # noqa: E402
from workbench.pipeline.plan import plan  # noqa: E402
from workbench.pipeline.runner import run_pipeline  # noqa: E402

COMMAND = 'test -n "$TOKEN" && test -s "$CFG" && echo "step $WORKBENCH_STEP"'


def pipeline(n: int, with_creds: bool):
    creds = "    credentials: [{id: tok, env: TOKEN}, {id: cfg, file: CFG}]\n" if with_creds else ""
    run = COMMAND if with_creds else 'echo "step $WORKBENCH_STEP"'
    steps = "".join(f"  - name: s{i}\n    run: '{run}'\n{creds}" for i in range(n))
    return parse_pipeline(f"name: bench\nsteps:\n{steps}", filename="bench.yaml")


def bare(n: int, work: str) -> float:
    """The same shell commands, env and a pre-written 0600 file, straight through subprocess."""
    cfg = os.path.join(work, "cfg")
    with open(os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write("x" * 64)
    start = time.perf_counter()
    for i in range(n):
        env = {"PATH": "/usr/bin:/bin", "TOKEN": "t" * 32, "CFG": cfg, "WORKBENCH_STEP": f"s{i}"}
        subprocess.run(["/bin/sh", "-c", COMMAND], env=env, cwd=work, check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def executor_only(steps, scratch: str) -> float:
    """The planned steps straight through the local executor: no runner, no masking."""
    from workbench.pipeline.local import LocalExecutor

    start = time.perf_counter()
    for rs in steps:
        ex = LocalExecutor(rs, scratch=scratch)
        try:
            ex.prepare()
            ex.run(lambda _b: None)
        finally:
            ex.cleanup()
    return time.perf_counter() - start


def through_runner(p, resolver, scratch: str, work: str) -> float:
    start = time.perf_counter()
    result = run_pipeline(p, resolver, scratch=scratch, workdir=work, echo=lambda _b: None)
    elapsed = time.perf_counter() - start
    assert result.status == "success", [s.message for s in result.steps]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    r = DictResolver()
    r.add("tok", "secret_text", {"secret": canary("bench")})
    r.add("cfg", "secret_file", {"filename": "cfg.json", "content": canary("file").encode()})
    with_creds, no_creds = pipeline(args.steps, True), pipeline(args.steps, False)
    times: dict[str, list[float]] = {"bare": [], "runner": [], "runner_nocreds": [],
                                     "executor": []}
    with tempfile.TemporaryDirectory() as tmp:
        scratch, work = os.path.join(tmp, "scratch"), os.path.join(tmp, "work")
        os.mkdir(scratch, 0o700)
        os.mkdir(work, 0o700)
        through_runner(with_creds, r, scratch, work)  # warm-up: imports, first fork
        planned = plan(with_creds, r, workdir=work)
        for _ in range(args.repeat):
            times["bare"].append(bare(args.steps, work))
            times["runner"].append(through_runner(with_creds, r, scratch, work))
            times["runner_nocreds"].append(through_runner(no_creds, r, scratch, work))
            times["executor"].append(executor_only(planned, scratch))
    med = {k: statistics.median(v) * 1000 / args.steps for k, v in times.items()}
    print(f"steps={args.steps} repeats={args.repeat} (median ms per step)")
    print(f"  bare subprocess          {med['bare']:7.2f} ms")
    print(f"  local executor alone     {med['executor']:7.2f} ms  (env + file, no runner)")
    print(f"  runner, no credentials   {med['runner_nocreds']:7.2f} ms")
    print(f"  runner, env + file cred  {med['runner']:7.2f} ms")
    print(f"  overhead vs bare         {med['runner'] - med['bare']:+7.2f} ms/step "
          f"(ratio {med['runner'] / med['bare']:.2f}x)")
    print(f"  injection (creds vs none){med['runner'] - med['runner_nocreds']:+7.2f} ms/step")
    print(f"  orchestration (runner vs executor alone, incl. plan + masking) "
          f"{med['runner'] - med['executor']:+7.2f} ms/step")


if __name__ == "__main__":
    main()
