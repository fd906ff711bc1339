"""A git push starts a sync: GitHub, GitLab and Gitea webhook signatures, per-source secret."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from tests.fixtures.pipeline_repo import add_source, pipeline_yaml
from workbench import audit
from workbench.references import PipelineSource


def signed(forge: str, secret: str, body: bytes) -> dict:
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"github": {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Event": "push"},
            "gitea": {"X-Gitea-Signature": mac, "X-Gitea-Event": "push"},
            "gitlab": {"X-Gitlab-Token": secret, "X-Gitlab-Event": "Push Hook"}}[forge]


@pytest.fixture
def hooked(vault, api_as, local_repo):
    """A git source with a first pipeline, and its hook secret from the API."""
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": []})})
    sid = add_source(vault, url=local_repo.url)
    resp = api_as("editor").post(f"/pipeline-sources/{sid}/hook-secret")
    assert resp.status_code == 200 and resp.get_json()["url"].endswith(f"/{sid}/hook")
    return sid, resp.get_json()["secret"]


def commit_of(vault, sid):
    with vault.factory() as s:
        return s.get(PipelineSource, sid).commit


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea"])
def test_a_signed_push_syncs_the_source(forge, vault, client, hooked, job_worker, local_repo):
    sid, secret = hooked
    body = json.dumps({"ref": "refs/heads/main", "after": local_repo.git("rev-parse", "HEAD")
                       }).encode()
    resp = client.post(f"/api/v1/pipeline-sources/{sid}/hook", data=body,
                       headers={"Content-Type": "application/json", **signed(forge, secret, body)})
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"source": sid, "forge": forge, "queued": True}
    deadline = time.monotonic() + 30
    while commit_of(vault, sid) is None:  # the job engine runs the sync
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert commit_of(vault, sid) == local_repo.git("rev-parse", "HEAD")


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea"])
def test_a_wrong_signature_is_refused_and_audited(forge, vault, client, hooked):
    sid, secret = hooked
    body = b'{"ref": "refs/heads/main"}'
    tries = [signed(forge, "not-the-secret", body), {}]  # another secret, none at all
    if forge != "gitlab":  # (GitLab's token does not sign the body)
        tries.append(signed(forge, secret, b'{"ref": "refs/heads/other"}'))
    for headers in tries:
        resp = client.post(f"/api/v1/pipeline-sources/{sid}/hook", data=body, headers=headers)
        assert resp.status_code == 401
        assert resp.get_json()["error"]["message"] == \
            "the hook signature does not match this source's secret"
        assert secret not in resp.get_data(as_text=True)
    with vault.factory() as s:
        events = audit.query(s, action="source.hook")
    assert [e.outcome for e in events] == ["denied"] * len(tries)
    assert commit_of(vault, sid) is None


def test_a_push_to_another_branch_or_a_source_without_secret_starts_nothing(
        vault, client, hooked, api_as, local_repo):
    sid, secret = hooked
    body = b'{"ref": "refs/heads/feature"}'
    resp = client.post(f"/api/v1/pipeline-sources/{sid}/hook", data=body,
                       headers=signed("github", secret, body))
    assert resp.status_code == 202 and resp.get_json()["queued"] is False
    other = add_source(vault, url=local_repo.url, name="no-secret")
    resp = client.post(f"/api/v1/pipeline-sources/{other}/hook", data=body,
                       headers=signed("github", secret, body))
    assert resp.status_code == 404
    # a new secret replaces the old one; viewers may not make one
    assert api_as("viewer").post(f"/pipeline-sources/{sid}/hook-secret").status_code == 403
    api_as("editor").post(f"/pipeline-sources/{sid}/hook-secret")
    resp = client.post(f"/api/v1/pipeline-sources/{sid}/hook", data=body,
                       headers=signed("github", secret, body))
    assert resp.status_code == 401


def test_the_re_sync_interval_is_set_over_the_api(vault, api_as, hooked):
    sid, _ = hooked
    editor = api_as("editor")
    assert editor.patch(f"/pipeline-sources/{sid}", {"sync_interval": 5}).status_code == 422
    resp = editor.patch(f"/pipeline-sources/{sid}", {"sync_interval": 600})
    assert resp.status_code == 200
    assert editor.get("/pipeline-sources").get_json()["items"][0]["sync_interval"] == 600
