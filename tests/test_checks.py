"""Credential status: connectivity checks against real peers, static validation and summaries."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from workbench.checks import CHECKS, Condition, summary, validate, verify
from tests.fixtures._net import free_port

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def assert_clean(cond: Condition, *secrets: str) -> None:
    text = json.dumps(cond.to_dict())
    for s in secrets:
        assert s not in text


def jwt(exp: datetime) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa
    claims = {"sub": "ci", "exp": int(exp.timestamp())}
    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


# ---- git over HTTP --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo(git_http_server):
    return git_http_server.create_repo("checked", {"README.md": "checked\n"})


def test_git_url_with_good_password_is_authenticated(git_http_server, repo):
    s = git_http_server
    c = verify("username_password", {"username": s.username, "password": s.password,
                                     "target": repo})
    assert (c.type, c.status, c.reason) == ("Reachable", "True", "Authenticated"), c
    assert_clean(c, s.password)
    # it really went through git: the ref advertisement was fetched as that user
    assert ("GET", "/checked.git/info/refs", s.username) in s.requests


def test_git_url_with_wrong_password_fails_authentication(git_http_server, repo):
    s = git_http_server
    c = verify("username_password", {"username": s.username, "password": "wrong-" + s.password,
                                     "target": repo})
    assert (c.status, c.reason) == ("False", "AuthenticationFailed"), c
    assert_clean(c, s.password)


def test_git_url_on_closed_port_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}/x.git"
    c = verify("username_password", {"username": "u", "password": "p4ssw0rd", "target": url})
    assert (c.status, c.reason) == ("False", "Unreachable"), c


def test_git_token_and_url_without_dot_git(git_http_server, repo):
    s = git_http_server
    good = verify("secret_text", {"secret": s.token, "target": repo[:-len(".git")]})
    assert (good.status, good.reason) == ("True", "Authenticated"), good
    bad = verify("secret_text", {"secret": "tok-wrong", "target": repo})
    assert (bad.status, bad.reason) == ("False", "AuthenticationFailed"), bad
    missing = verify("username_password", {"username": s.username, "password": s.password,
                                           "target": f"{s.base_url}/nothing-here.git"})
    assert (missing.status, missing.reason) == ("False", "UnexpectedResponse"), missing


def test_password_never_in_any_process_argv(git_http_server, repo, monkeypatch):
    """While the server holds git's authenticated request, no process shows the password."""
    s = git_http_server
    server_secret = "srv-" + os.urandom(8).hex()
    monkeypatch.setenv("WORKBENCH_TEST_SERVER_SECRET", server_secret)
    seen: list[bytes] = []
    git_envs: list[bytes] = []
    result: list[Condition] = []
    s.held.clear()
    s.hold.set()
    s.release.clear()
    worker = threading.Thread(target=lambda: result.append(verify(
        "username_password", {"username": s.username, "password": s.password, "target": repo},
        timeout=30)))
    worker.start()
    try:
        assert s.held.wait(20), "git never sent an authenticated request"
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes()
                seen.append(argv)
                if f":{s.port}/checked.git".encode() in argv:
                    git_envs.append((proc / "environ").read_bytes())
            except OSError:
                continue
    finally:
        s.hold.clear()
        s.release.set()
        worker.join(30)
    # neither the password nor a URL carrying it was on any command line …
    assert not [a for a in seen if s.password.encode() in a]
    assert not [a for a in seen if f"{s.username}:".encode() in a]
    # … while the scan did see git talking to the repo (else it would prove nothing)
    assert any(b"git" in a and f":{s.port}/checked.git".encode() in a for a in seen)
    # the git processes do not inherit the server's own environment values
    assert git_envs and not [e for e in git_envs if server_secret.encode() in e]
    assert all(b"GIT_ASKPASS=" in e for e in git_envs)
    assert result and result[0].reason == "Authenticated"


def test_git_targets_that_would_run_programs_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    for target in (f"ext::sh -c touch% {marker}", f"file://{tmp_path}/x.git",
                   "--upload-pack=touch /tmp/x", "localhost:8080", str(tmp_path)):
        c = verify("username_password", {"username": "u", "password": "p4ss", "target": target})
        assert (c.status, c.reason) == ("Unknown", "NotTestable"), (target, c)
    assert not marker.exists()


# ---- plain HTTP -------------------------------------------------------------------------
def test_http_url_basic_auth(git_http_server):
    s = git_http_server
    url = f"{s.base_url}/health"
    good = verify("username_password", {"username": s.username, "password": s.password,
                                        "target": url})
    assert (good.status, good.reason) == ("True", "Authenticated"), good
    bad = verify("username_password", {"username": s.username, "password": "nope",
                                       "target": url})
    assert (bad.status, bad.reason) == ("False", "AuthenticationFailed"), bad
    down = verify("username_password", {"username": "u", "password": "p4ss",
                                        "target": f"http://127.0.0.1:{free_port()}/health"})
    assert (down.status, down.reason) == ("False", "Unreachable"), down
    for c in (good, bad):
        assert_clean(c, s.password)


def test_http_url_bearer_token(git_http_server):
    s = git_http_server
    url = f"{s.base_url}/health?team=ci"
    good = verify("secret_text", {"secret": s.token, "target": url})
    assert (good.status, good.reason) == ("True", "Authenticated"), good
    assert ("GET", "/health", "token") in s.requests
    bad = verify("secret_text", {"secret": "tok-not-it", "target": url})
    assert (bad.status, bad.reason) == ("False", "AuthenticationFailed"), bad
    down = verify("secret_text", {"secret": s.token,
                                  "target": f"http://127.0.0.1:{free_port()}/"})
    assert (down.status, down.reason) == ("False", "Unreachable"), down
    for c in (good, bad, down):
        assert_clean(c, s.token)


def test_credentials_in_the_target_url_are_not_shown(git_http_server):
    s = git_http_server
    url = f"http://{s.username}:{s.password}@127.0.0.1:{s.port}/health?access_token=QWERTY123"
    c = verify("username_password", {"username": s.username, "password": s.password,
                                     "target": url})
    assert c.reason == "Authenticated"
    assert_clean(c, s.password, "QWERTY123")


def test_no_target_is_unknown():
    for t, v in (("username_password", {"username": "u", "password": "p4ss"}),
                 ("secret_text", {"secret": "s3cret"})):
        c = verify(t, v)
        assert (c.status, c.reason) == ("Unknown", "NoTarget")


# ---- kubeconfig -------------------------------------------------------------------------
def kubectl(config: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "kubeconfig"
    path.write_text(config)
    path.chmod(0o600)
    return subprocess.run(["kubectl", "--kubeconfig", str(path), "get", "--raw", "/version"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})


@pytest.mark.parametrize("auth,status,reason", [
    ("token", "True", "Authenticated"), ("cert", "True", "Authenticated"),
    ("bad-token", "False", "AuthenticationFailed"), ("bad-cert", "False", "AuthenticationFailed")])
def test_kubeconfig_check_agrees_with_kubectl(kube_api, tmp_path, auth, status, reason):
    config = kube_api.kubeconfig(auth)
    c = verify("kubeconfig", {"kubeconfig": config})
    assert (c.status, c.reason) == (status, reason), c
    assert_clean(c, kube_api.token, kube_api.client_key_pem.splitlines()[1])
    real = kubectl(config, tmp_path)
    assert (real.returncode == 0) == (status == "True"), real.stderr
    if status == "True":
        assert "v1.31.4" in c.message and json.loads(real.stdout)["gitVersion"] == "v1.31.4"


def test_kubeconfig_check_uses_access_review_then_falls_back_to_api(kube_api):
    before = len(kube_api.requests)
    c = verify("kubeconfig", {"kubeconfig": kube_api.kubeconfig("token")})
    assert c.reason == "Authenticated"
    assert ("POST", SSAR, "tester") in kube_api.requests[before:]
    kube_api.forbidden.add(SSAR)
    try:
        before = len(kube_api.requests)
        c = verify("kubeconfig", {"kubeconfig": kube_api.kubeconfig("cert")})
    finally:
        kube_api.forbidden.discard(SSAR)
    assert (c.status, c.reason) == ("True", "Authenticated"), c
    assert ("GET", "/api", "tester") in kube_api.requests[before:]


def test_kubeconfig_unreachable_and_untrusted(kube_api):
    for auth in ("token", "cert"):
        down = kube_api.kubeconfig(auth, server=f"https://127.0.0.1:{free_port()}")
        c = verify("kubeconfig", {"kubeconfig": down})
        assert (c.status, c.reason) == ("False", "Unreachable") and "refused" in c.message, c
    stranger = kube_api.kubeconfig("token", ca_pem=kube_api.foreign_ca.pem)
    c = verify("kubeconfig", {"kubeconfig": stranger})
    assert (c.status, c.reason) == ("False", "Unreachable") and "not trusted" in c.message, c


def test_kubeconfig_exec_plugin_is_never_run(kube_api, tmp_path):
    marker = tmp_path / "exec-ran"
    plugin = tmp_path / "kube-login"
    cred = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
            "status": {"token": kube_api.token}}
    plugin.write_text(f"#!/bin/sh\ntouch {marker}\necho '{json.dumps(cred)}'\n")
    plugin.chmod(0o755)
    config = kube_api.kubeconfig("exec", exec_command=str(plugin))
    c = verify("kubeconfig", {"kubeconfig": config})
    assert (c.status, c.reason) == ("Unknown", "NotTestable"), c
    assert "not testable from the server" in c.message
    valid = validate("kubeconfig", {"kubeconfig": config})
    assert valid[0].status == "True" and valid[0].reason == "ExecPlugin"
    assert not marker.exists()
    # control: the real kubectl does run it, so the marker would have shown a run
    assert kubectl(config, tmp_path).returncode == 0
    assert marker.exists()


# ---- ssh --------------------------------------------------------------------------------
def test_ssh_key_good_bad_unreachable(sshd_server):
    s = sshd_server
    good = verify("ssh_private_key", {"username": s.username, "private_key": s.private_key_pem,
                                      "target": s.target})
    assert (good.status, good.reason) == ("True", "Authenticated"), good
    bad = verify("ssh_private_key", {"username": s.username,
                                     "private_key": s.unauthorized_key_pem, "target": s.target})
    assert (bad.status, bad.reason) == ("False", "AuthenticationFailed"), bad
    down = verify("ssh_private_key", {"username": s.username, "private_key": s.private_key_pem,
                                      "target": f"127.0.0.1:{free_port()}"})
    assert (down.status, down.reason) == ("False", "Unreachable"), down
    for c in (good, bad, down):
        assert_clean(c, s.private_key_pem.splitlines()[1])


def test_ssh_key_with_passphrase(sshd_server):
    s = sshd_server
    key = serialization.load_ssh_private_key(s.private_key_pem.encode(), None)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                               serialization.BestAvailableEncryption(b"open sesame")).decode()
    c = verify("ssh_private_key", {"username": s.username, "private_key": locked,
                                   "passphrase": "open sesame", "target": s.target})
    assert c.reason == "Authenticated", c
    wrong = validate("ssh_private_key", {"username": "u", "private_key": locked,
                                         "passphrase": "closed sesame"})
    assert (wrong[0].status, wrong[0].reason) == ("False", "WrongPassphrase")
    missing = validate("ssh_private_key", {"username": "u", "private_key": locked})
    assert (missing[0].status, missing[0].reason) == ("False", "PassphraseRequired")


def test_ssh_key_without_target_is_only_parsed():
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    c = verify("ssh_private_key", {"username": "u", "private_key": pem})
    assert (c.status, c.reason) == ("Unknown", "NoTarget") and "ed25519" in c.message
    assert validate("ssh_private_key", {"username": "u", "private_key": pem})[0].status == "True"
    broken = pem.replace(pem.splitlines()[1], "A" * 64)
    v = validate("ssh_private_key", {"username": "u", "private_key": broken})
    assert (v[0].status, v[0].reason) == ("False", "KeyDoesNotParse")


# ---- expiry and validation --------------------------------------------------------------
def test_client_cert_expiring_in_three_days(kube_api):
    cert = kube_api.issue_client_cert(days=3)
    conds = {c.type: c for c in validate("kubeconfig",
                                         {"kubeconfig": kube_api.kubeconfig("cert", cert=cert)})}
    assert (conds["Valid"].status, conds["Expiring"].status) == ("True", "True")
    assert conds["Expiring"].reason == "ExpiresSoon" and "in 3 days" in conds["Expiring"].message
    assert summary(list(conds.values()))[0] == "Issues found"
    fresh = {c.type: c for c in validate("kubeconfig", {"kubeconfig": kube_api.kubeconfig("cert")})}
    assert fresh["Expiring"].status == "False"


def test_expired_client_cert_is_invalid_and_refused(kube_api):
    cert = kube_api.issue_client_cert(days=-1)
    config = kube_api.kubeconfig("cert", cert=cert)
    valid = validate("kubeconfig", {"kubeconfig": config})[0]
    assert (valid.status, valid.reason) == ("False", "Expired")
    c = verify("kubeconfig", {"kubeconfig": config})
    assert (c.status, c.reason) == ("False", "AuthenticationFailed"), c


def test_expired_jwt_makes_secret_text_invalid():
    now = datetime.now(timezone.utc)
    old = {c.type: c for c in validate("secret_text", {"secret": jwt(now - timedelta(hours=1))})}
    assert (old["Valid"].status, old["Valid"].reason) == ("False", "Expired")
    assert old["Expiring"].status == "True"
    later = {c.type: c for c in validate("secret_text", {"secret": jwt(now + timedelta(days=40))})}
    assert later["Valid"].status == "True" and later["Expiring"].status == "False"
    plain = validate("secret_text", {"secret": "not.a-jwt"})
    assert [c.type for c in plain] == ["Valid"]


def test_expired_jwt_in_kubeconfig_token(kube_api):
    token = jwt(datetime.now(timezone.utc) - timedelta(days=2))
    v = validate("kubeconfig", {"kubeconfig": kube_api.kubeconfig("token", token=token)})
    assert (v[0].status, v[0].reason) == ("False", "Expired") and "token" in v[0].message
    assert token not in json.dumps([c.to_dict() for c in v])


def test_validation_flags_without_echoing_values(kube_api):
    bad = validate("kubeconfig", {"kubeconfig": "clusters: [oops"})
    assert (bad[0].status, bad[0].reason) == ("False", "Invalid")
    key, _ = kube_api.issue_client_cert()
    mismatch = kube_api.kubeconfig("cert", cert=(kube_api.client_cert_pem, _))
    v = validate("kubeconfig", {"kubeconfig": mismatch})[0]
    assert (v.status, v.reason) == ("False", "KeyMismatch")
    unknown = validate("no_such_type", {})[0]
    assert (unknown.status, unknown.reason) == ("False", "Invalid")


# ---- verify and summary -----------------------------------------------------------------
def test_verify_never_leaks_exception_text(monkeypatch):
    def explode(values, timeout):
        raise RuntimeError(f"cannot open https://u:{values['password']}@host/")
    monkeypatch.setitem(CHECKS, "username_password", explode)
    c = verify("username_password", {"username": "u", "password": "hunter2-secret"})
    assert (c.status, c.reason) == ("Unknown", "Unreachable")
    assert "hunter2" not in c.message and "RuntimeError" in c.message
    assert verify("access_key", {}).reason == "NotTestable"


def test_summary_rules():
    ok = Condition("Reachable", "True", "Authenticated", "fine")
    valid = Condition("Valid", "True", "WellFormed", "well-formed")
    broken = Condition("Reachable", "False", "AuthenticationFailed", "rejected")
    soon = Condition("Expiring", "True", "ExpiresSoon", "expires in 3 days")
    untestable = Condition("Reachable", "Unknown", "NotTestable", "exec plugin")
    assert summary(None) == ("Not tested", "")
    assert summary([valid, ok], checking=True)[0] == "Checking…"
    assert summary([valid, ok]) == ("No issues found", "fine")
    assert summary([valid, broken, soon]) == ("Issues found", "rejected")
    assert summary([valid, soon]) == ("Issues found", "expires in 3 days")
    assert summary([valid, untestable]) == ("Not tested", "exec plugin")
    assert summary([valid])[0] == "Not tested"


def test_git_check_gives_up_after_its_timeout(git_http_server, repo):
    s = git_http_server
    s.release.clear()
    s.hold.set()
    try:
        c = verify("username_password", {"username": s.username, "password": s.password,
                                         "target": repo}, timeout=2)
    finally:
        s.hold.clear()
        s.release.set()
    assert (c.status, c.reason) == ("False", "Unreachable") and "within 2 s" in c.message, c


def test_public_repo_does_not_test_the_credential(git_http_server):
    s = git_http_server
    url = s.create_repo("public-checked", {"a.txt": "a"})
    s.public.add("public-checked")
    c = verify("username_password", {"username": s.username, "password": "anything-at-all",
                                     "target": url})
    assert (c.status, c.reason) == ("Unknown", "NotTestable"), c


def test_ssh_rsa_pem_key(sshd_server):
    s = sshd_server
    c = verify("ssh_private_key", {"username": s.username, "private_key": s.rsa_private_key_pem,
                                   "target": f"ssh://{s.host}:{s.port}"})
    assert (c.status, c.reason) == ("True", "Authenticated") and "rsa" in c.message, c
    wrong_user = verify("ssh_private_key", {"username": "nobody",
                                            "private_key": s.rsa_private_key_pem,
                                            "target": s.target})
    assert wrong_user.reason == "AuthenticationFailed"


def test_kubeconfig_tls_server_name(kube_api):
    import yaml
    doc = yaml.safe_load(kube_api.kubeconfig("token"))
    doc["clusters"][0]["cluster"]["tls-server-name"] = "localhost"
    assert verify("kubeconfig", {"kubeconfig": yaml.safe_dump(doc)}).reason == "Authenticated"
    doc["clusters"][0]["cluster"]["tls-server-name"] = "elsewhere.example"
    c = verify("kubeconfig", {"kubeconfig": yaml.safe_dump(doc)})
    assert (c.status, c.reason) == ("False", "Unreachable") and "not trusted" in c.message, c


def test_kubeconfig_client_key_files_are_gone_after_the_check(kube_api, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for auth in ("cert", "bad-cert"):
        verify("kubeconfig", {"kubeconfig": kube_api.kubeconfig(auth)})
    assert list(tmp_path.iterdir()) == []


def test_kubeconfig_with_local_file_paths_is_valid_but_not_tested(kube_api, tmp_path):
    import yaml
    doc = yaml.safe_load(kube_api.kubeconfig("none"))
    doc["users"][0]["user"] = {"client-certificate": str(tmp_path / "c.crt"),
                               "client-key": str(tmp_path / "c.key")}
    text = yaml.safe_dump(doc)
    v = validate("kubeconfig", {"kubeconfig": text})[0]
    assert (v.status, v.reason) == ("True", "LocalFilePath")
    c = verify("kubeconfig", {"kubeconfig": text})
    assert (c.status, c.reason) == ("Unknown", "NotTestable")


def test_https_target_with_untrusted_certificate(kube_api):
    for target in (f"{kube_api.server}/repo.git", f"{kube_api.server}/version"):
        c = verify("secret_text", {"secret": kube_api.token, "target": target})
        assert (c.status, c.reason) == ("False", "Unreachable"), (target, c)
        assert "not trusted" in c.message


def test_kubeconfig_with_version_locked_down(kube_api):
    kube_api.forbidden.add("/version")
    try:
        c = verify("kubeconfig", {"kubeconfig": kube_api.kubeconfig("token")})
        bad = verify("kubeconfig", {"kubeconfig": kube_api.kubeconfig("bad-token")})
    finally:
        kube_api.forbidden.discard("/version")
    assert (c.status, c.reason) == ("True", "Authenticated"), c
    assert (bad.status, bad.reason) == ("False", "AuthenticationFailed"), bad


def test_git_over_ssh_with_a_password(sshd_server):
    # the peer allows keys only, so a password is refused by the real sshd
    s = sshd_server
    c = verify("username_password", {"username": s.username, "password": "pw-over-ssh",
                                     "target": f"ssh://{s.host}:{s.port}/srv/repo.git"})
    assert (c.status, c.reason) == ("False", "AuthenticationFailed"), c
    down = verify("username_password", {"username": "git", "password": "pw-over-ssh",
                                        "target": f"ssh://127.0.0.1:{free_port()}/repo.git"})
    assert (down.status, down.reason) == ("False", "Unreachable"), down
