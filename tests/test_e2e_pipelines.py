"""End to end: real git, kubectl and docker steps with canary secrets; nothing may leak into the
stored log, another step's environment, or files left under the scratch or work dirs."""
import base64
import os
import secrets
import textwrap
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner

from tests.fixtures.pipelines import DictResolver, canary
from tests.fixtures.vault import add_scopes
from workbench.pipeline.parse import parse_pipeline
from workbench.pipeline.runner import Recorder, run_pipeline

# Reads its credentials from the environment: nothing secret in git's argv or .git/config.
GIT_HELPER = "credential.helper=!f() { echo username=$GIT_USER; echo password=$GIT_PASS; }; f"


class ListRecorder(Recorder):
    def __init__(self):
        self.records = []

    def record(self, record):
        self.records.append(record)


def encoded_forms(value: str) -> set[bytes]:
    raw = value.encode()
    return {raw, base64.b64encode(raw), base64.b64encode(raw).rstrip(b"="),
            base64.urlsafe_b64encode(raw).rstrip(b"="), quote(value, safe="").encode(),
            quote_plus(value).encode()}


def assert_clean(data: bytes | str, values: list[str], where: str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for value in values:
        for form in encoded_forms(value):
            assert form not in blob, f"a form of a secret leaked into {where}"


def files_under(root: str):
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                yield p


def assert_disk_clean(root: str, values: list[str]) -> None:
    for p in files_under(root):
        assert_clean(p.read_bytes(), values, str(p))


def run(text: str, resolver, tmp_path, **kw):
    scratch, work = tmp_path / "scratch", tmp_path / "work"
    scratch.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    out, rec = bytearray(), ListRecorder()
    p = parse_pipeline(textwrap.dedent(text), filename="e2e.yaml")
    result = run_pipeline(p, resolver, recorder=rec, scratch=str(scratch), echo=out.extend,
                          workdir=str(work), **kw)
    return result, bytes(out), rec.records[0], work, scratch


def leftover_secret_dirs(scratch: Path) -> list[str]:
    return [p.name for p in scratch.iterdir()] if scratch.exists() else []


def test_git_clone_with_username_password(git_http_server, tmp_path):
    name = f"app-{secrets.token_hex(4)}"
    url = git_http_server.create_repo(name, {"README.md": "hello from the repo\n"})
    r = DictResolver()
    r.add("git-cred", "username_password", {"username": git_http_server.username,
                                            "password": git_http_server.password})
    r.add("other", "secret_text", {"secret": canary("other")})
    result, out, record, work, scratch = run(f"""\
        steps:
          - name: clone
            run: |
              git -c '{GIT_HELPER}' clone -q {url} app
              cat app/README.md
              echo "leak: $GIT_PASS"
              printf %s "$GIT_PASS" | base64
              printf %s "$GIT_USER:$GIT_PASS" | base64
            credentials:
              - id: git-cred
                env: {{username: GIT_USER, password: GIT_PASS}}
          - name: after
            run: env > env-of-after.txt; test -d app
            credentials: [other]
        """, r, tmp_path)
    assert result.status == "success", record
    assert b"hello from the repo" in out and b"leak: " in out
    values = [git_http_server.password, f"{git_http_server.username}:{git_http_server.password}"]
    assert_clean(out, values, "console output")
    assert_clean(record["steps"][0]["log"], values, "stored log")
    env_after = (work / "env-of-after.txt").read_text()
    assert "GIT_PASS" not in env_after and "WORKBENCH_STEP=after" in env_after
    assert_clean(env_after, values, "the next step's environment")
    assert_disk_clean(str(work), values)
    assert_disk_clean(str(scratch), values + [r.store["other"][0][1]["secret"]])
    assert leftover_secret_dirs(scratch) == []
    assert record["uses"][0]["credential_id"] == "git-cred"


def test_kubectl_reads_the_injected_kubeconfig_file(kube_api, tmp_path):
    r = DictResolver()
    r.add("prod-kube", "kubeconfig", {"kubeconfig": kube_api.kubeconfig("token")})
    result, out, record, work, scratch = run("""\
        steps:
          - name: deploy
            run: |
              echo "$KUBECONFIG" > kubeconfig-path.txt
              stat -c %a "$KUBECONFIG"
              kubectl --kubeconfig "$KUBECONFIG" config view --raw -o jsonpath='{.users[0].user.token}'
              echo
              kubectl --kubeconfig "$KUBECONFIG" config view -o jsonpath='{.clusters[0].cluster.server}'
              echo
              printf %s "$(kubectl --kubeconfig "$KUBECONFIG" config view --raw -o jsonpath='{.users[0].user.token}')" | base64
            credentials:
              - id: prod-kube
                file: KUBECONFIG
        """, r, tmp_path)
    assert result.status == "success", record
    assert b"600\n" in out
    assert kube_api.server.encode() in out  # kubectl really read the file
    assert_clean(out, [kube_api.token], "console output")
    assert_clean(record["steps"][0]["log"], [kube_api.token], "stored log")
    path = (work / "kubeconfig-path.txt").read_text().strip()
    assert path and not os.path.exists(path)  # removed after the step
    assert_disk_clean(str(scratch), [kube_api.token])
    assert_disk_clean(str(work), [kube_api.token])
    assert leftover_secret_dirs(scratch) == []


def test_files_removed_after_a_step_is_killed_by_timeout(kube_api, tmp_path):
    r = DictResolver()
    r.add("kube", "kubeconfig", {"kubeconfig": kube_api.kubeconfig("token")})
    r.add("tok", "secret_text", {"secret": canary("tok")})
    result, out, record, work, scratch = run("""\
        steps:
          - name: hang
            timeout: 1s
            run: echo "$KUBECONFIG" > path.txt; cp "$KUBECONFIG" "$(dirname "$KUBECONFIG")/copy"; sleep 30
            credentials: [kube, {id: tok, file: TOKEN_FILE}]
          - name: never
            run: echo never
        """, r, tmp_path)
    assert result.status == "failed"
    assert [s["status"] for s in record["steps"]] == ["timeout", "skipped"]
    path = (work / "path.txt").read_text().strip()
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    assert_disk_clean(str(scratch), [kube_api.token, r.store["tok"][0][1]["secret"]])
    assert leftover_secret_dirs(scratch) == []


@pytest.mark.docker
def test_docker_step_pulls_from_private_registry(private_registry, tmp_path):
    reg = private_registry
    r = DictResolver()
    r.add("registry-id", "docker_registry", {"registry": reg.host, "username": reg.username,
                                             "password": reg.password})
    r.add("api-token", "secret_text", {"secret": canary("apitoken")})
    token = r.store["api-token"][0][1]["secret"]
    result, out, record, work, scratch = run(f"""\
        steps:
          - name: in-container
            image: {reg.image}
            image_pull_credential: registry-id
            run: |
              echo "inside: $API_TOKEN"
              echo "$API_TOKEN" | base64
              cat "$DOCKER_CONFIG/config.json"
              env > /workspace/env-in-container.txt
            credentials:
              - {{id: api-token, env: API_TOKEN}}
              - registry-id
        """, r, tmp_path)
    assert result.status == "success", record
    assert b"inside: " in out and b'"auths"' in out
    values = [reg.password, f"{reg.username}:{reg.password}", token]
    assert_clean(out, values, "console output")
    assert_clean(record["steps"][0]["log"], values, "stored log")
    assert "API_TOKEN=" in (work / "env-in-container.txt").read_text()
    (work / "env-in-container.txt").unlink()  # holds the step's own token by design
    assert_disk_clean(str(work), values)
    assert_disk_clean(str(scratch), values)
    assert leftover_secret_dirs(scratch) == []
    assert [(u["credential_id"], u["version"]) for u in record["uses"]] == [
        ("api-token", 1), ("registry-id", 1)]


def test_cli_run_and_exec_through_a_server(resolve_server, tmp_path, monkeypatch):
    from workbench.cli.runs import exec_, run as run_cmd

    token = resolve_server.resolver
    token.add("tok", "secret_text", {"secret": canary("clitok")})
    secret = token.store["tok"][0][1]["secret"]
    monkeypatch.setenv("WORKBENCH_SERVER", resolve_server.url)
    monkeypatch.setenv("WORKBENCH_RUNNER_TOKEN", resolve_server.token)
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()

    res = cli.invoke(exec_, ["--cred", "tok:env=TOKEN", "--", "sh", "-c",
                             'echo "got $TOKEN"; env; exit 7'])
    assert res.exit_code == 7, res.output
    assert "got " in res.output and secret not in res.output
    assert "WORKBENCH_RUNNER_TOKEN" not in res.output and resolve_server.token not in res.output
    assert "WORKBENCH_STEP=exec" in res.output

    res = cli.invoke(exec_, ["--cred", "tok:file=TOKEN_FILE", "--", "cat", "$TOKEN_FILE"])
    assert res.exit_code != 0  # no shell: "$TOKEN_FILE" is a literal argument

    res = cli.invoke(exec_, ["--cred", "tok:env=PATH", "--", "true"])
    assert res.exit_code != 0 and "may not be set" in res.output

    (tmp_path / "p.yaml").write_text(
        "steps:\n  - {name: a, run: 'echo $TOK; false', credentials: [tok]}\n"
        "  - {name: b, run: 'echo never'}\n")
    res = cli.invoke(run_cmd, ["p.yaml", "--workspace", "team"])
    assert res.exit_code == 1 and secret not in res.output and "never" not in res.output
    workspace, record = resolve_server.runs[-1]
    assert workspace == "team" and record["status"] == "failed"
    assert [s["status"] for s in record["steps"]] == ["failed", "skipped"]
    assert all(resolve_server.token not in req["url"] for req in resolve_server.requests)


def local_vault(tmp_path):
    """Environment and a ``workbench`` caller for a fresh local vault under ``tmp_path``."""
    import subprocess
    import sys

    from workbench import crypto

    master = crypto.encode_key(crypto.generate_key())
    env = {"PATH": os.environ["PATH"], "WORKBENCH_INSTANCE": str(tmp_path / "inst"),
           "WORKBENCH_MASTER_KEY": master, "PYTHONPATH": str(Path(__file__).parents[1])}

    def wb(*args, stdin=None, popen=False):
        cmd = [sys.executable, "-m", "workbench", *args]
        if popen:
            return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        return subprocess.run(cmd, env=env, cwd=tmp_path, input=stdin, capture_output=True,
                              text=True, timeout=120)
    return master, wb


def recorded_runs(tmp_path):
    from workbench.db import make_engine, make_sessionmaker
    from workbench.pipeline.records import get_run, list_runs, run_to_dict

    engine = make_engine(f"sqlite:///{tmp_path / 'inst' / 'workbench.db'}")
    try:
        with make_sessionmaker(engine)() as session:
            return [run_to_dict(get_run(session, r.id), with_log=True)
                    for r in list_runs(session, "default")]
    finally:
        engine.dispose()


def test_cli_embedded_run_against_the_local_vault(tmp_path):
    """``python -m workbench run`` with the local vault: real DB, real encryption, real steps."""
    import json

    master, wb = local_vault(tmp_path)
    secret = canary("vaulttok")

    added = wb("cred", "add", "deploy-token", "--type", "secret_text", "--values-stdin",
               stdin=json.dumps({"secret": secret}))
    assert added.returncode == 0, added.stderr
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""\
        name: embedded
        steps:
          - name: use
            run: echo "token=$DEPLOY_TOKEN"; env
            credentials: [deploy-token]
          - name: fail
            run: exit 4
          - name: never
            run: echo never
        """))
    res = wb("run", "p.yaml")
    assert res.returncode == 1
    assert "token=" in res.stdout and secret not in res.stdout + res.stderr
    assert master not in res.stdout and "WORKBENCH_MASTER_KEY" not in res.stdout
    assert "step fail: failed (exit 4)" in res.stderr and "never" not in res.stdout
    (d,) = recorded_runs(tmp_path)
    assert [(s["name"], s["status"], s["exit_code"]) for s in d["steps"]] == [
        ("use", "success", 0), ("fail", "failed", 4), ("never", "skipped", None)]
    assert secret not in d["steps"][0]["log"] and "token=" in d["steps"][0]["log"]
    assert d["uses"][0]["credential_id"] == "deploy-token" and d["trigger_user"]

    res = wb("exec", "--cred", "deploy-token:file=TOKEN_FILE", "--", "sh", "-c",
             'wc -c < "$TOKEN_FILE"; cat "$TOKEN_FILE"; echo; exit 9')
    assert res.returncode == 9, res.stderr
    size, shown = res.stdout.split("\n")[:2]
    assert int(size) == len(secret) and shown and secret not in res.stdout
    res = wb("exec", "--cred", "nope", "--", "true")
    assert res.returncode != 0 and "unknown credential 'nope'" in res.stderr


def test_http_resolver_against_the_real_api(vault, tmp_path):
    """The runner's HTTP client against the vault's own /api/v1/resolve with a runner token."""
    import threading

    from werkzeug.serving import make_server

    from workbench import create_app, credentials
    from workbench.accounts import create_token
    from workbench.audit import SYSTEM
    from workbench.errors import NotFound, PermissionDenied
    from workbench.pipeline import records
    from workbench.pipeline.remote import HttpRecorder, HttpResolver
    from workbench.pipeline.resolve import Ref

    content = canary("pem").encode() + b"\n\x00\xff"
    add_scopes(vault, "team")
    with vault.factory.begin() as s:
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace="team", cred_id="cert",
                                      type="secret_file",
                                      values={"filename": "c.pem", "content": content})
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace="team", cred_id="tok",
                                      type="secret_text", values={"secret": canary("apitok")})
        token = create_token(s, SYSTEM, "ci", kind="runner", workspace="team",
                             allow=["cert", "tok", "nope"]).secret
    server = make_server("127.0.0.1", 0, create_app(vault.settings, vault=vault), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        resolver = HttpResolver(url, token, "team")
        out = resolver.resolve([Ref("cert"), Ref("tok", 1)], context={"run": "r1"})
        assert out[Ref("cert")].values["content"] == content
        assert out[Ref("tok", 1)].type == "secret_text" and out[Ref("tok", 1)].version == 1
        with pytest.raises(NotFound) as info:
            resolver.resolve([Ref("tok"), Ref("tok", 9), Ref("nope")])
        assert sorted(info.value.details["missing"]) == ["nope", "tok@9"]
        with pytest.raises(PermissionDenied):
            HttpResolver(url, token, "other").resolve([Ref("tok")])
        p = parse_pipeline("steps:\n  - name: show\n    run: cat \"$CERT\" | head -1; "
                           "echo \"$TOK\"\n    credentials: [cert, tok]\n", filename="api.yaml")
        console = bytearray()
        result = run_pipeline(p, resolver, recorder=HttpRecorder(url, token, "team"),
                              scratch=str(tmp_path), echo=console.extend)
        assert result.status == "success"
        tok = out[Ref("tok", 1)].values["secret"]
        values = [tok, content.split(b"\n")[0].decode()]
        assert_clean(bytes(console), values, "console output")
        with vault.factory() as s:  # runner tokens may not read runs back; the DB may
            got = records.run_to_dict(records.get_run(s, result.id, "team"), with_log=True)
        assert got["status"] == "success" and got["pipeline"] == "api"
        assert [u["credential_id"] for u in got["uses"]] == ["cert", "tok"]
        assert got["steps"][0]["log"].strip()
        assert_clean(got["steps"][0]["log"], values, "the stored log")
        with pytest.raises(PermissionDenied):
            HttpRecorder(url, token, "other").record(dict(result.record, id="another"))
    finally:
        server.shutdown()


def test_sigterm_to_the_cli_cancels_cleans_up_and_records(tmp_path):
    import json
    import signal
    import time

    _master, wb = local_vault(tmp_path)
    secret = canary("sigtok")
    assert wb("cred", "add", "tok", "--type", "secret_text", "--values-stdin",
              stdin=json.dumps({"secret": secret})).returncode == 0
    (tmp_path / "p.yaml").write_text(
        "steps:\n  - name: wait\n    run: echo \"$TOKEN_FILE\" > path.txt; echo $$ > pid.txt;"
        " sleep 60\n    credentials: [{id: tok, file: TOKEN_FILE}]\n"
        "  - {name: after, run: 'echo after > after.txt'}\n")
    proc = wb("run", "p.yaml", popen=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pid.txt").exists() or not (tmp_path / "pid.txt").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        path = (tmp_path / "path.txt").read_text().strip()
        assert os.path.exists(path)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert not os.path.exists(path) and not (tmp_path / "after.txt").exists()
    shell_pid = int((tmp_path / "pid.txt").read_text())
    assert not os.path.exists(f"/proc/{shell_pid}") or \
        Path(f"/proc/{shell_pid}/stat").read_text().split()[2] == "Z"
    (d,) = recorded_runs(tmp_path)
    assert d["status"] == "cancelled"
    assert [s["status"] for s in d["steps"]] == ["cancelled", "skipped"]


@pytest.mark.docker
def test_docker_step_killed_by_timeout_leaves_nothing(docker_client, busybox_image, tmp_path):
    r = DictResolver()
    r.add("tok", "secret_text", {"secret": canary("dockertok")})
    secret = r.store["tok"][0][1]["secret"]
    step = f"hang-{secrets.token_hex(3)}"
    result, out, record, work, scratch = run(f"""\
        steps:
          - name: {step}
            image: {busybox_image}
            timeout: 2s
            run: test -s "$TOKEN_FILE" && echo started; sleep 60
            credentials: [{{id: tok, file: TOKEN_FILE}}]
        """, r, tmp_path)
    assert [s["status"] for s in record["steps"]] == ["timeout"], record
    assert b"started" in out
    assert docker_client.containers.list(all=True, filters={"name": f"wb-{step}-"}) == []
    assert_disk_clean(str(scratch), [secret])
    assert_disk_clean(str(work), [secret])
    assert leftover_secret_dirs(scratch) == []
