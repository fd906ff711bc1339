"""Master-key rotation through the real CLI: killed mid-way with SIGKILL, re-run, nothing lost."""
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from workbench import crypto, keyring
from workbench.audit import SYSTEM
from workbench.config import Settings
from workbench.credentials import encode_values
from workbench.resolution import VaultResolver
from workbench.crypto import Barrier
from workbench.db import Base, utcnow
from workbench.errors import CryptoError
from workbench.model_modules import import_all
from workbench.models import Credential, CredentialVersion, KeyCheck, Workspace
from workbench.pipeline.resolve import Ref
from workbench.vault import Vault

ROOT = Path(__file__).resolve().parent.parent
ROWS, BATCH = 2000, 20


@pytest.fixture
def keyed_vault(db_url, tmp_path):
    """A vault with its master key in a file (rotation manages that file) and ROWS sealed
    credentials, bulk-inserted; yields (settings, old key, {id: values})."""
    settings = Settings.from_env({}, instance=str(tmp_path / "instance"), database_url=db_url)
    v = Vault(settings)
    import_all()
    with v.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    v.open(migrate=False)
    values = {f"c{i:05d}": {"username": f"u{i}", "password": secrets.token_urlsafe(12)}
              for i in range(ROWS)}
    now = utcnow()
    with v.engine.begin() as conn:
        # the default workspace exists once the vault is open
        ws = conn.execute(select(Workspace.id).where(Workspace.name == "default")).scalar_one()
        conn.execute(insert(Credential.__table__), [
            {"workspace_id": ws, "cred_id": cid, "name": cid, "type": "username_password",
             "current_version": 1, "public": {}, "created_at": now, "updated_at": now}
            for cid in values])
        pks = dict(conn.execute(select(Credential.cred_id, Credential.pk)).all())
        rows = []
        for cid, vals in values.items():
            sealed = v.barrier.seal(encode_values(vals),
                                    crypto.binding("default", cid, 1, "username_password"))
            rows.append({"credential_pk": pks[cid], "version": 1, "type": "username_password",
                         "key_term": sealed.term, "wrapped_key": sealed.wrapped_key,
                         "ciphertext": sealed.ciphertext, "public": {}, "created_at": now})
        conn.execute(insert(CredentialVersion.__table__), rows)
    v.close()
    yield settings, crypto.decode_key(settings.key_path.read_text()), values


def _env(settings: Settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    return {**env, "WORKBENCH_INSTANCE": str(settings.instance),
            "WORKBENCH_DATABASE_URL": settings.database_url, "PYTHONPATH": str(ROOT)}


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", *args], env=_env(settings),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _moved(v: Vault) -> int:
    with v.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(CredentialVersion)
                           .where(CredentialVersion.key_term > 1))


def _kill_mid_rotation(settings: Settings) -> int:
    """Start `keys rotate` and SIGKILL it once some batches are committed."""
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "keys", "rotate", "--batch",
                             str(BATCH)], env=_env(settings), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch = Vault(settings)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _moved(watch) >= 10 * BATCH:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(30)
        return _moved(watch)
    finally:
        if proc.poll() is None:
            proc.kill()
        watch.close()


def test_rotation_killed_mid_way_and_rerun_loses_nothing(keyed_vault):
    settings, old_key, values = keyed_vault
    moved = _kill_mid_rotation(settings)
    assert 0 < moved < ROWS, "the rotation should have been killed part-way"
    # Mid-way: the old key file is still in place, the new one waits next to it, and the vault
    # still opens and decrypts everything with the two of them.
    assert crypto.decode_key(settings.key_path.read_text()) == old_key
    assert Path(f"{settings.key_path}.next").exists()
    mid = _cli(settings, "doctor")
    assert mid.returncode == 0, mid.stdout + mid.stderr

    rerun = _cli(settings, "keys", "rotate", "--batch", str(BATCH))
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout and f"re-wrapped {ROWS - moved} " in rerun.stdout
    new_key = crypto.decode_key(settings.key_path.read_text())
    assert new_key != old_key and not Path(f"{settings.key_path}.next").exists()
    done = _cli(settings, "doctor")
    assert done.returncode == 0 and f"checked {ROWS} credential versions: 0" in done.stdout

    v = Vault(settings).open(migrate=False)
    try:
        with v.factory() as s:
            (term,) = s.scalars(select(KeyCheck.term)).all()
            sample = s.execute(select(Credential.cred_id, CredentialVersion.wrapped_key,
                                      CredentialVersion.ciphertext)
                               .join(CredentialVersion)
                               .order_by(Credential.cred_id).limit(50)).all()
        assert v.barrier.terms == (term,)
        old_only = Barrier({term: old_key}, term)
        for cid, wrapped, ciphertext in sample:
            with pytest.raises(CryptoError):
                old_only.open(wrapped, ciphertext,
                              crypto.binding("default", cid, 1, "username_password"))
        refs = [Ref(cid) for cid in list(values)[::97]]
        got = VaultResolver(v, "default", SYSTEM).resolve(refs)
        assert {r.id: got[r].values for r in refs} == {r.id: values[r.id] for r in refs}
    finally:
        v.close()


def test_the_sealed_server_secrets_move_with_the_master_key(keyed_vault):
    """The session secret (and hook secrets) open under the new key after a rotation."""
    from workbench import sealed
    settings = keyed_vault[0]
    v = Vault(settings).open(migrate=False)
    session = sealed.ensure(v.factory, v.barrier, sealed.SESSION)
    keyring.rotate(settings, v.factory)
    v.close()
    v = Vault(settings).open(migrate=False)  # only the new key file now
    assert v.barrier.terms == (2,)
    assert sealed.ensure(v.factory, v.barrier, sealed.SESSION) == session
    v.close()
