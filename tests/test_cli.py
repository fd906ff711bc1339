"""The ``workbench`` command, run as a real process against a SQLite instance."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures._net import start_serve, stop_serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def wb(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_INSTANCE=str(tmp_path / "inst"), PYTHONPATH=str(ROOT))

    def run(*args, input=None, check=True):
        p = subprocess.run([sys.executable, "-m", "workbench", *args], input=input, env=env,
                           capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"workbench {args} → {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p
    run.instance = tmp_path / "inst"
    return run


def test_init_prints_a_one_time_admin_password_once(wb):
    first = wb("init")
    assert "One-time password" in first.stdout
    assert (wb.instance / "master.key").stat().st_mode & 0o777 == 0o600
    again = wb("init")
    assert "One-time password" not in again.stdout


def test_credential_lifecycle_from_the_cli(wb):
    wb("init")
    wb("cred", "add", "github-id", "--type", "username_password", "--set", "username=alice",
       "--name", "GitHub", input="alice\npw-canary-4242\n")
    listed = json.loads(wb("cred", "list", "--json").stdout)
    assert [i["id"] for i in listed["items"]] == ["github-id"]
    shown = wb("cred", "show", "github-id", "--json").stdout
    assert json.loads(shown)["fields"] == {"username": "alice"}
    assert "pw-canary-4242" not in shown
    wb("cred", "update", "github-id", "--values-stdin", input='{"password": "pw-2"}')
    versions = json.loads(wb("cred", "versions", "github-id", "--json").stdout)["items"]
    assert [v["version"] for v in versions] == [2, 1]
    wb("cred", "rename", "github-id", "--name", "GitHub bot")
    assert json.loads(wb("cred", "show", "github-id", "--json").stdout)["name"] == "GitHub bot"
    gone = wb("cred", "delete", "github-id", input="n\n", check=False)
    assert gone.returncode != 0
    wb("cred", "delete", "github-id", "--yes")
    assert json.loads(wb("cred", "list", "--json").stdout)["total"] == 0


def test_secrets_are_refused_as_arguments(wb):
    wb("init")
    p = wb("cred", "add", "x", "--type", "secret_text", "--set", "secret=on-the-command-line",
           check=False)
    assert p.returncode == 2
    assert "never as a command-line argument" in p.stderr
    assert "on-the-command-line" not in p.stderr + p.stdout


def test_secret_from_a_file_and_bad_kubeconfig_message(wb, tmp_path):
    wb("init")
    f = tmp_path / "creds.bin"
    f.write_bytes(b"\x00\x01binary-file-canary")
    wb("cred", "add", "blob", "--type", "secret_file", "--set", "filename=creds.bin",
       "--file", f"content={f}")
    bad = tmp_path / "kube.yaml"
    bad.write_text("clusters: [ {name: a, token: kube-secret-in-error")
    p = wb("cred", "add", "kube", "--type", "kubeconfig", "--file", f"kubeconfig={bad}",
           check=False)
    assert p.returncode == 2 and "not valid YAML" in p.stderr and "line 1" in p.stderr
    assert "kube-secret-in-error" not in p.stderr


def test_missing_and_wrong_key_messages(wb):
    wb("init")
    wb("cred", "add", "x", "--type", "secret_text", input="abcdefgh\n\n")
    key = wb.instance / "master.key"
    saved = key.read_text()
    key.unlink()
    p = wb("cred", "list", check=False)
    assert p.returncode == 5 and "no master key" in p.stderr and "Traceback" not in p.stderr
    key.write_text("not-a-key")
    p = wb("cred", "list", check=False)
    assert p.returncode == 5 and ("not valid base64" in p.stderr or "must be 32 bytes" in p.stderr)
    key.write_text(saved)
    key.chmod(0o600)  # write_text made it 0644, which start-up refuses (issue 16, item 5)
    assert wb("doctor").returncode == 0


def test_tokens_are_printed_once(wb):
    wb("init")
    tok = json.loads(wb("runner-token", "create", "ci", "--json").stdout)
    assert tok["token"].startswith("wbr_") and tok["workspace"] == "default"


def test_serve_runs_the_real_server(wb):
    import requests
    wb("init")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env.update(WORKBENCH_INSTANCE=str(wb.instance), PYTHONPATH=str(ROOT))
    proc, url = start_serve(env, workers=1)
    try:
        assert '"openapi"' in requests.get(f"{url}/api/v1/openapi.json", timeout=10).text
    finally:
        stop_serve(proc)
