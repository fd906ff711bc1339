"""Background jobs: queued syncs, the periodic tick, scheduled checks and signed webhooks."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update

from tests.fixtures.pipeline_repo import add_source, make_credential, pipeline_yaml
from workbench import jobs, webhooks
from workbench.audit import SYSTEM
from workbench.references import PipelineSource


class Receiver:
    """A real HTTP endpoint that records what it is sent; answers ``codes`` in turn, then 200."""

    def __init__(self, codes=()):
        self.codes, self.got = list(codes), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body))
                self.send_response(outer.codes.pop(0) if outer.codes else 200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def add_hook(vault, url, events=None) -> tuple[int, str]:
    with vault.factory.begin() as s:
        hook, secret = webhooks.add_webhook(s, vault.barrier, SYSTEM, url, events)
        return hook.id, secret


def wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def deliveries(vault) -> list[webhooks.WebhookDelivery]:
    with vault.factory() as s:
        return list(s.scalars(select(webhooks.WebhookDelivery)
                              .order_by(webhooks.WebhookDelivery.id)))


def jwt(expires: datetime) -> str:
    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part({'exp': int(expires.timestamp())})}.c2ln"


def test_a_webhook_gets_a_signed_body_and_is_retried_with_back_off(vault, receiver):
    receiver.codes = [500, 503]
    hook_id, secret = add_hook(vault, receiver.url, ["run.refused"])
    with vault.factory.begin() as s:
        webhooks.run_refused(s, workspace="default", pipeline="deploy", step="push",
                             reason="step not allowed")
        webhooks.emit(s, "check.failed", workspace="default", target="x")  # not subscribed
    [d] = deliveries(vault)
    assert webhooks.deliver(vault, d.id) == webhooks.BACKOFF  # 500: again in 2 s
    assert webhooks.deliver(vault, d.id) is None  # not due yet: nobody sends it twice
    for wait in (webhooks.BACKOFF * 2, None):  # 503, then 200
        with vault.factory.begin() as s:  # as if the back-off had passed
            s.execute(update(webhooks.WebhookDelivery).values(
                next_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        assert webhooks.deliver(vault, d.id) == wait
    [d] = deliveries(vault)
    assert (d.status, d.attempts, d.last_code) == ("delivered", 3, 200)
    assert len(receiver.got) == 3
    headers, body = receiver.got[-1]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Workbench-Signature-256"] == f"sha256={expected}"
    assert headers["X-Workbench-Event"] == "run.refused"
    sent = json.loads(body)
    assert (sent["id"], sent["event"], sent["target"]) == (d.id, "run.refused", "deploy")
    assert sent["details"] == {"step": "push", "reason": "step not allowed"}


def test_a_delivery_that_never_succeeds_is_given_up_and_logged(vault):
    add_hook(vault, "http://127.0.0.1:9/closed", ["run.refused"])
    with vault.factory.begin() as s:
        webhooks.run_refused(s, workspace="default", pipeline="p", step="s", reason="r")
    [d] = deliveries(vault)
    for _ in range(webhooks.ATTEMPTS):
        with vault.factory.begin() as s:
            s.execute(update(webhooks.WebhookDelivery).values(
                next_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        webhooks.deliver(vault, d.id)
    [d] = deliveries(vault)
    assert (d.status, d.attempts, d.last_error) == ("failed", webhooks.ATTEMPTS,
                                                    "ConnectionError")


def test_a_forced_delete_is_announced_by_the_job_engine(vault, receiver, job_worker,
                                                         local_repo):
    add_hook(vault, receiver.url)
    make_credential(vault, "used", username="u", password="p4ssw0rd-long-enough")
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": ["used"]})})
    sid = add_source(vault, url=local_repo.url)
    jobs.sync_source(vault, sid)  # indexes the reference
    from workbench import credentials
    with vault.factory.begin() as s:
        credentials.delete_credential(s, SYSTEM, workspace="default", cred_id="used",
                                      force=True)
    wait_for(lambda: receiver.got)  # sent by the engine after the commit, no tick needed
    sent = json.loads(receiver.got[0][1])
    assert (sent["event"], sent["target"]) == ("credential.delete_forced", "used")
    assert "p4ssw0rd" not in receiver.got[0][1].decode()
    wait_for(lambda: deliveries(vault)[0].status == "delivered")


def test_the_tick_queues_due_re_syncs_and_checks(vault, job_worker, local_repo):
    local_repo.commit({"pipelines/a.yaml": pipeline_yaml("a", {"s": []})})
    due = add_source(vault, url=local_repo.url, name="due")
    on_demand = add_source(vault, url=local_repo.url, name="manual")
    with vault.factory.begin() as s:
        s.get(PipelineSource, due).sync_interval = 300
    make_credential(vault, "tok", "secret_text", secret="a-long-enough-token-value")
    counts = jobs.tick(vault)
    assert (counts["syncs"], counts["checks"]) == (1, 1)

    def synced(sid):
        with vault.factory() as s:
            return s.get(PipelineSource, sid).synced_at is not None
    wait_for(lambda: synced(due))
    with vault.factory() as s:
        wait_for(lambda: s.scalar(select(jobs.CheckSchedule.checked_at)) is not None)
    assert not synced(on_demand)
    # just synced and checked: nothing is due until the intervals pass
    assert jobs.tick(vault) == {"syncs": 0, "checks": 0, "deliveries": 0, "pruned_runs": 0}


def test_an_expiring_token_is_announced_once_then_again_when_expired(vault):
    add_hook(vault, "http://127.0.0.1:9/x", ["credential.expiring", "credential.expired"])
    make_credential(vault, "tok", "secret_text",
                    secret=jwt(datetime.now(timezone.utc) + timedelta(days=3)))
    with vault.factory() as s:
        pk = s.scalar(select(jobs.Credential.pk))
    assert jobs.check_credential(vault, pk) == ["credential.expiring"]
    assert jobs.check_credential(vault, pk) == []  # once, not at every check
    from workbench import credentials
    with vault.factory.begin() as s:
        credentials.update_credential(
            s, vault.barrier, SYSTEM, workspace="default", cred_id="tok",
            changes={"values": {"secret": jwt(datetime.now(timezone.utc) - timedelta(days=1))}})
    assert jobs.check_credential(vault, pk) == ["credential.expired"]
    assert [d.event for d in deliveries(vault)] == ["credential.expiring", "credential.expired"]
    assert all(d.payload["target"] == "tok" for d in deliveries(vault))


def test_a_webhook_url_must_be_http_and_events_known(vault):
    from workbench.errors import ValidationError
    with pytest.raises(ValidationError, match="http"):
        add_hook(vault, "file:///etc/passwd")
    with pytest.raises(ValidationError, match="unknown event"):
        add_hook(vault, "https://example.org/", ["nope"])


def test_workbench_worker_needs_postgresql(vault, wb_cli):
    """On SQLite `workbench serve` runs the jobs itself: no worker to start."""
    if vault.engine.dialect.name != "sqlite":
        pytest.skip("runs until stopped on PostgreSQL (see test_scaleout)")
    code, _, err = wb_cli("worker")
    assert code == 5 and "needs PostgreSQL" in err  # a configuration error (docs/cli.md)
