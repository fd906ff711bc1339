"""What a newcomer meets on the command line: finding the vault, the config file, messages
instead of tracebacks, output formats, exit codes, completion, and the quick start's path to a
delete warning.  Every test runs the real ``python -m workbench`` in a private HOME."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures._net import free_port, start_serve, stop_serve

ROOT = Path(__file__).resolve().parent.parent
KUBECONFIG = ("apiVersion: v1\nkind: Config\nclusters:\n- name: c1\n  cluster: {server: "
              "\"https://127.0.0.1:6443\"}\nusers:\n- name: u1\n  user: {token: kube-canary-5521}\n"
              "contexts:\n- name: ctx\n  context: {cluster: c1, user: u1}\ncurrent-context: ctx\n")


class Shell:
    """``workbench`` in a fresh HOME and working folder, without any WORKBENCH_* variable."""

    def __init__(self, tmp_path: Path):
        self.home, self.cwd = tmp_path / "home", tmp_path / "work"
        self.home.mkdir()
        self.cwd.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("WORKBENCH_", "XDG_"))}
        self.env.update(HOME=str(self.home), PYTHONPATH=str(ROOT))

    def __call__(self, *args, input=None, check=True, env=None):
        p = subprocess.run([sys.executable, "-m", "workbench", *args], input=input,
                           env={**self.env, **(env or {})}, cwd=self.cwd, capture_output=True,
                           text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError(f"workbench {args} → {p.returncode}\n{p.stdout}\n{p.stderr}")
        assert "Traceback" not in p.stderr, p.stderr
        return p


@pytest.fixture
def sh(tmp_path):
    return Shell(tmp_path)


@pytest.fixture
def vault_sh(sh):
    """A shell whose ./instance holds a vault (``init`` made it)."""
    sh("init")
    return sh


def test_only_init_creates_a_vault_and_the_others_say_where_they_looked(sh):
    for args in (["--help"], ["cred", "--help"], ["cred", "add", "--help"], ["--version"]):
        assert sh(*args).returncode == 0
    assert re.fullmatch(r"workbench \S+\n", sh("--version").stdout)
    p = sh("cred", "add", "x", "--type", "secret_text", input="s3cret-value\n", check=False)
    assert p.returncode == 5
    assert f"no vault in {sh.cwd / 'instance'}" in p.stderr
    assert "workbench init" in p.stderr and "WORKBENCH_INSTANCE" in p.stderr \
        and "workbench config set instance" in p.stderr
    for args in (["cred", "list"], ["doctor"], ["keys", "rotate"], ["pipeline", "lint"],
                 ["serve", "--port", "0"]):
        assert sh(*args, check=False).returncode == 5, args
    assert list(sh.cwd.iterdir()) == []  # no folder, no key, no database
    sh("init")
    assert (sh.cwd / "instance" / "master.key").exists()
    assert sh("cred", "list").returncode == 0


def test_the_config_file_points_commands_at_a_vault_and_a_server(sh, tmp_path):
    vault = tmp_path / "vault"
    sh("init", env={"WORKBENCH_INSTANCE": str(vault)})
    sh("cred", "add", "api-token", "--type", "secret_text", input="tok-canary-3141\n",
       env={"WORKBENCH_INSTANCE": str(vault)})
    assert sh("cred", "list", check=False).returncode == 5  # ./instance: nothing there
    p = sh("config", "set", "instance", str(vault))
    config = sh.home / ".config" / "workbench" / "config.yaml"
    assert str(config) in p.stdout
    assert json.loads(sh("cred", "list", "--json").stdout)["items"][0]["id"] == "api-token"
    assert json.loads(sh("config", "view", "-o", "json").stdout)["settings"] == {
        "instance": str(vault)}
    # the environment still wins over the file
    other = sh("cred", "list", env={"WORKBENCH_INSTANCE": str(tmp_path / "none")}, check=False)
    assert other.returncode == 5 and "from WORKBENCH_INSTANCE" in other.stderr
    # `server` makes run/exec talk to that server without WORKBENCH_SERVER
    port = free_port()
    sh("config", "set", "server", f"http://127.0.0.1:{port}")
    p = sh("exec", "--cred", "api-token", "--", "true", env={"WORKBENCH_RUNNER_TOKEN": "wbr_x"},
           check=False)
    assert p.returncode == 2 and f"cannot reach http://127.0.0.1:{port}" in p.stderr
    sh("config", "unset", "server")
    assert sh("exec", "--cred", "api-token", "--", "true").returncode == 0
    config.write_text("instance: [not, a, path\n")
    p = sh("cred", "list", check=False)
    assert p.returncode == 5 and f"config file {config}" in p.stderr


def test_scripts_serve_help_prints_help_and_sets_nothing_up(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "serve", repo / "scripts" / "serve")
    for flag in ("--help", "-h"):
        p = subprocess.run(["bash", str(repo / "scripts" / "serve"), "--port", "9", flag],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith("Usage: ./scripts/serve")
        assert "One-time password (shown once" not in p.stdout  # init never ran
    assert sorted(x.name for x in repo.iterdir()) == ["scripts"]  # no .venv, no instance


def test_bad_input_gets_a_message_not_a_traceback(vault_sh, tmp_path):
    sh = vault_sh
    p = sh("cred", "add", "x", "--type", "secret_text", "--values-stdin",
           input='{"secret": "half-a-canary-9', check=False)
    assert p.returncode == 2 and "stdin is not valid JSON (line 1" in p.stderr
    assert "half-a-canary" not in p.stderr
    p = sh("cred", "add", "k", "--type", "kubeconfig", "--file", "kubeconfig=/missing/kube",
           check=False)
    assert p.returncode == 2 and "cannot read /missing/kube: No such file" in p.stderr
    p = sh("cred", "add", "k", "--type", "kubeconfig", "--file", f"kubeconfig={tmp_path}",
           check=False)
    assert p.returncode == 2 and "Is a directory" in p.stderr
    p = sh("cred", "add", "k", "--type", "kubeconfig", "--file", "/some/kubeconfig", check=False)
    assert p.returncode == 2 and "--file takes FIELD=PATH, e.g. --file kubeconfig=PATH" in p.stderr
    assert json.loads(sh("cred", "list", "--json").stdout)["total"] == 0  # nothing half-written
    # the master key file is a directory
    keydir = tmp_path / "keydir"
    keydir.mkdir()
    p = sh("cred", "list", env={"WORKBENCH_MASTER_KEY_FILE": str(keydir)}, check=False)
    assert p.returncode == 5 and f"master key file {keydir} is a directory" in p.stderr


def test_generic_values_take_the_advice_they_are_given(vault_sh, tmp_path):
    sh = vault_sh
    p = sh("cred", "add", "g", "--type", "generic", "--set", "values=API_KEY=inline-canary-1",
           check=False)
    assert p.returncode == 2 and "never as a command-line argument" in p.stderr
    assert "inline-canary-1" not in p.stderr
    # every way the message offers works
    pairs = tmp_path / "pairs.env"
    pairs.write_text('# comment\nAPI_KEY="file-canary-22"\nexport REGION=eu-west-1\n')
    assert "--file values=PATH" in p.stderr
    sh("cred", "add", "g", "--type", "generic", "--file", f"values={pairs}")
    assert '{"values": {"KEY": "value"}}' in p.stderr
    sh("cred", "add", "g2", "--type", "generic", "--values-stdin",
       input=json.dumps({"values": {"TOKEN": "stdin-canary-333"}}))
    p = sh("cred", "add", "g3", "--type", "generic", input="", check=False)  # a script
    assert p.returncode == 2 and "Values is required" in p.stderr
    (tmp_path / "p.yaml").write_text("steps:\n- name: s\n  run: test \"$REGION\" = eu-west-1 "
                                     "&& test -n \"$API_KEY\"\n  credentials: [g]\n")
    assert sh("run", str(tmp_path / "p.yaml")).returncode == 0


def test_an_ssh_key_from_a_script_does_not_wait_for_the_optional_passphrase(vault_sh, tmp_path):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    p = subprocess.run([sys.executable, "-m", "workbench", "cred", "add", "deploy-key", "--type",
                        "ssh_private_key", "--set", "username=git", "--file",
                        f"private_key={key}"], stdin=subprocess.DEVNULL, env=vault_sh.env,
                       cwd=vault_sh.cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Passphrase" not in p.stdout + p.stderr
    shown = json.loads(vault_sh("cred", "show", "deploy-key", "-o", "json").stdout)
    assert shown["fields"]["username"] == "git"


def test_output_formats_headers_and_exit_codes(vault_sh):
    sh = vault_sh
    sh("cred", "add", "github-id", "--type", "username_password", "--set", "username=git",
       input="pw-canary-777\n")
    shown = sh("cred", "show", "github-id").stdout
    assert "fields: username=git" in shown and "last_used_at: -" in shown
    assert not re.search(r"\{'|None|\[\]", shown)  # no Python reprs
    assert sh("cred", "list").stdout.split()[:5] == ["ID", "TYPE", "VERSION", "STATUS", "NAME"]
    assert sh("cred", "versions", "github-id").stdout.split()[:3] == ["VERSION", "CREATED", "BY"]
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        assert load(sh("cred", "list", "-o", fmt).stdout)["items"][0]["id"] == "github-id"
    renamed = json.loads(sh("cred", "rename", "github-id", "--name", "Bot", "-o", "json").stdout)
    assert renamed["name"] == "Bot"
    updated = yaml.safe_load(sh("cred", "update", "github-id", "--values-stdin", "-o", "yaml",
                                input='{"password": "pw-canary-888"}').stdout)
    assert updated["version"] == 2
    p = sh("cred", "rename", "github-id", check=False)
    assert p.returncode == 2 and "nothing to change" in p.stderr
    assert sh("cred", "list", "--type", "bogus", check=False).returncode == 2
    p = sh("cred", "show", "nope", "--json", check=False)
    assert p.returncode == 3
    assert json.loads(p.stderr)["error"] == {"code": "not_found", "exit_code": 3, "message":
                                             "credential 'nope' does not exist in workspace "
                                             "'default'"}
    p = sh("cred", "list", "--limit", "x", "-o", "json", check=False)
    assert p.returncode == 2 and json.loads(p.stderr)["error"]["code"] == "usage"
    deleted = json.loads(sh("cred", "delete", "github-id", "--yes", "-o", "json").stdout)
    assert deleted["deleted"] == "github-id"
    assert "4 refused" in sh("--help").stdout


def test_cred_add_help_lists_every_type_with_its_fields(sh):
    text = sh("cred", "add", "--help").stdout
    assert re.search(r"username_password\s+username, password\*, target\?", text)
    assert re.search(r"generic\s+values\*", text)
    assert re.search(r"ssh_private_key\s+username, private_key\*, passphrase\*\?, target\?", text)


def test_quick_start_indexes_the_examples_and_a_delete_warning_names_them(sh):
    init = sh("init", "--pipelines", str(ROOT))
    assert "Pipelines: 3 indexed" in init.stdout and "indexing 3 new or changed" in init.stderr
    sh("cred", "add", "github-id", "--type", "username_password", "--set", "username=ci-bot",
       input="pw-canary-5150\n")
    p = sh("cred", "delete", "github-id", check=False)
    assert p.returncode == 4
    assert "github-id is used by 1 step(s)" in p.stderr
    assert "pipeline build-and-deploy step clone (pipelines/build-and-deploy.yaml:" in p.stderr
    # the README's quick start promises exactly this warning, after exactly these steps
    readme = (ROOT / "README.md").read_text()
    promised = [line[2:] for line in readme.splitlines() if line.startswith("# workbench: ")
                or line.startswith("#   - pipeline")]
    assert len(promised) == 2 and all(line in p.stderr for line in promised), promised
    assert "init --pipelines ." in (ROOT / "scripts" / "serve").read_text()
    assert [i["id"] for i in json.loads(sh("cred", "list", "--json").stdout)["items"]] == [
        "github-id"]  # still there
    again = sh("init", "--pipelines", str(ROOT))  # idempotent: re-syncs the same source
    assert "One-time password" not in again.stdout and "Pipelines: 3 indexed" in again.stdout


def test_the_example_pipeline_agrees_with_the_docs_and_runs_on_a_fresh_vault(vault_sh, tmp_path):
    example = yaml.safe_load((ROOT / "pipelines" / "build-and-deploy.yaml").read_text())
    for step in example["steps"]:
        assert not re.search(r"://[^/\s]*@", step["run"]), "credentials in a URL"
        for use in step.get("credentials", []):
            assert "@" not in (use if isinstance(use, str) else use["id"]), "pinned version"
    docs = (ROOT / "docs" / "pipeline-format.md").read_text()
    clone = next(s["run"] for s in example["steps"] if s["name"] == "clone")
    assert " ".join(clone.split()) in " ".join(docs.split())
    sh = vault_sh
    kube = tmp_path / "kubeconfig"
    kube.write_text(KUBECONFIG)
    sh("cred", "add", "github-id", "--type", "username_password", "--set", "username=ci",
       input="pw-canary-1\n")
    sh("cred", "add", "prod-kubeconfig", "--type", "kubeconfig", "--file", f"kubeconfig={kube}")
    sh("cred", "add", "api-token", "--type", "secret_text", input="api-canary-2\n")
    p = sh("pipeline", "lint", str(ROOT / "pipelines" / "build-and-deploy.yaml"), check=False)
    assert (p.returncode, p.stdout.strip()) == (
        0, "no problems: every reference resolves and fits, every pipeline parses")


def test_exec_timeout_exits_124_and_a_missing_program_is_named_without_a_shell(vault_sh):
    p = vault_sh("exec", "--timeout", "1s", "--", "sleep", "30", check=False)
    assert p.returncode == 124 and "timed out after 1s" in p.stderr
    p = vault_sh("exec", "--", "no-such-program-x", check=False)
    assert p.returncode == 127 and "no-such-program-x: command not found" in p.stderr
    assert "/bin/sh" not in p.stderr.replace("PATH=", "").split("(searched")[0]


def test_runs_are_listed_shown_and_their_masked_logs_printed(vault_sh, tmp_path):
    sh = vault_sh
    sh("cred", "add", "tok", "--type", "secret_text", input="run-canary-4242\n")
    (tmp_path / "p.yaml").write_text("name: shout\nsteps:\n- name: say\n  run: echo \"t=$TOK\"\n"
                                     "  credentials: [tok]\n")
    sh("run", str(tmp_path / "p.yaml"))
    runs = json.loads(sh("run", "list", "-o", "json").stdout)
    assert runs["total"] == 1 and runs["items"][0]["pipeline"] == "shout"
    run_id = runs["items"][0]["id"]
    assert sh("run", "list").stdout.split()[:5] == ["ID", "PIPELINE", "STATUS", "STARTED", "BY"]
    shown = sh("run", "show", run_id).stdout
    assert "status: success" in shown and re.search(r"say\s+success\s+0", shown)
    assert re.search(r"say\s+tok\s+1", shown)
    log = sh("run", "log", run_id, "--step", "say").stdout
    assert log.startswith("t=") and "run-canary-4242" not in log
    assert sh("run", "show", "no-such-run", check=False).returncode == 3
    assert "workbench run list" in sh("run", "--help").stdout


def test_completion_completes_credential_ids(vault_sh):
    sh = vault_sh
    for cid in ("github-id", "gitlab-id", "prod-kube"):
        sh("cred", "add", cid, "--type", "secret_text", input="canary-value-1\n")
    assert "_WORKBENCH_COMPLETE" in sh("completion", "bash").stdout
    p = sh(env={"_WORKBENCH_COMPLETE": "bash_complete", "COMP_WORDS": "workbench cred show gi",
                "COMP_CWORD": "3"})
    assert sorted(line.split(",", 1)[1] for line in p.stdout.split()) == ["github-id", "gitlab-id"]
    p = sh(env={"_WORKBENCH_COMPLETE": "bash_complete", "COMP_WORDS": "workbench exec --cred pr",
                "COMP_CWORD": "3"})
    assert p.stdout.split() == ["plain,prod-kube"]


def test_two_servers_on_one_host_share_no_control_socket(vault_sh):
    procs = []
    try:
        for _ in range(2):  # the second one starts while the first runs
            procs.append(start_serve(vault_sh.env, vault_sh.cwd, 1)[0])
        assert not (vault_sh.home / ".gunicorn").exists()
        assert [proc.poll() for proc in procs] == [None, None]
    finally:
        for proc in procs:
            stop_serve(proc)
