"""Master-key rotation of a large vault: time `workbench keys rotate`, then kill one mid-way.

Fills a fresh SQLite vault with N really sealed credentials (bulk insert, not N API calls),
times the real command, checks that every row decrypts under the new key and none under the old
one, then repeats on a copy of the same vault with a SIGKILL after some committed batches and a
re-run.  Prints markdown tables.

Usage: python bench/rotate_bench.py [--rows 100000] [--batch 5000] [--kill-after 30000]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from workbench import crypto  # noqa: E402
from workbench.config import Settings  # noqa: E402
from workbench.credentials import decode_values, encode_values  # noqa: E402
from workbench.crypto import Barrier  # noqa: E402
from workbench.db import utcnow  # noqa: E402
from workbench.errors import CryptoError  # noqa: E402
from workbench.models import Credential, CredentialVersion, KeyCheck, Workspace  # noqa: E402
from workbench.vault import Vault  # noqa: E402

TYPE = "username_password"


def fill(env: dict[str, str], rows: int, sample: int = 500) -> tuple[bytes, dict[str, dict]]:
    """Create ``rows`` sealed credentials; return the master key and some expected values."""
    v = Vault(Settings.from_env(env)).open()
    now = utcnow()
    keep = set(random.sample(range(1, rows + 1), min(sample, rows)))
    expected: dict[str, dict] = {}
    with v.engine.begin() as conn:
        # the default workspace exists once the vault is open
        ws = conn.execute(select(Workspace.id).where(Workspace.name == "default")).scalar_one()
        creds, versions = [], []
        for i in range(1, rows + 1):
            cid = f"cred-{i:06d}"
            values = {"username": f"user{i}", "password": secrets.token_urlsafe(18)}
            sealed = v.barrier.seal(encode_values(values), crypto.binding("default", cid, 1, TYPE))
            creds.append({"pk": i, "workspace_id": ws, "cred_id": cid, "name": cid, "type": TYPE,
                          "current_version": 1, "public": {"username": values["username"]},
                          "created_by": "bench", "created_at": now, "updated_at": now})
            versions.append({"credential_pk": i, "version": 1, "type": TYPE,
                             "key_term": sealed.term, "wrapped_key": sealed.wrapped_key,
                             "ciphertext": sealed.ciphertext,
                             "public": {"username": values["username"]},
                             "created_by": "bench", "created_at": now})
            if i in keep:
                expected[cid] = values
        conn.execute(insert(Credential.__table__), creds)
        conn.execute(insert(CredentialVersion.__table__), versions)
    key = crypto.decode_key(v.settings.key_path.read_text())
    v.close()
    return key, expected


def checkpoint(db: Path) -> None:
    """Fold the WAL into the database file so a plain copy is a complete copy."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def workbench(env: dict[str, str], *args: str, src: Path = ROOT) -> tuple[str, str]:
    """Run the real CLI (from checkout ``src``); return ("wall s (CPU s)", its output)."""
    t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-m", "workbench", *args],
                       env={**env, "PYTHONPATH": str(src)}, cwd=src,
                       capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"workbench {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return f"{time.perf_counter() - t:.1f} s ({cpu:.1f} s)", p.stdout


def terms(env: dict[str, str]) -> dict[int, int]:
    """Rows per master-key term."""
    v = Vault(Settings.from_env(env))
    with v.factory() as s:
        got = dict(s.execute(select(CredentialVersion.key_term, func.count())
                             .group_by(CredentialVersion.key_term)).all())
    v.close()
    return got


def verify(env: dict[str, str], old_key: bytes, expected: dict[str, dict]) -> dict:
    """Every row decrypts (`workbench doctor`), the sample gives back its values under the new
    key alone, and the old key opens none of the sample."""
    settings = Settings.from_env(env)
    doctor_s, out = workbench(env, "doctor")
    new_key = crypto.decode_key(settings.key_path.read_text())
    assert new_key != old_key and not Path(f"{settings.key_path}.next").exists()
    v = Vault(settings)
    with v.factory() as s:
        (term,) = s.scalars(select(KeyCheck.term)).all()  # the old key check is gone
        new_only, old_as_new = Barrier({term: new_key}, term), Barrier({term: old_key}, term)
        rows = s.execute(select(Credential.cred_id, CredentialVersion.wrapped_key,
                                CredentialVersion.ciphertext)
                         .join(CredentialVersion, CredentialVersion.credential_pk == Credential.pk)
                         .where(Credential.cred_id.in_(list(expected)))).all()
        old_opens = 0
        for cid, wrapped, ciphertext in rows:
            aad = crypto.binding("default", cid, 1, TYPE)
            assert decode_values(new_only.open(wrapped, ciphertext, aad)) == expected[cid]
            try:
                old_as_new.open(wrapped, ciphertext, aad)
                old_opens += 1
            except CryptoError:
                pass
    v.close()
    assert len(rows) == len(expected) and old_opens == 0
    return {"doctor": out.strip(), "doctor_s": doctor_s, "sample": len(rows), "term": term}


def interrupted(env: dict[str, str], batch: int, kill_after: int, rows: int) -> dict:
    """Start a rotation, SIGKILL it once ``kill_after`` rows are re-wrapped, then re-run it."""
    db = Path(env["WORKBENCH_INSTANCE"]) / "workbench.db"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "keys", "rotate", "--batch",
                             str(batch)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t = time.perf_counter()
    moved = 0
    watch = sqlite3.connect(db, timeout=30)
    while proc.poll() is None:
        row = watch.execute("SELECT count(*) FROM credential_versions WHERE key_term > 1"
                            ).fetchone()
        moved = row[0]
        if moved >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    killed_at = f"{time.perf_counter() - t:.1f} s"
    watch.close()
    if proc.returncode != -signal.SIGKILL:
        raise SystemExit(f"the rotation ended before the kill (rc {proc.returncode}); "
                         f"lower --kill-after")
    mid = terms(env)
    doctor_mid, _ = workbench(env, "doctor")  # old and pending keys together open every row
    rerun_s, out = workbench(env, "keys", "rotate", "--batch", str(batch))
    return {"killed_after_s": killed_at, "rows_moved_at_kill": moved, "terms_mid": mid,
            "rerun_s": rerun_s, "rerun": out.strip(), "doctor_mid_ok": True}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--kill-after", type=int, default=30_000)
    ap.add_argument("--compare", metavar="DIR", help="also time `keys rotate` of another "
                    "checkout (e.g. the code before a change) on a copy of the same vault")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop servers, remove files
    tmp = Path(tempfile.mkdtemp(prefix="wb-rotate-bench-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env = {**base, "WORKBENCH_INSTANCE": str(tmp / "a"), "PYTHONPATH": str(ROOT)}
    env2 = {**base, "WORKBENCH_INSTANCE": str(tmp / "b"), "PYTHONPATH": str(ROOT)}
    try:
        t = time.perf_counter()
        old_key, expected = fill(env, a.rows)
        fill_s = time.perf_counter() - t
        checkpoint(tmp / "a" / "workbench.db")
        shutil.copytree(tmp / "a", tmp / "b")
        startup_s, _ = workbench(env, "--help")
        before = None
        if a.compare:
            shutil.copytree(tmp / "a", tmp / "c")
            env3 = {**env, "WORKBENCH_INSTANCE": str(tmp / "c")}
            before = workbench(env3, "keys", "rotate", "--batch", str(a.batch),
                               src=Path(a.compare).resolve())
            verify(env3, old_key, expected)
        rotate_s, out = workbench(env, "keys", "rotate", "--batch", str(a.batch))
        check = verify(env, old_key, expected)
        kill = interrupted(env2, a.batch, a.kill_after, a.rows)
        check2 = verify(env2, old_key, expected)
        print(f"{a.rows} credentials, batch {a.batch}, SQLite, {os.cpu_count()} CPUs, load "
              f"average {os.getloadavg()[0]:.2f}; fill (seal + bulk insert) {fill_s:.1f} s\n")
        print("| run | wall time (CPU of the command) | result |")
        print("|---|---|---|")
        print(f"| `workbench --help` (start-up alone) | {startup_s} | |")
        if before:
            print(f"| `workbench keys rotate` ({a.compare}) | {before[0]} | "
                  f"{before[1].strip()}; verified like the next |")
        print(f"| `workbench keys rotate` | {rotate_s} | {out.strip()} |")
        print(f"| `workbench doctor` after | {check['doctor_s']} | {check['doctor']}; "
              f"{check['sample']} sampled values equal under the new key, 0 open with the old |")
        print(f"| rotation SIGKILLed | {kill['killed_after_s']} | "
              f"{kill['rows_moved_at_kill']} rows re-wrapped at the kill; rows per key term: "
              f"{kill['terms_mid']}; `doctor` passes mid-rotation |")
        print(f"| re-run `keys rotate` | {kill['rerun_s']} | {kill['rerun']} |")
        print(f"| `workbench doctor` after | {check2['doctor_s']} | {check2['doctor']}; "
              f"{check2['sample']} sampled values equal under the new key, 0 open with the old |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
