"""CPU per resolve of an inherited credential, against one of the run's own scope, in one run.

Scopes ``root → s1 → s2 → s3``; 100 credentials live in ``root``.  The whole WSGI app (the hot
path) is called in-process with a runner token of ``root`` (the credential is the scope's own:
``scopes.nearest`` stops at its first lookup) and of ``s1`` and ``s3`` (inherited from 1 and 3
levels up: the recursive walk runs).  Rounds alternate the three, and the medians and their
ratio to the own-scope figure are printed as a markdown table.

Usage: python bench/inherit_bench.py [--calls 2000] [--rounds 4] [--backend sqlite,postgresql]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from resolve_cpu import environ  # noqa: E402 (the request resolve_bench's wrk sends)

CHAIN = ["root", "s1", "s2", "s3"]
CASES = [("own scope", "root"), ("inherited, 1 up", "s1"), ("inherited, 3 up", "s3")]
N_CREDS = 100


def seed(env: dict[str, str]):
    """The vault, with the scope chain, the credentials in root and a runner token per case."""
    from workbench import accounts, create_app, credentials, scopes
    from workbench.audit import SYSTEM, unit
    from workbench.config import Settings
    from workbench.vault import Vault

    settings = Settings.from_env(env)
    v = Vault(settings).open()
    tokens = {}
    with unit(v.factory) as s:
        for parent, name in zip([None, *CHAIN], CHAIN):
            scopes.create_scope(s, SYSTEM, name, parent=parent)
        for i in range(1, N_CREDS + 1):
            credentials.create_credential(
                s, v.barrier, SYSTEM, workspace="root", cred_id=f"cred-{i:03d}",
                type="username_password",
                values={"username": f"user{i}", "password": uuid.uuid4().hex})
        for _, scope in CASES:
            tokens[scope] = accounts.create_token(s, SYSTEM, f"bench-{scope}", kind="runner",
                                                  workspace=scope, allow=["*"]).secret
    return create_app(settings, vault=v), v, tokens


def cpu_per_call(app, token: str, scope: str, calls: int) -> float:
    """Microseconds of this process's CPU per resolve."""
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call(i: int) -> None:
        env = environ(token, i, N_CREDS)
        env["QUERY_STRING"] = f"workspace={scope}"
        for _ in app(env, start_response):
            pass
    for i in range(200):  # warm-up: statement caches and the pool
        call(i)
    cpu = time.process_time()
    for i in range(calls):
        call(i)
    cpu = time.process_time() - cpu
    if any(not s.startswith("200") for s in statuses):
        raise SystemExit(f"not every resolve answered 200: {sorted(set(statuses))}")
    return cpu / calls * 1e6


def run(backend: str, calls: int, rounds: int) -> dict[str, list[float]]:
    import resolve_bench as rb
    tmp = Path(tempfile.mkdtemp(prefix="wb-inherit-bench-"))
    env = {"WORKBENCH_INSTANCE": str(tmp / "instance")}
    schema = None
    if backend == "postgresql":
        schema = f"wb_inh_{uuid.uuid4().hex[:8]}"
        rb.pg_schema(True, schema)
        env["WORKBENCH_DATABASE_URL"] = f"{rb.PG_URL}?options=-csearch_path%3D{schema}"
    try:
        app, vault, tokens = seed(env)
        got: dict[str, list[float]] = {scope: [] for _, scope in CASES}
        for r in range(rounds):  # rotate the order, so each case meets the noise in each slot
            order = CASES[r % len(CASES):] + CASES[:r % len(CASES)]
            for _, scope in order:
                got[scope].append(cpu_per_call(app, tokens[scope], scope, calls))
        vault.close()
        return got
    finally:
        if schema:
            rb.pg_schema(False, schema)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--backend", default="sqlite,postgresql")
    a = ap.parse_args()
    print(f"{a.calls} resolves per run, {a.rounds} rotating runs per case, one ref per request, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| backend | credential | app CPU µs per resolve (median) | vs own scope | each run |")
    print("|---|---|---|---|---|", flush=True)
    for backend in a.backend.split(","):
        got = run(backend, a.calls, a.rounds)
        base = statistics.median(got["root"])
        for label, scope in CASES:
            med = statistics.median(got[scope])
            print(f"| {backend} | {label} | {med:.0f} | {med / base:.2f} | "
                  f"{', '.join(f'{x:.0f}' for x in got[scope])} |", flush=True)


if __name__ == "__main__":
    main()
