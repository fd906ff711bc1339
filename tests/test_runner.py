"""Run orchestration with a fake executor: order, stop at failure, cleanup always, cancellation,
masking of output and the stored record."""
import os
import signal
import threading

import pytest
from sqlalchemy import select

from tests.fixtures.pipelines import DictResolver, canary
from workbench.db import Base, make_engine, make_sessionmaker
from workbench.errors import ExecutionError, PipelineError
from workbench.pipeline import executor as executors
from workbench.pipeline.parse import parse_pipeline
from workbench.pipeline.records import (MAX_LOG_CHARS, CredentialUse, get_run,
                                        list_runs, run_to_dict)
from workbench.pipeline.runner import Cancellation, DbRecorder, Recorder, run_pipeline
from workbench.pipeline.step import StepResult


class FakeExecutor(executors.Executor):
    """Interprets ``step.run`` as a tiny command language; logs every call it gets."""

    name = "fake"
    events: list = []
    started = threading.Event()

    def __init__(self, step, *, scratch):
        super().__init__(step, scratch=scratch)
        self.cancelled = threading.Event()
        self.log("init")

    def log(self, what):
        FakeExecutor.events.append((what, self.step.name))

    def prepare(self):
        self.log("prepare")
        if self.step.run == "prepare-error":
            raise ExecutionError("could not write the secret file for KUBECONFIG")
        if self.step.run == "prepare-crash":
            raise RuntimeError("boom " + self.step.env.get("TOK", ""))

    def run(self, output):
        self.log("run")
        cmd, _, arg = self.step.run.partition(" ")
        if cmd == "ok":
            output(f"hello from {self.step.name}\n".encode())
            return StepResult(self.step.name, "success", 0, 0.01)
        if cmd == "fail":
            output(b"going down\n")
            return StepResult(self.step.name, "failed", 3, 0.01)
        if cmd == "print-env":  # the value split across chunks, the masker must still catch it
            value = self.step.env[arg].encode()
            for i in range(0, len(value), 3):
                output(value[i:i + 3])
            output(b"\n")
            return StepResult(self.step.name, "success", 0, 0.01)
        if cmd == "flood":
            for _ in range(3 * 1024):
                output(b"x" * 1023 + b"\n")
            output(b"THE END\n")
            return StepResult(self.step.name, "success", 0, 0.01)
        if cmd == "block":
            FakeExecutor.started.set()
            if self.cancelled.wait(20):
                return StepResult(self.step.name, "cancelled", None, 0.01)
            return StepResult(self.step.name, "success", 0, 0.01)
        raise AssertionError(f"unknown fake command {cmd}")

    def cancel(self):
        self.log("cancel")
        self.cancelled.set()

    def cleanup(self):
        self.log("cleanup")


@pytest.fixture(autouse=True)
def fake(monkeypatch):
    monkeypatch.setitem(executors.EXECUTORS, "local", FakeExecutor)
    FakeExecutor.events = []
    FakeExecutor.started = threading.Event()
    return FakeExecutor


@pytest.fixture
def resolver():
    r = DictResolver()
    r.add("tok", "secret_text", {"secret": canary("tok")})
    r.add("git", "username_password", {"username": "bot", "password": canary("gitpw")})
    return r


class ListRecorder(Recorder):
    def __init__(self):
        self.records = []

    def record(self, record):
        self.records.append(record)


def pipeline(*runs, creds="[tok]"):
    steps = "".join(f"  - name: s{i}\n    run: '{r}'\n    credentials: {creds}\n"
                    for i, r in enumerate(runs, 1))
    return parse_pipeline("name: demo\nsteps:\n" + steps, filename="demo.yaml")


def go(p, resolver, tmp_path, **kw):
    out = bytearray()
    result = run_pipeline(p, resolver, scratch=str(tmp_path), echo=out.extend, **kw)
    return result, bytes(out)


def test_steps_run_in_order_each_prepared_run_and_cleaned(resolver, tmp_path, fake):
    result, out = go(pipeline("ok", "ok"), resolver, tmp_path)
    assert result.status == "success" and result.exit_code == 0
    assert [e for e in fake.events if e[0] != "init"] == [
        ("prepare", "s1"), ("run", "s1"), ("cleanup", "s1"),
        ("prepare", "s2"), ("run", "s2"), ("cleanup", "s2")]
    assert out == b"hello from s1\nhello from s2\n"


def test_stops_at_first_failure_later_steps_skipped(resolver, tmp_path, fake):
    rec = ListRecorder()
    result, out = go(pipeline("ok", "fail", "ok"), resolver, tmp_path, recorder=rec)
    assert result.status == "failed" and result.exit_code == 1
    assert [s.status for s in result.steps] == ["success", "failed", "skipped"]
    assert ("run", "s3") not in fake.events
    (record,) = rec.records
    assert [(s["name"], s["status"], s["exit_code"]) for s in record["steps"]] == [
        ("s1", "success", 0), ("s2", "failed", 3), ("s3", "skipped", None)]
    assert record["steps"][1]["log"] == "going down\n"
    assert [u["step"] for u in record["uses"]] == ["s1", "s2"]  # s3 never received it


def test_cleanup_runs_when_prepare_raises(resolver, tmp_path, fake):
    result, _ = go(pipeline("prepare-error", "ok"), resolver, tmp_path)
    assert result.status == "error"
    assert result.steps[0].message == "could not write the secret file for KUBECONFIG"
    assert ("cleanup", "s1") in fake.events and ("run", "s1") not in fake.events
    assert result.steps[1].status == "skipped"


def test_foreign_exception_text_never_reaches_the_record(resolver, tmp_path, fake):
    rec = ListRecorder()
    result, _ = go(pipeline("prepare-crash"), resolver, tmp_path, recorder=rec)
    secret = resolver.store["tok"][0][1]["secret"]
    assert result.steps[0].message == "internal error (RuntimeError)"
    assert secret not in repr(rec.records)
    assert ("cleanup", "s1") in fake.events


def test_output_is_masked_even_split_across_chunks(resolver, tmp_path):
    secret = resolver.store["tok"][0][1]["secret"]
    rec = ListRecorder()
    result, out = go(pipeline("print-env TOK"), resolver, tmp_path, recorder=rec)
    assert result.status == "success"
    assert secret.encode() not in out and out.strip()
    assert secret not in rec.records[0]["steps"][0]["log"]
    assert rec.records[0]["steps"][0]["log"].strip()  # something (the mask) was printed


def test_a_step_sees_only_its_own_credentials_but_masks_all(resolver, tmp_path):
    p = parse_pipeline("steps:\n  - {name: a, run: 'print-env GIT_PSW', credentials: [git]}\n"
                       "  - {name: b, run: 'ok', credentials: [tok]}\n", filename="p.yaml")
    seen = {}
    original = FakeExecutor.prepare

    def spy(self):
        seen[self.step.name] = dict(self.step.env)
        original(self)

    FakeExecutor.prepare = spy
    try:
        result, out = go(p, resolver, tmp_path)
    finally:
        FakeExecutor.prepare = original
    assert result.status == "success"
    assert "GIT_PSW" in seen["a"] and "TOK" not in seen["a"]
    assert "TOK" in seen["b"] and "GIT_PSW" not in seen["b"]
    assert resolver.store["git"][0][1]["password"].encode() not in out


def test_log_is_bounded_and_keeps_the_tail(resolver, tmp_path):
    rec = ListRecorder()
    result, out = go(pipeline("flood"), resolver, tmp_path, recorder=rec)
    log = rec.records[0]["steps"][0]["log"]
    assert len(out) > 3 * MAX_LOG_CHARS  # the console sees everything
    assert len(log) <= MAX_LOG_CHARS + 100 and log.endswith("THE END\n")
    assert "earlier output dropped" in log


def test_unknown_credential_refused_before_any_step_and_recorded(resolver, tmp_path, fake):
    rec = ListRecorder()
    p = parse_pipeline("steps:\n  - {name: a, run: ok}\n  - {name: b, run: ok, "
                       "credentials: [missing-one]}\n", filename="p.yaml")
    with pytest.raises(PipelineError, match="p.yaml:3: step b: unknown credential"):
        go(p, resolver, tmp_path, recorder=rec)
    assert fake.events == []
    assert rec.records[0]["status"] == "error" and "missing-one" in rec.records[0]["message"]


def test_sigterm_cancels_current_step_cleans_up_and_skips_the_rest(resolver, tmp_path, fake):
    before = signal.getsignal(signal.SIGTERM)

    def kill_when_started():
        if fake.started.wait(10):
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_when_started, daemon=True).start()
    rec = ListRecorder()
    result, _ = go(pipeline("block", "ok"), resolver, tmp_path, recorder=rec)
    assert result.status == "cancelled" and result.exit_code != 0
    assert [s.status for s in result.steps] == ["cancelled", "skipped"]
    assert ("cancel", "s1") in fake.events and ("cleanup", "s1") in fake.events
    assert ("prepare", "s2") not in fake.events
    assert rec.records[0]["status"] == "cancelled"
    assert signal.getsignal(signal.SIGTERM) is before


def test_cancel_from_another_thread(resolver, tmp_path, fake):
    cancel = Cancellation()
    threading.Thread(target=lambda: fake.started.wait(10) and cancel(), daemon=True).start()
    result, _ = go(pipeline("block"), resolver, tmp_path, cancel=cancel)
    assert result.status == "cancelled" and ("cleanup", "s1") in fake.events


def test_db_recorder_stores_run_steps_logs_and_uses(resolver, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/runs.db")
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    secret = resolver.store["tok"][0][1]["secret"]
    result, _ = go(pipeline("print-env TOK", "fail", "ok"), resolver, tmp_path,
                   recorder=DbRecorder(factory, "team"), trigger={"trigger_user": "alice"})
    with factory() as session:
        (run,) = list_runs(session, "team")
        assert list_runs(session, "other") == []
        d = run_to_dict(get_run(session, result.id), with_log=True)
        assert d["status"] == "failed" and d["pipeline"] == "demo" and d["file"] == "demo.yaml"
        assert d["trigger_user"] == "alice"
        assert [(s["name"], s["status"]) for s in d["steps"]] == [
            ("s1", "success"), ("s2", "failed"), ("s3", "skipped")]
        assert secret not in d["steps"][0]["log"] and d["steps"][1]["log"] == "going down\n"
        assert [(u["step"], u["credential_id"], u["version"]) for u in d["uses"]] == [
            ("s1", "tok", 1), ("s2", "tok", 1)]
        assert "log" not in run_to_dict(run)["steps"][0]
        uses = session.scalars(select(CredentialUse)).all()
        assert [(u.workspace, u.owner) for u in uses] == [("team", "team")] * 2


def test_http_resolver_decodes_bytes_and_sends_token_only_in_header(resolve_server):
    from workbench.pipeline.remote import HttpResolver
    from workbench.pipeline.resolve import Ref

    r = resolve_server.resolver
    content = canary("pem").encode() + b"\x00\xff"
    r.add("cert", "secret_file", {"filename": "c.pem", "content": content})
    r.add("tok", "secret_text", {"secret": canary("v1")})
    r.add("tok", "secret_text", {"secret": canary("v2")})
    client = HttpResolver(resolve_server.url, resolve_server.token, "team")
    out = client.resolve([Ref("cert"), Ref("tok", 1)], context={"run": "r9"})
    assert out[Ref("cert")].values["content"] == content
    assert out[Ref("tok", 1)].version == 1 and out[Ref("tok", 1)].type == "secret_text"
    (req,) = resolve_server.requests
    assert req["url"].endswith("/api/v1/resolve?workspace=team")
    assert resolve_server.token not in req["url"] and resolve_server.token not in req["body"]
    assert '"run": "r9"' in req["body"] or '"run":"r9"' in req["body"]
    assert resolve_server.token not in repr(client)


def test_http_resolver_maps_errors(resolve_server):
    from workbench.errors import AuthenticationRequired, NotFound
    from workbench.pipeline.remote import HttpResolver
    from workbench.pipeline.resolve import Ref

    resolve_server.resolver.add("tok", "secret_text", {"secret": canary()})
    with pytest.raises(NotFound) as info:
        HttpResolver(resolve_server.url, resolve_server.token, "w").resolve(
            [Ref("tok"), Ref("nope"), Ref("tok", 5)])
    assert sorted(info.value.details["missing"]) == ["nope", "tok@5"]
    with pytest.raises(AuthenticationRequired):
        HttpResolver(resolve_server.url, "wrong-token", "w").resolve([Ref("tok")])


def test_run_through_server_records_over_http(resolve_server, tmp_path):
    from workbench.pipeline.remote import HttpRecorder, HttpResolver

    resolve_server.resolver.add("tok", "secret_text", {"secret": canary("tok")})
    args = (resolve_server.url, resolve_server.token, "team")
    with pytest.raises(PipelineError, match="unknown credential 'missing'"):
        go(pipeline("ok", creds="[missing]"), HttpResolver(*args), tmp_path)
    result, out = go(pipeline("print-env TOK", "ok"), HttpResolver(*args), tmp_path,
                     recorder=HttpRecorder(*args))
    assert result.status == "success"
    ((workspace, record),) = resolve_server.runs
    assert workspace == "team" and record["id"] == result.id
    secret = resolve_server.resolver.store["tok"][0][1]["secret"]
    assert secret not in record["steps"][0]["log"] and secret.encode() not in out


def test_http_records_are_shrunk_to_fit_the_request_limit(resolve_server, tmp_path):
    from workbench.pipeline.remote import MAX_RECORD, HttpRecorder, HttpResolver, fit

    resolve_server.resolver.add("tok", "secret_text", {"secret": canary("tok")})
    args = (resolve_server.url, resolve_server.token, "team")
    result, out = go(pipeline("flood", "flood", "ok"), HttpResolver(*args), tmp_path,
                     recorder=HttpRecorder(*args))
    assert result.status == "success"
    body = resolve_server.requests[-1]["body"]
    assert len(body.encode()) <= MAX_RECORD
    (_ws, record), = resolve_server.runs
    assert [s["log"].endswith(end) for s, end in
            zip(record["steps"], ("THE END\n", "THE END\n", "hello from s3\n"))] == [True] * 3
    assert record["steps"][0]["log"].startswith("[… earlier output dropped …]")
    small = {"id": "x", "steps": [{"log": "short"}]}
    assert fit(small, MAX_RECORD) is small


@pytest.mark.parametrize("record,field", [
    ({"status": "success"}, "id"),
    ({"id": "x" * 40, "status": "success"}, "id"),
    ({"id": "r1", "status": "exploded"}, "status"),
    ({"id": "r1", "status": "success", "steps": [{"status": "success"}]}, "steps"),
    ({"id": "r1", "status": "success", "steps": ["nope"]}, "steps"),
    ({"id": "r1", "status": "success", "steps": [{"name": "a", "status": "weird"}]},
     "steps.status"),
    ({"id": "r1", "status": "success", "uses": [{"step": "a", "credential_id": "x",
                                                  "version": "v1"}]}, "steps"),
    ({"id": "r1", "status": "success", "started_at": "yesterday"}, "steps"),
])
def test_store_run_refuses_malformed_records(tmp_path, record, field):
    from workbench.errors import ValidationError
    from workbench.pipeline.records import store_run

    engine = make_engine(f"sqlite:///{tmp_path}/runs.db")
    Base.metadata.create_all(engine)
    with make_sessionmaker(engine)() as session:
        with pytest.raises(ValidationError) as info:
            store_run(session, "team", record)
        assert info.value.field in (field, "started_at")
