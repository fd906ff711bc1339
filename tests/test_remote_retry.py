"""`workbench run --server` tries a resolve or a run record again when the server restarts."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workbench import errors
from workbench.pipeline import remote
from tests.fixtures._net import free_port


class Flaky:
    """A server that answers ``codes`` in turn (0: drops the connection), then 201."""

    def __init__(self, codes):
        self.codes, self.bodies = list(codes), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                code = outer.codes.pop(0) if outer.codes else 201
                if code == 0:
                    self.connection.close()  # as an instance killed mid-request
                    return
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                err = "unauthenticated" if code == 401 else "unavailable"
                self.wfile.write(b'{"id": "r1"}' if code == 201 else json.dumps(
                    {"error": {"code": err, "message": "busy"}}).encode())

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(remote, "RETRIES", (0.01, 0.01, 0.01))


def test_a_run_record_is_sent_again_until_the_server_takes_it():
    server = Flaky([503, 0, 502])
    rec = remote.HttpRecorder(server.url, "wbr_token", "default")
    rec.record({"id": "r1", "status": "succeeded", "steps": []})
    assert len(server.bodies) == 4  # the same record each time: the server replaces run r1
    assert {json.loads(b)["id"] for b in server.bodies} == {"r1"}


def test_a_server_that_stays_away_fails_the_call_clearly():
    server = Flaky([503] * 10)
    with pytest.raises(errors.WorkbenchError, match="busy"):
        remote.HttpRecorder(server.url, "t", "default").record({"id": "r1", "steps": []})
    assert len(server.bodies) == 4  # 1 + 3 retries
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(errors.ExecutionError, match="cannot reach"):
        remote.HttpRecorder(closed, "t", "default").record({"id": "r1", "steps": []})


def test_a_refusal_is_not_retried():
    server = Flaky([401])
    with pytest.raises(errors.AuthenticationRequired):
        remote.HttpRecorder(server.url, "t", "default").record({"id": "r1", "steps": []})
    assert len(server.bodies) == 1
