"""Reference index at scale: full sync, one-file re-sync and the delete check.

Builds real git repositories of N pipeline files (10 references each, spread over 20,000
credentials whose rows are bulk-inserted as metadata), syncs them through ``sources.sync_source``
and times:

- the full (first) sync;
- the re-sync after one file changed (median of --repeat), at every size given, interleaved
  across sizes so one can see it does not grow with the repository; the no-op re-sync
  (nothing new upstream) is the baseline measured in the same run;
- ``usage_counts``/``last_used`` for a page of 50 credentials (20,000 run-record uses seeded),
  ``dangling()`` and ``list_pipelines()`` over the whole workspace;
- the delete check (``credentials.references`` as ``guard_references`` calls it) for one
  credential, median of 200 random IDs; baseline: fetching one credential row by ID.

    python bench/index_bench.py                      # SQLite, 1,000 and 10,000 files
    python bench/index_bench.py --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, insert, select, text  # noqa: E402

from workbench import credentials, crypto, references as idx, sources  # noqa: E402
from workbench.audit import SYSTEM  # noqa: E402
from workbench.config import Settings  # noqa: E402
from workbench.models import Credential, CredentialVersion, Workspace  # noqa: E402
from workbench.pipeline import records  # noqa: E402
from workbench.vault import Vault  # noqa: E402

CREDS = 20_000
REFS_PER_FILE = 10
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def pipeline_text(i: int, rng: random.Random) -> str:
    """5 steps × 2 credentials; one in ten pinned to version 1, one in fifty unknown."""
    lines = [f"name: p{i:05d}", "steps:"]
    for st in range(REFS_PER_FILE // 2):
        lines += [f"  - name: step{st}", f"    run: make target{st}", "    credentials:"]
        for _ in range(2):
            n = rng.randrange(CREDS)
            ref = f"cred-{n:05d}" if rng.random() > 0.02 else f"ghost-{n:05d}"
            lines.append(f"      - {ref}@1" if rng.random() < 0.1 else f"      - {ref}")
    return "\n".join(lines) + "\n"


def make_repo(root: Path, files: int, seed: int) -> Path:
    repo = root / f"repo-{files}"
    git(root, "init", "-q", "-b", "main", str(repo))
    rng = random.Random(seed)
    (repo / "pipelines").mkdir()
    for i in range(files):
        (repo / "pipelines" / f"p{i:05d}.yaml").write_text(pipeline_text(i, rng))
    (repo / "README.md").write_text("bench\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipelines")
    return repo


def seed_credentials(vault: Vault, workspace: str) -> None:
    """Metadata rows only (with a placeholder version 1): the index checks existence."""
    with vault.factory.begin() as s:
        ws = Workspace(name=workspace)
        s.add(ws)
        s.flush()
        s.execute(insert(Credential), [
            {"workspace_id": ws.id, "cred_id": f"cred-{n:05d}", "name": f"cred-{n:05d}",
             "description": "", "type": "secret_text", "current_version": 1, "public": {},
             "conditions": [], "status": "Not tested", "status_message": "",
             "created_by": "bench"} for n in range(CREDS)])
        pks = s.execute(select(Credential.pk).where(Credential.workspace_id == ws.id)).scalars()
        s.execute(insert(CredentialVersion), [
            {"credential_pk": pk, "version": 1, "type": "secret_text", "key_term": 1,
             "wrapped_key": b"-", "ciphertext": b"-", "public": {}, "created_by": "bench"}
            for pk in pks])
        # run records: 2,000 runs handing 10 credentials each to a step, for last_used()
        runs = [{"id": str(uuid.uuid4()), "workspace": workspace, "pipeline": "p", "file": "",
                 "status": "success", "message": ""} for _ in range(2000)]
        s.execute(insert(records.Run), runs)
        rng = random.Random(7)
        s.execute(insert(records.CredentialUse), [
            {"run_id": r["id"], "workspace": workspace, "step": "s", "version": 1,
             "credential_id": f"cred-{rng.randrange(CREDS):05d}"} for r in runs for _ in range(10)])


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def setup_size(vault: Vault, root: Path, files: int) -> dict:
    """Seed credentials, build the repository and run the full (first) sync."""
    workspace = f"bench{files}"
    seed_credentials(vault, workspace)
    t = time.perf_counter()
    repo = make_repo(root, files, seed=files)
    build = time.perf_counter() - t
    with vault.factory.begin() as s:
        sid = sources.add_source(s, SYSTEM, workspace, kind="git", url=repo.as_uri(),
                                 name="bench").id
    t = time.perf_counter()
    full = sources.sync_source(vault.factory, vault, SYSTEM, sid)
    full_s = time.perf_counter() - t
    with vault.factory() as s:
        n_refs = s.scalar(text("SELECT count(*) FROM pipeline_references WHERE workspace = :w"),
                          {"w": workspace})
    return {"files": files, "workspace": workspace, "repo": repo, "sid": sid, "refs": n_refs,
            "repo_build_s": build, "full_sync_s": full_s, "full_parsed": full["parsed"],
            "resync": [], "noop": [], "rng": random.Random(files)}


def resync_once(vault: Vault, st: dict, k: int) -> None:
    """One changed file, then one sync with nothing new; both timed."""
    files, repo, rng = st["files"], st["repo"], st["rng"]
    i = rng.randrange(files)
    (repo / "pipelines" / f"p{i:05d}.yaml").write_text(pipeline_text(i, rng))
    git(repo, "commit", "-q", "-am", f"change {k}")
    t = time.perf_counter()
    r = sources.sync_source(vault.factory, vault, SYSTEM, st["sid"])
    st["resync"].append((time.perf_counter() - t) * 1000)
    assert r["parsed"] == 1 and not r["full"], r
    t = time.perf_counter()
    sources.sync_source(vault.factory, vault, SYSTEM, st["sid"])
    st["noop"].append((time.perf_counter() - t) * 1000)


def queries(vault: Vault, st: dict) -> None:
    workspace, rng = st["workspace"], st["rng"]
    ids = [f"cred-{rng.randrange(CREDS):05d}" for _ in range(200)]
    with vault.factory() as s:
        it = iter(ids * 2)
        st["delete_check_ms"] = median_ms(lambda: credentials.references(s, workspace, next(it)),
                                          200)
        it = iter(ids * 2)
        st["get_credential_ms"] = median_ms(
            lambda: credentials.get_credential(s, workspace, next(it)), 200)
        st["usage_counts_50_ms"] = median_ms(lambda: idx.usage_counts(s, workspace, ids[:50]),
                                             20)
        st["last_used_50_ms"] = median_ms(lambda: idx.last_used(s, workspace, ids[:50]), 20)
        t = time.perf_counter()
        st["dangling"] = len(idx.dangling(s, workspace))
        st["dangling_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        idx.list_pipelines(s, workspace)
        st["list_pipelines_ms"] = (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wb-index-bench-"))
    url, schema = args.database_url, None
    if url and url.startswith("postgresql"):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with create_engine(url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    url = url or f"sqlite:///{root / 'bench.db'}"
    vault = Vault(Settings.from_env({}, instance=str(root / "instance"), database_url=url,
                                    master_key=crypto.encode_key(crypto.generate_key()))).open()
    print(f"database: {vault.engine.dialect.name}; credentials per size: {CREDS}; "
          f"references per file: {REFS_PER_FILE}")
    try:
        states = [setup_size(vault, root, n) for n in map(int, args.sizes.split(","))]
        for k in range(args.repeat):  # interleaved, so load changes hit every size alike
            for st in states:
                resync_once(vault, st, k)
        for st in states:
            queries(vault, st)
        for r in states:
            r["resync_ms"], r["noop_ms"] = map(statistics.median, (r["resync"], r["noop"]))
            print(f"\n{r['files']} files, {r['refs']} references "
                  f"(repo built in {r['repo_build_s']:.1f} s)")
            print(f"  full sync            {r['full_sync_s']:8.2f} s  ({r['full_parsed']} parsed, "
                  f"{r['full_sync_s'] / r['full_parsed'] * 1000:.1f} ms/file)")
            print(f"  re-sync, 1 changed   {r['resync_ms']:8.1f} ms (median of {args.repeat})")
            print(f"  re-sync, no change   {r['noop_ms']:8.1f} ms (baseline)")
            print(f"  delete check         {r['delete_check_ms']:8.2f} ms (median of 200); "
                  f"get_credential {r['get_credential_ms']:.2f} ms; ratio "
                  f"{r['delete_check_ms'] / r['get_credential_ms']:.1f}x")
            print(f"  usage_counts (50)    {r['usage_counts_50_ms']:8.2f} ms")
            print(f"  last_used (50)       {r['last_used_50_ms']:8.2f} ms")
            print(f"  dangling()           {r['dangling_ms']:8.1f} ms ({r['dangling']} found)")
            print(f"  list_pipelines()     {r['list_pipelines_ms']:8.1f} ms")
        if len(states) > 1:
            a, b = states[0], states[-1]
            print(f"\n{a['files']} → {b['files']} files: re-sync "
                  f"{b['resync_ms'] / a['resync_ms']:.2f}x, no-op re-sync "
                  f"{b['noop_ms'] / a['noop_ms']:.2f}x, delete check "
                  f"{b['delete_check_ms'] / a['delete_check_ms']:.2f}x")
    finally:
        vault.close()
        if schema:
            with create_engine(args.database_url).begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        subprocess.run(["rm", "-rf", str(root)])


if __name__ == "__main__":
    main()
