"""POST /api/v1/resolve is answered ahead of Flask (api.hotpath.HotPath): exactly as the Flask
route answers it, byte for byte, with the same audit rows."""
import json

import pytest
from sqlalchemy import select
from werkzeug.test import Client

from workbench.api.hotpath import HotPath
from workbench.models import AuditEvent

from .test_resolve_path import _store

PATH = "/api/v1/resolve"


@pytest.fixture
def paths(app, vault, api_as):
    """(hot, flask): clients through the whole app, and through Flask alone; a count of the
    requests that reached Flask through the whole app; tokens by role."""
    editor = api_as("editor")
    _store(editor, "db")
    _store(editor, "db2")
    editor.post("/credentials/db/versions", {"values": {"password": "pw-canary-7272"}})
    assert isinstance(app.wsgi_app, HotPath)
    flask_app, reached = app.wsgi_app.app, []

    def counting(environ, start_response):
        reached.append(environ["PATH_INFO"])
        return flask_app(environ, start_response)
    app.wsgi_app.app = counting
    tokens = {"runner": api_as("runner").token, "viewer": api_as("viewer").token,
              "bad": "wb_not-a-real-token"}
    return Client(app), Client(flask_app), reached, tokens


def _audit_since(vault, last_id):
    with vault.factory() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.id > last_id)
                         .order_by(AuditEvent.id)).all()
        return [(e.actor, e.action, e.outcome, e.workspace, e.target, e.source, e.details)
                for e in rows], max([e.id for e in rows], default=last_id)


def _call(client, query="", body=None, data=None, content_type="application/json",
          token="runner", tokens=None):
    headers = {"Authorization": f"Bearer {tokens[token]}"} if token else {}
    data = json.dumps(body).encode() if body is not None else data
    r = client.post(PATH + query, data=data, content_type=content_type, headers=headers)
    return r.status_code, r.get_data(), sorted(r.headers.items())


CASES = {
    "one reference": dict(body={"refs": ["db"]}),
    "pinned, several, context": dict(body={"refs": ["db", "db@1", "db2"], "context": {
        "pipeline": "deploy", "step": "migrate", "other": "dropped"}}),
    "a JSON subtype": dict(body={"refs": ["db"]}, content_type="application/vnd.wb+json"),
    "a repeated reference": dict(body={"refs": ["db2", "db", "db2"]}),
    "unknown reference": dict(body={"refs": ["db", "absent"]}),
    "unknown version": dict(body={"refs": ["db@9"]}),
    "malformed reference": dict(body={"refs": ["Not An ID!"]}),
    "no references": dict(body={"refs": []}),
    "too many references": dict(body={"refs": ["db"] * 101}),
    "body not an object": dict(body=["db"]),
    "malformed JSON": dict(data=b'{"refs": ["db"'),
    "not JSON": dict(data=b'{"refs": ["db"]}', content_type="text/plain"),
    "no token": dict(body={"refs": ["db"]}, token=None),
    "a bad token": dict(body={"refs": ["db"]}, token="bad"),
    "a viewer's token": dict(body={"refs": ["db"]}, token="viewer"),
    "another workspace": dict(body={"refs": ["db"]}, query="?workspace=other"),
    "a blank workspace": dict(body={"refs": ["db"]}, query="?workspace="),
    "the first workspace given": dict(body={"refs": ["db"]},
                                      query="?workspace=default&workspace=other"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_path_answers_and_audits_like_the_flask_route(paths, vault, case):
    hot, flask, reached, tokens = paths
    _, last = _audit_since(vault, 0)
    fast = _call(hot, tokens=tokens, **CASES[case])
    fast_audit, last = _audit_since(vault, last)
    slow = _call(flask, tokens=tokens, **CASES[case])
    slow_audit, _ = _audit_since(vault, last)
    assert reached == []  # answered without Flask
    assert fast == slow
    assert fast_audit == slow_audit
    assert b"pw-canary" not in fast[1] or fast[0] == 200
    # one "ok" row per credential answered, and none for a refused request
    answered = json.loads(fast[1])["credentials"] if fast[0] == 200 else []
    ok = [(e[4], e[6]["version"]) for e in fast_audit if e[1:3] == ("credential.resolve", "ok")]
    assert sorted(ok) == sorted((c["id"], c["version"]) for c in answered)


def test_what_the_fast_path_does_not_take_goes_to_flask(paths, vault):
    """A body over the limit is refused by Flask (413), as before; other methods and paths
    are Flask's too."""
    hot, flask, reached, tokens = paths
    big = {"refs": ["db"], "pad": "x" * vault.settings.max_body_bytes}
    fast, slow = (_call(c, body=big, tokens=tokens) for c in (hot, flask))
    assert fast[0] == 413 and fast == slow
    assert hot.get(PATH).status_code == 405
    assert reached == [PATH, PATH]


def test_an_unexpected_error_is_a_bare_500_on_both_paths(paths, app, monkeypatch, caplog):
    hot, flask, reached, tokens = paths
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production (tests set TESTING)

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail")
    monkeypatch.setattr("workbench.resolution.resolve", broken)
    fast = _call(hot, body={"refs": ["db"]}, tokens=tokens)
    slow = _call(flask, body={"refs": ["db"]}, tokens=tokens)
    assert fast[0] == 500 and fast == slow
    assert b"internal detail" not in fast[1]
    assert "Exception on /api/v1/resolve [POST]" in caplog.text
