"""Credentials table with 100,000 credentials against the same pages with 1,000.

    python bench/web_table.py [--big 100000] [--small 1000] [--repeat 7] [--database-url URL]
                              [--analyze]

Renders the home page through the Flask test client (signed in, real templates, real queries)
for: page 1, a deep page, a search, a type filter, a sort by name and a sort by "used by"
(as many pipeline references as credentials).  Reports the median
time per page over the repeats and the ratio big/small; both vaults are measured in the same
run, interleaved, so machine noise hits both alike.  The default database is SQLite in a temp
dir; pass a PostgreSQL URL to measure it there (a private schema is created and dropped).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from argon2 import PasswordHasher  # noqa: E402
from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402

from workbench import create_app, credtypes, crypto, scopes  # noqa: E402
from workbench.audit import SYSTEM  # noqa: E402
from workbench.config import Settings  # noqa: E402
from workbench.db import utcnow  # noqa: E402
from workbench.models import Credential, User, Workspace  # noqa: E402
from workbench.references import IndexedPipeline, PipelineReference, PipelineSource  # noqa: E402
from workbench.vault import Vault  # noqa: E402

TYPES = sorted(credtypes.TYPES)


def pages(n: int) -> dict[str, str]:
    deep = max(1, n // 50 - 1)
    return {"page 1": "/", f"page {deep} (offset {(deep - 1) * 50})": f"/?page={deep}",
            "search": "/?q=nightly-7", "filter type": "/?type=kubeconfig",
            "sort by name": "/?sort=name", "sort by name, deep": f"/?sort=name&page={deep}",
            "sort by used by": "/?sort=-used_by",
            "workspace page 1": "/?workspace=default",
            "child page 1 (inherits all)": "/?workspace=proj",
            "child, own only": "/?workspace=proj&inherited=false",
            "child, sort by used by": "/?workspace=proj&sort=-used_by"}


def build(n: int, url: str, inst: Path, analyze: bool = False):
    """A vault with ``n`` credentials (rows inserted in bulk: the table never reads values)."""
    settings = Settings.from_env({}, instance=str(inst), database_url=url, testing=True,
                                 master_key=crypto.encode_key(crypto.generate_key()))
    vault = Vault(settings).open()
    now = utcnow()
    with vault.factory.begin() as s:
        ws = s.scalars(select(Workspace).where(Workspace.name == "default")).one()  # made by open
        s.add(User(username="bench", password_hash=PasswordHasher().hash("bench-password"),
                   role="viewer"))
        s.flush()
        rows = [{"workspace_id": ws.id, "cred_id": f"cred-{i:06d}",
                 "name": f"{'nightly' if i % 10 == 7 else 'service'}-{i}",
                 "description": f"credential number {i}", "type": TYPES[i % len(TYPES)],
                 "current_version": 1, "public": {}, "conditions": [], "status": "Not tested",
                 "status_message": "", "created_by": "bench",
                 "created_at": now - timedelta(seconds=n - i), "updated_at": now}
                for i in range(n)]
        for start in range(0, n, 5000):
            s.execute(insert(Credential), rows[start:start + 5000])
        # as many references as credentials, over n/10 pipelines: every third credential is
        # used, by 1 to 6 pipelines (what "sort by used by" has to count)
        src = PipelineSource(workspace="default", name="bench", kind="local", url="/srv")
        s.add(src)
        s.flush()
        s.execute(insert(IndexedPipeline), [
            {"source_id": src.id, "workspace": "default", "path": f"p/{j}.yaml", "name": f"p{j}",
             "blob": "0" * 40, "steps": "s"} for j in range(max(1, n // 10))])
        first = s.scalar(select(func.min(IndexedPipeline.id)))
        refs = [{"pipeline_id": first + i % max(1, n // 10), "workspace": "default", "step": "s",
                 "credential_id": f"cred-{(i * i) % max(1, n // 3) * 3:06d}",
                 "binding": "default"}
                for i in range(n)]
        for start in range(0, n, 5000):
            s.execute(insert(PipelineReference), refs[start:start + 5000])
    # a workspace below default ("proj") with 10 credentials of its own (two shadow
    # default's) and 10 pipelines using default's: the inheriting table's pages
    with vault.factory.begin() as s:
        scopes.create_scope(s, SYSTEM, "proj", parent="default")
        proj = s.scalars(select(Workspace.id).where(Workspace.name == "proj")).one()
        s.execute(insert(Credential), [
            {"workspace_id": proj, "cred_id": f"cred-{i:06d}" if i < 2 else f"cred-p{i}",
             "name": f"proj-{i}", "description": "", "type": TYPES[0], "current_version": 1,
             "public": {}, "conditions": [], "status": "Not tested", "status_message": "",
             "created_by": "bench", "created_at": now, "updated_at": now}
            for i in range(10)])
        psrc = PipelineSource(workspace="proj", name="bench", kind="local", url="/srv")
        s.add(psrc)
        s.flush()
        s.execute(insert(IndexedPipeline), [
            {"source_id": psrc.id, "workspace": "proj", "path": f"q/{j}.yaml", "name": f"q{j}",
             "blob": "0" * 40, "steps": "s"} for j in range(10)])
        pfirst = s.scalar(select(func.min(IndexedPipeline.id))
                          .where(IndexedPipeline.workspace == "proj"))
        s.execute(insert(PipelineReference), [
            {"pipeline_id": pfirst + j, "workspace": "proj", "step": "s",
             "credential_id": f"cred-{j * 3:06d}", "binding": "default"} for j in range(10)])
    if analyze:  # fresh planner statistics, as autovacuum (or ANALYZE) gives a live table
        with vault.factory.begin() as s:
            s.execute(text("ANALYZE"))
    app = create_app(settings, vault=vault)
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      client.get("/login").get_data(as_text=True)).group(1)
    r = client.post("/login", data={"username": "bench", "password": "bench-password",
                                    "csrf_token": token})
    assert r.status_code == 302, r.status_code
    return vault, client


def timed(client, path: str) -> float:
    t0 = time.perf_counter()
    r = client.get(path)
    dt = time.perf_counter() - t0
    assert r.status_code == 200 and b"cred-" in r.data, (path, r.status_code)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--database-url", default="")
    ap.add_argument("--analyze", action="store_true",
                    help="ANALYZE after the bulk load (default: measure right after it)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-web-"))
    schemas = []

    def url_for(tag: str) -> str:
        if not a.database_url:
            return f"sqlite:///{tmp / tag}.db"
        schema = f"wb_bench_{uuid.uuid4().hex[:8]}"
        with create_engine(a.database_url).begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        schemas.append(schema)
        return f"{a.database_url}?options=-csearch_path%3D{schema}"

    t0 = time.perf_counter()
    big_vault, big = build(a.big, url_for("big"), tmp / "big", a.analyze)
    small_vault, small = build(a.small, url_for("small"), tmp / "small", a.analyze)
    print(f"built {a.big:,} + {a.small:,} credentials in {time.perf_counter() - t0:.1f} s "
          f"({'PostgreSQL' if a.database_url else 'SQLite'})")
    try:
        big_pages, small_pages = pages(a.big), pages(a.small)
        print(f"{'page':34} {'small ms':>9} {'big ms':>9} {'ratio':>6}")
        for (label, bp), sp in zip(big_pages.items(), small_pages.values()):
            timed(big, bp), timed(small, sp)  # warm caches and the template
            tb, ts = [], []
            for _ in range(a.repeat):
                tb.append(timed(big, bp))
                ts.append(timed(small, sp))
            mb, ms = statistics.median(tb) * 1000, statistics.median(ts) * 1000
            print(f"{label:34} {ms:9.1f} {mb:9.1f} {mb / ms:6.2f}")
    finally:
        big_vault.close()
        small_vault.close()
        if schemas:
            with create_engine(a.database_url).begin() as c:
                for schema in schemas:
                    c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
