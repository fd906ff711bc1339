"""Smoke tests of the local peers: each one answers the real client the way the real server does."""
from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest


def _git(*args, cwd=None, extra_env=None, check=True):
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, **(extra_env or {})}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=check)


def _auth_env(user, password):
    # the header travels in the environment, not in argv or the URL
    header = "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": header}


def test_git_http_server_clones_and_serves_new_commits(git_http_server, tmp_path):
    srv = git_http_server
    big = os.urandom(2 * 1024 * 1024)
    url = srv.create_repo("smoke", {"README.md": "hello\n", "dir/old.txt": "old\n",
                                    "blob.bin": big})
    assert url == f"{srv.base_url}/smoke.git" and "@" not in url
    env = {**_auth_env(srv.username, srv.password), "GIT_TRACE_PACKET": "1"}
    out = _git("clone", "-q", url, str(tmp_path / "c"), extra_env=env)
    assert "version 2" in out.stderr  # smart HTTP, protocol v2
    assert (tmp_path / "c" / "README.md").read_text() == "hello\n"
    assert (tmp_path / "c" / "blob.bin").read_bytes() == big

    sha = srv.commit("smoke", {"dir/new.txt": "new\n", "README.md": "changed\n"}, "second",
                     delete=["dir/old.txt"])
    _git("pull", "-q", cwd=tmp_path / "c", extra_env=_auth_env(srv.username, srv.password))
    head = _git("rev-parse", "HEAD", cwd=tmp_path / "c").stdout.strip()
    assert head == sha
    assert not (tmp_path / "c" / "dir" / "old.txt").exists()
    assert (tmp_path / "c" / "dir" / "new.txt").read_text() == "new\n"
    assert (tmp_path / "c" / "README.md").read_text() == "changed\n"
    # the URL without .git is served too
    ls = _git("ls-remote", f"{srv.base_url}/smoke", extra_env=_auth_env("x", srv.token))
    assert sha in ls.stdout


def test_git_http_server_refuses_wrong_credentials(git_http_server, tmp_path):
    srv = git_http_server
    url = srv.create_repo("locked", {"a.txt": "a"})
    anon = _git("clone", "-q", url, str(tmp_path / "a"), check=False)
    assert anon.returncode != 0
    bad = _git("clone", "-q", url, str(tmp_path / "b"), check=False,
               extra_env=_auth_env(srv.username, srv.password + "x"))
    assert bad.returncode != 0 and not (tmp_path / "b" / "a.txt").exists()


def _kubectl(kube_api, tmp_path, auth, *args, **kw):
    cfg = tmp_path / f"kubeconfig-{auth}"
    cfg.write_text(kube_api.kubeconfig(auth, **kw))
    cfg.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(["kubectl", "--kubeconfig", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("auth", ["token", "cert"])
def test_kube_api_answers_real_kubectl(kube_api, tmp_path, auth):
    out = _kubectl(kube_api, tmp_path, auth, "get", "--raw", "/version")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["gitVersion"] == "v1.31.4"
    out = _kubectl(kube_api, tmp_path, auth, "version", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["serverVersion"]["minor"] == "31"
    out = _kubectl(kube_api, tmp_path, auth, "auth", "can-i", "get", "namespaces")
    assert out.returncode == 0 and out.stdout.strip() == "yes", out.stderr


@pytest.mark.parametrize("auth", ["bad-token", "bad-cert"])
def test_kube_api_refuses_real_kubectl_without_valid_credentials(kube_api, tmp_path, auth):
    out = _kubectl(kube_api, tmp_path, auth, "get", "--raw", "/version")
    assert out.returncode != 0 and "gitVersion" not in out.stdout
    if auth == "bad-token":
        assert "Unauthorized" in out.stderr


def _ssh(sshd_server, tmp_path, key_pem, name):
    key = tmp_path / name
    key.write_text(key_pem)
    key.chmod(0o600)
    return subprocess.run(
        ["ssh", "-F", "none", "-i", str(key), "-p", str(sshd_server.port),
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "ConnectTimeout=10",
         f"{sshd_server.username}@{sshd_server.host}", "echo", "logged-in"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_sshd_server_accepts_only_the_authorized_key(sshd_server, tmp_path):
    good = _ssh(sshd_server, tmp_path, sshd_server.private_key_pem, "good")
    assert good.returncode == 0 and good.stdout.strip() == "logged-in", good.stderr
    bad = _ssh(sshd_server, tmp_path, sshd_server.unauthorized_key_pem, "bad")
    assert bad.returncode != 0 and "Permission denied" in bad.stderr


def test_sshd_server_accepts_the_rsa_pem_key(sshd_server, tmp_path):
    assert sshd_server.rsa_private_key_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    out = _ssh(sshd_server, tmp_path, sshd_server.rsa_private_key_pem, "rsa")
    assert out.returncode == 0 and out.stdout.strip() == "logged-in", out.stderr


def test_git_http_server_public_repos_need_no_credentials(git_http_server, tmp_path):
    url = git_http_server.create_repo("open-source", {"LICENSE": "MIT\n"})
    git_http_server.public.add("open-source")
    _git("clone", "-q", url, str(tmp_path / "o"))
    assert (tmp_path / "o" / "LICENSE").read_text() == "MIT\n"


def test_git_http_server_takes_a_chunked_push(git_http_server, tmp_path):
    srv = git_http_server
    url = srv.create_repo("pushed", {"a.txt": "a\n"})
    auth = _auth_env(srv.username, srv.password)
    work = tmp_path / "w"
    _git("clone", "-q", url, str(work), extra_env=auth)
    blob = os.urandom(3 * 1024 * 1024)  # above http.postBuffer (1 MiB): sent chunked
    (work / "big.bin").write_bytes(blob)
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    _git("add", "big.bin", cwd=work)
    _git("commit", "-qm", "big", cwd=work, extra_env=ident)
    trace = _git("push", "-q", "origin", "main", cwd=work,
                 extra_env={**auth, "GIT_TRACE_CURL": "1", "GIT_TRACE_CURL_NO_DATA": "1"})
    assert "Transfer-Encoding: chunked" in trace.stderr
    other = tmp_path / "o"
    _git("clone", "-q", url, str(other), extra_env=auth)
    assert (other / "big.bin").read_bytes() == blob
