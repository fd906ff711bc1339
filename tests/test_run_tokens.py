"""Least privilege from the pipeline itself: runs opened on the server, run tokens, and the
release rules, through the API with real tokens (every refusal is a 401/403 and an audit row)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.fixtures.pipeline_repo import add_source, sync
from tests.fixtures.pipelines import canary
from workbench import credentials, policy
from workbench.audit import SYSTEM
from workbench.db import utcnow
from workbench.models import AuditEvent
from workbench.serverruns import ServerRun

SHIP = """\
name: ship
steps:
  - name: build
    run: make
    timeout: 10m
    credentials: [build-key]
  - name: deploy
    run: ./deploy
    timeout: 20m
    credentials:
      - deploy-key@1
      - prod-secret
  - name: check
    run: ./check
    timeout: 5m
    credentials: [pr-secret]
  - name: notes
    run: echo done
    timeout: 1m
"""
OTHER = "name: other\nsteps:\n  - name: x\n    run: 'true'\n    credentials: [other-key]\n"
IDS = ("build-key", "deploy-key", "prod-secret", "pr-secret", "other-key")


@pytest.fixture
def world(vault, local_repo, api_as):
    """Five credentials (deploy-key has a version 2), two indexed pipelines of source "r",
    main and release/* protected, prod-secret protected, pr-secret not for fork PRs."""
    values = {}
    with vault.factory.begin() as s:
        for cid in IDS:
            values[cid] = canary(cid)
            credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                          cred_id=cid, type="secret_text",
                                          values={"secret": values[cid]})
        credentials.update_credential(s, vault.barrier, SYSTEM, workspace="default",
                                      cred_id="deploy-key",
                                      changes={"values": {"secret": canary("deploy-v2")}})
    local_repo.commit({"pipelines/ship.yaml": SHIP, "pipelines/other.yaml": OTHER})
    sid = add_source(vault, url=local_repo.url, name="r")
    commit = sync(vault, sid)["commit"]
    admin = api_as("admin")
    assert admin.put(f"/pipeline-sources/{sid}/protected-refs",
                     {"patterns": ["main", "release/*"]}).status_code == 200
    assert admin.put("/credentials/prod-secret/policy", {"protected": True}).status_code == 200
    r = admin.put("/credentials/pr-secret/policy", {"exclude_events": ["pull_request:fork"]})
    assert r.get_json()["exclude_events"] == ["pull_request:fork"]
    return {"values": values, "commit": commit, "runner": api_as("runner", allow=None),
            "admin": admin, "sid": sid}


def _open(world, **body):
    body = {"source": "r", "pipeline": "ship", "ref": "main", "event": "push", **body}
    r = world["runner"].post("/runs", body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def _resolve(client, token, body, workspace="default"):
    r = client.post(f"/api/v1/resolve?workspace={workspace}", json=body,
                    headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.get_json()


def _refusals(vault, **where):
    with vault.factory() as s:
        q = select(AuditEvent).where(AuditEvent.outcome == "denied").order_by(AuditEvent.id)
        for k, v in where.items():
            q = q.where(getattr(AuditEvent, k) == v)
        return [(e.action, e.target, e.details) for e in s.scalars(q)]


def test_a_step_gets_its_own_credentials_and_nothing_else(world, client, vault):
    run = _open(world)
    assert run["token"].startswith("wbrun_") and run["commit"] == world["commit"]
    assert run["grants"]["deploy"] == [
        {"credential_id": "deploy-key", "version": 1, "rule": None},
        {"credential_id": "prod-secret", "version": None, "rule": None}]
    token, v = run["token"], world["values"]
    status, body = _resolve(client, token, {"step": "build"})
    assert status == 200 and [(c["id"], c["values"]["secret"]) for c in body["credentials"]] \
        == [("build-key", v["build-key"])]
    status, body = _resolve(client, token, {"step": "deploy", "refs": ["deploy-key@1"]})
    assert status == 200 and body["credentials"][0]["values"]["secret"] == v["deploy-key"]
    # another step's credential, another pipeline's, an unknown step, an unpinned version
    for step, ref in (("check", "build-key"), ("build", "other-key"), ("ghost", "build-key"),
                      ("deploy", "deploy-key")):
        status, body = _resolve(client, token, {"step": step, "refs": [ref], "attempt": 2})
        assert status == 403, (step, ref)
        assert "values" not in str(body) and v.get(ref, "-") not in str(body)
    denied = _refusals(vault, action="credential.resolve")
    assert [(t, d["run"], d["step"], d["rule"]) for _, t, d in denied] == [
        ("build-key", run["id"], "check", "not-bound"),
        ("other-key", run["id"], "build", "not-bound"),
        ("", run["id"], "ghost", "no-such-step"),
        ("deploy-key", run["id"], "deploy", "not-bound")]
    # once per step attempt: the same attempt again is refused; a retry is a new attempt
    status, body = _resolve(client, token, {"step": "build"})
    assert status == 403 and "already received" in body["error"]["message"]
    assert _refusals(vault)[-1][2]["rule"] == "once-per-attempt"
    assert _resolve(client, token, {"step": "build", "attempt": 2})[0] == 200
    assert _resolve(client, token, {"step": "build", "attempt": 4})[0] == 422
    # the released rows name run, step and attempt; the run lists what each step received
    with vault.factory() as s:
        ok = [(e.target, e.details["step"], e.details["attempt"]) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action == "credential.resolve",
                                     AuditEvent.outcome == "ok").order_by(AuditEvent.id))]
    assert ok == [("build-key", "build", 1), ("deploy-key", "deploy", 1),
                  ("build-key", "build", 2)]
    got = world["admin"].get(f"/runs/{run['id']}/grants").get_json()
    assert [(r["step"], r["attempt"], r["credentials"]) for r in got["releases"]] == [
        ("build", 1, ["build-key@1"]), ("deploy", 1, ["deploy-key@1"]),
        ("build", 2, ["build-key@1"])]


def test_the_run_token_is_short_lived_bound_and_dies_with_the_run(world, client, vault):
    run = _open(world)
    opened = utcnow()
    with vault.factory() as s:
        row = s.get(ServerRun, run["id"])
        # every step has a timeout: the run cannot outlast their sum (36 min < 1 h)
        ttl = row.expires_at.replace(tzinfo=None) - row.opened_at.replace(tzinfo=None)
        assert ttl == timedelta(minutes=36)
        assert run["token"] not in str(row.token_hash) and len(row.token_hash) == 64
    assert _resolve(client, run["token"], {"step": "build"}, workspace="other")[0] == 403
    # a run token is no runner token: it cannot open runs or read anything
    r = client.get("/api/v1/runs", headers={"Authorization": f"Bearer {run['token']}"})
    assert r.status_code == 401
    # recording the finished run closes it: its token stops resolving (401, audited)
    r = world["runner"].post("/runs", {"id": run["id"], "pipeline": "ship", "status": "success",
                                      "steps": []})
    assert r.status_code == 201
    status, body = _resolve(client, run["token"], {"step": "deploy"})
    assert status == 401 and "closed" in body["error"]["message"]
    assert _refusals(vault)[-1][2]["rule"] == "run-closed"
    # an expired token: 401 as well
    run = _open(world)
    with vault.factory.begin() as s:
        s.execute(update(ServerRun).where(ServerRun.id == run["id"])
                  .values(expires_at=opened - timedelta(seconds=1)))
    status, body = _resolve(client, run["token"], {"step": "build"})
    assert status == 401 and "expired" in body["error"]["message"]
    assert _refusals(vault)[-1][2] == {"run": run["id"], "pipeline": "ship", "step": "build",
                                       "rule": "run-expired"}
    assert _resolve(client, "wbrun_forged", {"step": "build"})[0] == 401


def test_unindexed_pipelines_and_other_pipelines(world, vault, api_as):
    r = world["runner"].post("/runs", {"pipeline": "ghost", "ref": "main"})
    assert r.status_code == 404 and r.get_json()["error"]["details"] == {"indexed": False}
    assert _refusals(vault, action="run.open")[-1][1:] == ("ghost", {"rule": "not-indexed"})
    r = world["runner"].post("/runs", {"source": "r", "pipeline": "ship", "commit": "f" * 40})
    assert r.status_code == 409 and "indexed at commit" in r.get_json()["error"]["message"]
    # people's tokens cannot open runs, nor can a runner token of another workspace
    assert world["admin"].post("/runs", {"pipeline": "ship"}).status_code == 403
    assert api_as("runner", workspace="team", allow=None).post(
        "/runs", {"pipeline": "ship"}).status_code == 403


def test_protected_credentials_need_a_protected_ref(world, client, vault):
    for ref in ("feature/x", "refs/heads/mainline", ""):
        run = _open(world, ref=ref)
        status, body = _resolve(client, run["token"], {"step": "deploy"})
        assert status == 403 and "protected" in body["error"]["message"]
        assert _refusals(vault)[-1][1:] == ("prod-secret", {
            "run": run["id"], "pipeline": "ship", "step": "deploy", "rule": "protected"})
    for ref in ("main", "refs/heads/release/2.1"):
        run = _open(world, ref=ref)
        status, body = _resolve(client, run["token"], {"step": "deploy"})
        assert status == 200 and [c["id"] for c in body["credentials"]] == \
            ["deploy-key", "prod-secret"]


def test_pull_requests_from_forks_do_not_get_excluded_credentials(world, client, vault):
    run = _open(world, event="pull_request", fork=True, ref="refs/pull/7/head")
    status, body = _resolve(client, run["token"], {"step": "check"})
    assert status == 403
    assert "never released to pull_request events from forks" in body["error"]["message"]
    assert _refusals(vault)[-1][2]["rule"] == "exclude_events pull_request:fork"
    assert _resolve(client, run["token"], {"step": "build"})[0] == 200  # build has no rule
    run = _open(world, event="pull_request", fork=False)
    assert _resolve(client, run["token"], {"step": "check"})[0] == 200


def test_ad_hoc_resolves_need_an_allow_list(world, client, vault, api_as):
    v = world["values"]
    status, body = _resolve(client, world["runner"].token, {"refs": ["build-key"]})
    assert status == 403 and "ad hoc" in body["error"]["message"]
    assert _refusals(vault)[-1][1:] == ("build-key", {"rule": "allow-list"})
    allowed = api_as("runner", allow=["build-key", "prod-secret"])
    status, body = _resolve(client, allowed.token, {"refs": ["build-key"]})
    assert status == 200 and body["credentials"][0]["values"]["secret"] == v["build-key"]
    assert _resolve(client, allowed.token, {"refs": ["build-key", "deploy-key"]})[0] == 403
    # protected credentials are never released ad hoc, even when allow-listed
    status, body = _resolve(client, allowed.token, {"refs": ["prod-secret"]})
    assert status == 403 and "protected" in body["error"]["message"]
    assert _refusals(vault)[-1][2]["rule"] == "protected"
    tokens = {t["name"]: t["allow"] for t in world["admin"].get("/tokens").get_json()["items"]
              if t["kind"] == "runner"}
    assert sorted(tokens.values()) == [[], ["build-key", "prod-secret"]]
    who = world["admin"].get("/credentials/build-key/policy").get_json()
    assert [(s["pipeline"], s["step"]) for s in who["steps"]] == [("ship", "build")]
    assert who["runner_tokens"] == [n for n, a in tokens.items() if a == ["build-key",
                                                                          "prod-secret"]]


def test_explain_names_the_deciding_rule(world, app):
    viewer_q = "/policy/explain?pipeline=ship&step={}&credential={}&ref={}&event={}"
    admin = world["admin"]
    cases = [(("deploy", "prod-secret", "main", "push"), "allow", "bound"),
             (("deploy", "prod-secret", "feature/x", "push"), "deny", "protected"),
             (("build", "prod-secret", "main", "push"), "deny", "not-bound"),
             (("check", "pr-secret", "main", "pull_request&fork=true"), "deny",
              "exclude_events pull_request:fork"),
             (("nope", "pr-secret", "main", "push"), "deny", "no-such-step")]
    for args, decision, rule in cases:
        got = admin.get(viewer_q.format(*args)).get_json()
        assert (got["decision"], got["rule"]) == (decision, rule), args
    got = admin.get("/policy/explain?pipeline=ghost&step=a&credential=build-key").get_json()
    assert got["rule"] == "not-indexed"
    runner = app.test_cli_runner()
    from workbench.cli.policy import policy as group
    res = runner.invoke(group, ["explain", "ship", "deploy", "prod-secret", "--ref", "dev"])
    assert res.exit_code == 1 and res.output.startswith("deny (protected)")
    res = runner.invoke(group, ["explain", "ship", "deploy", "prod-secret", "--ref", "main"])
    assert res.exit_code == 0 and res.output.startswith("allow (bound)")


def test_rules_are_admin_only_and_audited(world, api_as, vault):
    editor = api_as("editor")
    assert editor.put("/credentials/build-key/policy", {"protected": True}).status_code == 403
    assert world["admin"].put("/credentials/build-key/policy",
                              {"exclude_events": ["Pull Request"]}).status_code == 422
    assert world["admin"].put(f"/pipeline-sources/{world['sid']}/protected-refs",
                              {"patterns": ["../x y"]}).status_code == 422
    with vault.factory() as s:
        assert policy.get_policy(s, "default", "build-key")["protected"] is False
        assert policy.protected_refs(s, world["sid"]) == ["main", "release/*"]
    assert _refusals(vault, action="credential.policy")[-1][1] == "build-key"


E2E = """\
name: e2e
steps:
  - name: build
    run: 'test -n "$BUILD" && test -z "$DEPLOY" && echo "build got $BUILD"'
    credentials:
      - {id: build-key, env: BUILD}
  - name: deploy
    run: 'test -n "$DEPLOY" && test -z "$BUILD" && echo deployed'
    credentials:
      - {id: deploy-key, env: DEPLOY}
"""


@pytest.fixture
def served(vault):
    """The app served over real HTTP on an ephemeral port."""
    import threading

    from werkzeug.serving import make_server

    from workbench import create_app
    server = make_server("127.0.0.1", 0, create_app(vault.settings, vault=vault), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _wb(cwd, *args, token):
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {"PATH": os.environ["PATH"], "WORKBENCH_RUNNER_TOKEN": token,
           "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_workbench_run_and_exec_with_a_server(world, vault, local_repo, served, api_as):
    from workbench.pipeline import records
    local_repo.commit({"pipelines/e2e.yaml": E2E})
    sync(vault, world["sid"])
    v, token = world["values"], world["runner"].token
    res = _wb(local_repo.path, "run", "--server", served, "--source", "r", "--ref", "main",
              "pipelines/e2e.yaml", token=token)
    assert res.returncode == 0, res.stderr
    assert "build got ****" in res.stdout and "deployed" in res.stdout
    assert v["build-key"] not in res.stdout + res.stderr
    run_id = res.stderr.split("run ", 1)[1].split(" ", 1)[0]
    with vault.factory() as s:
        run = s.get(ServerRun, run_id)
        assert run.closed_at is not None and run.pipeline == "e2e"
        got = records.run_to_dict(records.get_run(s, run_id, "default"))
    assert [(u["step"], u["credential_id"]) for u in got["uses"]] == \
        [("build", "build-key"), ("deploy", "deploy-key")]
    # a local copy that asks for more than its indexed definition binds: that step is refused
    greedy = E2E.replace("- {id: build-key, env: BUILD}",
                         "- {id: build-key, env: BUILD}\n      - {id: other-key, env: OTHER}")
    (local_repo.path / "pipelines/e2e.yaml").write_text(greedy)
    res = _wb(local_repo.path, "run", "--server", served, "--source", "r",
              "pipelines/e2e.yaml", token=token)
    assert res.returncode == 1 and "does not bind 'other-key'" in res.stderr
    assert v["other-key"] not in res.stdout + res.stderr
    # exec is ad hoc: refused with the default runner token, allowed with an allow-list
    cmd = ("exec", "--server", served, "--cred", "build-key:env=K", "--", "sh", "-c",
           'test -n "$K" && echo ok')
    res = _wb(local_repo.path, *cmd, token=token)
    assert res.returncode == 2 and "may not resolve 'build-key' ad hoc" in res.stderr
    res = _wb(local_repo.path, *cmd, token=api_as("runner", allow=["build-key"]).token)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_flask_route_answers_run_tokens_as_the_hot_path_does(world, app):
    from werkzeug.test import Client
    token = _open(world)["token"]
    hot, flask = Client(app), Client(app.wsgi_app.app)  # the whole app; Flask alone

    def call(client, body):
        r = client.post("/api/v1/resolve", json=body,
                        headers={"Authorization": f"Bearer {token}"})
        return r.status_code, r.get_json()
    for body in ({"step": "build"}, {"step": "build", "refs": ["other-key"]}, {"step": ""},
                 {"step": "deploy", "refs": "x"}, {"step": "notes"}):
        got = [call(c, dict(body, attempt=n)) for n, c in ((1, hot), (2, flask))]
        if got[0][0] == 200:
            assert got[1][1].pop("attempt") == 2 and got[0][1].pop("attempt") == 1
        assert got[0] == got[1], body


def test_pages_show_who_may_receive_and_what_each_step_received(world, app, users, client,
                                                                api_as):
    from tests.test_web import login, post
    run = _open(world, ref="feature/x")
    assert _resolve(client, run["token"], {"step": "build"})[0] == 200
    assert _resolve(client, run["token"], {"step": "deploy"})[0] == 403
    world["runner"].post("/runs", {"id": run["id"], "pipeline": "ship", "status": "failed",
                                   "steps": [{"name": "build", "status": "success"},
                                             {"name": "deploy", "status": "error"}]})
    api_as("runner", allow=["prod-secret"])
    web = app.test_client()
    assert login(web, *users["admin"]).status_code == 302
    page = web.get("/credentials/default/prod-secret").get_data(as_text=True)
    who = page.split('id="receivers"', 1)[1].split("</section>", 1)[0]
    assert "released only to runs on protected refs" in who
    assert "<td>ship</td><td>deploy</td>" in who and "main, release/*" in who
    assert "runner token <span class=\"mono\">runner-" in who and "never while it is protected" in who
    page = web.get(f"/runs/{run['id']}").get_data(as_text=True)
    build, deploy = page.split('<section class="card step">')[1:3]
    assert "Released by the server: <span class=\"mono\">build-key@1</span> (attempt 1)" in build
    assert "nothing" in deploy and "prod-secret</span>: protected" in deploy
    # the token list shows each runner token's allow-list; the form takes one
    r = post(web, "/admin/tokens", {"name": "ci-x", "kind": "runner", "workspace": "default",
                                    "allow": "build-key, deploy-key"}, page="/admin/tokens")
    assert r.status_code == 200 and "build-key, deploy-key" in r.get_data(as_text=True)
    r = post(web, "/admin/tokens", {"name": "ci-y", "kind": "runner", "allow": "Not An ID"},
             page="/admin/tokens")
    assert r.status_code == 422 and "credential IDs" in r.get_data(as_text=True)


def test_a_refusal_by_a_release_rule_is_announced_to_webhooks(world, client, vault):
    from workbench import webhooks
    with vault.factory.begin() as s:
        webhooks.add_webhook(s, vault.barrier, SYSTEM, "http://127.0.0.1:9/hook",
                             ["run.refused"])
    run = _open(world, ref="feature/x")
    assert _resolve(client, run["token"], {"step": "deploy"})[0] == 403
    _resolve(client, "wbrun_not-a-token", {"step": "deploy"})  # no run: nothing to announce
    with vault.factory() as s:
        sent = [d.payload for d in s.scalars(select(webhooks.WebhookDelivery))]
    assert [(p["event"], p["target"], p["details"]) for p in sent] == [
        ("run.refused", "ship", {"step": "deploy", "reason": "protected: prod-secret"})]
