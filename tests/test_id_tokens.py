"""Per-step OIDC identity tokens, verified as a cloud would: PyJWT (an independent library)
fetches the JWKS over HTTP from the served app and checks signature, issuer, audience, expiry."""
from __future__ import annotations

import json
import time

import jwt
import pytest
import requests

from tests.fixtures.pipeline_repo import add_source, sync
from tests.test_run_tokens import _wb, served  # noqa: F401 - the served-app fixture
from workbench import credentials
from workbench.audit import SYSTEM

PIPE = """\
name: cloud
steps:
  - name: plan
    run: 'echo "token: $WORKBENCH_ID_TOKEN"; test -n "$KEY"'
    id_token: {aud: sts.example.com}
    credentials:
      - {id: key, env: KEY}
  - name: apply
    run: 'test -n "$CLOUD_JWT" && test -z "$KEY" && test -z "$WORKBENCH_ID_TOKEN"'
    timeout: 2s
    id_token: {aud: other-cloud, env: CLOUD_JWT}
"""


@pytest.fixture
def cloud(vault, local_repo, api_as, served):  # noqa: F811 - pytest fixture
    with vault.factory.begin() as s:
        credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                      cred_id="key", type="secret_text",
                                      values={"secret": "k-value-123456"})
    commit = local_repo.commit({"pipelines/cloud.yaml": PIPE})
    sync(vault, add_source(vault, url=local_repo.url, name="infra"))
    runner = api_as("runner", allow=None).token
    return {"url": served, "runner": runner, "commit": commit, "repo": local_repo}


def _post(url, path, token, body):
    r = requests.post(f"{url}{path}", params={"workspace": "default"}, json=body,
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return r.status_code, r.json()


def _step_token(cloud, step, **opening):
    status, run = _post(cloud["url"], "/api/v1/runs", cloud["runner"],
                        {"source": "infra", "pipeline": "cloud", "ref": "refs/heads/main",
                         "event": "push", **opening})
    assert status == 201, run
    status, got = _post(cloud["url"], "/api/v1/resolve", run["token"], {"step": step})
    assert status == 200, got
    return run, got["id_token"]


def _verify(url, token, audience, **kw):
    """What a cloud does: discover the JWKS, pick the key by kid, check the claims."""
    config = requests.get(f"{url}/.well-known/openid-configuration", timeout=30).json()
    key = jwt.PyJWKClient(config["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience=audience,
                      issuer=config["issuer"], options={"require": ["exp", "iat", "sub"]}, **kw)


def test_a_step_token_validates_with_the_claims_a_cloud_checks(cloud):
    run, token = _step_token(cloud, "plan")
    claims = _verify(cloud["url"], token, "sts.example.com")
    assert claims["iss"] == cloud["url"]
    assert claims["sub"] == ("workspace:default:source:infra:pipeline:cloud:"
                             "ref:refs/heads/main:step:plan")
    assert (claims["run_id"], claims["sha"], claims["ref"], claims["event"]) == \
        (run["id"], cloud["commit"], "refs/heads/main", "push")
    assert 0 < claims["exp"] - claims["iat"] <= 600  # no timeout: the 10-minute default
    with pytest.raises(jwt.InvalidAudienceError):
        _verify(cloud["url"], token, "sts.amazonaws.com")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(cloud["url"], tampered, "sts.example.com")


def test_a_step_token_expires_with_its_step_timeout(cloud):
    _run, token = _step_token(cloud, "apply")
    claims = _verify(cloud["url"], token, "other-cloud")
    assert claims["exp"] - claims["iat"] == 2 and claims["sub"].endswith(":step:apply")
    time.sleep(claims["exp"] - time.time() + 1.1)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(cloud["url"], token, "other-cloud")


def test_rotation_keeps_then_removes_the_old_key(cloud, app):
    from workbench.cli.admin import keys
    from workbench.cli import policy  # noqa: F401 - adds keys rotate-signing

    _run, old = _step_token(cloud, "plan")
    res = app.test_cli_runner().invoke(keys, ["rotate-signing", "--json"])
    assert res.exit_code == 0, res.output
    first = json.loads(res.output)
    assert first["retired"] == [jwt.get_unverified_header(old)["kid"]] and first["removed"] == []
    _verify(cloud["url"], old, "sts.example.com")  # retired, still published: still valid
    _run, new = _step_token(cloud, "plan")
    assert jwt.get_unverified_header(new)["kid"] == first["kid"]
    res = app.test_cli_runner().invoke(keys, ["rotate-signing", "--remove-retired", "--json"])
    assert res.exit_code == 0 and set(json.loads(res.output)["removed"]) == \
        {jwt.get_unverified_header(t)["kid"] for t in (old, new)}
    for token in (old, new):
        with pytest.raises(jwt.PyJWKClientError):
            _verify(cloud["url"], token, "sts.example.com")
    keys_now = requests.get(f"{cloud['url']}/.well-known/jwks.json", timeout=30).json()["keys"]
    assert [k["kid"] for k in keys_now] == [json.loads(res.output)["kid"]]
    assert all("d" not in k for k in keys_now)  # public halves only


def test_workbench_run_hands_each_step_its_own_token_masked(cloud, vault):
    res = _wb(cloud["repo"].path, "run", "--server", cloud["url"], "--source", "infra",
              "--ref", "refs/heads/main", "pipelines/cloud.yaml", token=cloud["runner"])
    assert res.returncode == 0, res.stderr
    assert "token: ****" in res.stdout and "eyJ" not in res.stdout + res.stderr
    from sqlalchemy import select

    from workbench.models import AuditEvent
    with vault.factory() as s:
        issued = [(e.target, e.details["aud"]) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action == "id_token.issue")
            .order_by(AuditEvent.id))]
        assert issued == [("plan", "sts.example.com"), ("apply", "other-cloud")]
        assert "eyJ" not in json.dumps([e.details for e in s.scalars(select(AuditEvent))])


def test_embedded_runs_refuse_identity_tokens(tmp_path):
    from workbench.errors import PipelineError
    from workbench.pipeline.parse import parse_pipeline
    from workbench.pipeline.plan import plan
    p = parse_pipeline(PIPE, filename="cloud.yaml")
    assert p.steps[1].id_token == ("other-cloud", "CLOUD_JWT")
    with pytest.raises(PipelineError, match="only in runs opened on a server"):
        plan(p, resolver=None)
    with pytest.raises(PipelineError, match="may not be set"):
        parse_pipeline(PIPE.replace("env: CLOUD_JWT", "env: PATH"), filename="c.yaml")
