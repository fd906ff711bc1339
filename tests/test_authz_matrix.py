"""The authorisation matrix (issue 19): every route of the app (API and web pages) × one user per
role (admin, editor, viewer, auditor) × position of its one grant (own = the target's scope,
parent, child, sibling), plus a user with no grant and an instance admin as the control.

Each request is real (a personal token, or a signed-in session with its CSRF token) and valid,
so what decides is the caller's role.  Let in: a 2xx, a redirect that is not to the sign-in
page and flashes no error, or the case's validation status after the check; for a list, the
target is in it; for a change, an ``ok`` audit row of it by the caller.  Every mismatch is
collected and reported at once; an unexpected allow is a security bug.  An allowed answer
must not name a scope the caller cannot see (nor its credentials or audit rows) unless the
request named it."""
from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from tests.fixtures._authz_harness import Caller, Matrix, run_matrix
from tests.fixtures._authz_pages import PAGES
from tests.fixtures._authz_routes import (ACCOUNT, API, ELSEWHERE, ELSEWHERE_CASES, INSTANCE,
                                          PUBLIC, RUNNER, expected)
from tests.fixtures._authz_world import PROJ, TEAM, TEAM2, build, people
from tests.fixtures.vault import BACKENDS, _empty
from tests.test_web import csrf
from workbench import accounts, create_app, crypto, jobqueue
from workbench.audit import SYSTEM
from workbench.config import Settings
from workbench.models import User
from workbench.vault import Vault

CASES = API + PAGES + ELSEWHERE_CASES
# Denies accepted for now, each with its reason: {(case name, person label or "*"): reason}.
# Never an allow: an unexpected allow always fails.
ACCEPTED_DENIES: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def matrix(request, _migrated, tmp_path_factory):
    """One app per backend, the world built once, every person signed in once."""
    root = tmp_path_factory.mktemp("authz")
    settings = Settings.from_env({}, instance=str(root / "instance"),
                                 database_url=_migrated(request.param),
                                 master_key=crypto.encode_key(crypto.generate_key()),
                                 testing=True)
    vault = Vault(settings)
    _empty(vault)
    vault.open(migrate=False)
    app = create_app(settings, vault=vault)
    password = secrets.token_urlsafe(16)
    # cheap hash parameters: a wrong current password is checked against it 36 times
    world = build(vault, root / "source",
                  PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password))
    callers = []
    for p in people():
        with vault.factory.begin() as s:
            token = accounts.create_token(s, SYSTEM, f"matrix-{p.username}",
                                          username=p.username).secret
            user = s.scalar(select(User).where(User.username == p.username))
        callers.append(Caller(p, token, _signed_in(app, user), ""))
        callers[-1].csrf = csrf(callers[-1].web, "/account/password")
    yield Matrix(app, world, callers, password)
    # the syncs the pages started run in threads on SQLite: let them end before the vault does
    # (on PostgreSQL they wait in the job queue, which no worker serves here)
    queue, deadline = jobqueue.for_vault(vault), time.monotonic() + 60
    while isinstance(queue, jobqueue.InlineQueue) and queue.pending_sources() \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    vault.close()


def _signed_in(app, user):
    """A test client with the session cookie a sign-in gives ``user`` (signing in itself, with
    its slow password check and throttling, is tested in test_web.py)."""
    web = app.test_client()
    with web.session_transaction() as sess:
        sess["_user_id"], sess["_fresh"] = user.get_id(), True
    return web


def test_every_route_is_in_the_matrix(matrix):
    """A new route cannot escape the matrix: every rule of the URL map (each method but HEAD
    and OPTIONS, with single sign-on configured too) has a row, and every row names a route."""
    settings = matrix.world.vault.settings
    sso = dataclasses.replace(settings, oidc={
        "WORKBENCH_OIDC_ISSUER": "http://127.0.0.1:9/idp", "WORKBENCH_OIDC_CLIENT_ID": "wb",
        "WORKBENCH_OIDC_CLIENT_SECRET": "not-used", "WORKBENCH_OIDC_ROLES": "*=viewer"})
    have = {(r.endpoint, meth)
            for app in (matrix.app, create_app(sso, vault=matrix.world.vault))
            for r in app.url_map.iter_rules() for meth in r.methods - {"HEAD", "OPTIONS"}}
    table = {(c.endpoint, c.method) for c in CASES}
    assert not have - table, f"routes missing from the authorisation matrix: {sorted(have - table)}"
    assert not table - have, f"matrix rows naming no route: {sorted(table - have)}"
    sent = {(c.endpoint, c.method) for c in CASES if not c.sso_only}
    assert {(r.endpoint, meth) for r in matrix.app.url_map.iter_rules()
            for meth in r.methods - {"HEAD", "OPTIONS"}} == sent


def test_every_route_role_and_position(matrix, request):
    """Every case × every person; one assertion listing every mismatch."""
    rep = run_matrix(matrix, CASES, ACCEPTED_DENIES)
    backend = request.node.callspec.params["matrix"]
    text = rep.table(backend)
    out = os.environ.get("WORKBENCH_AUTHZ_REPORT")
    if out:
        Path(f"{out}.{backend}").write_text(text + "\n")
    assert rep.checked == len([c for c in CASES if not c.sso_only]) * len(matrix.callers)
    assert not (rep.allows or rep.denies or rep.errors or rep.leaks), text


def test_the_table_is_honest():
    """The table's own rules: runner routes let nobody in; instance rows only instance roles
(admin; auditor too for the whole audit log); a scope's rows never a grant below or beside it."""
    everyone = people()
    for case in CASES:
        allowed = {p.label for p in everyone if expected(case, p)}
        if case.scope in (RUNNER, ELSEWHERE):
            assert not allowed, case.name
        elif case.scope == INSTANCE:
            assert allowed in ({"instance-admin"}, {"instance-admin", "instance-auditor"}), \
                case.name
        elif case.scope in (ACCOUNT, PUBLIC):
            assert len(allowed) == len(everyone), case.name
        else:
            assert "instance-admin" in allowed and "no-grant" not in allowed, case.name
            assert not {p.label for p in everyone if p.position in ("child", "sibling")} \
                & allowed, case.name


def _served(app):
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def wb(monkeypatch, capfd, tmp_path):
    """``wb(*args, env={...})`` → (exit code, stdout, stderr) of the real ``workbench``
    command, run in this process (its steps are processes of their own)."""
    from workbench.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))

    def run(*args: str, env: dict) -> tuple[int, str, str]:
        with monkeypatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            capfd.readouterr()
            code = main(list(args))
            out = capfd.readouterr()
        return code, out.out, out.err
    return run


def _runner_token(m: Matrix, caller: Caller, scope: str) -> tuple[int, str | None]:
    """A runner token of ``scope`` asked for by ``caller`` (any credential, ad hoc)."""
    r = m.app.test_client().post("/api/v1/tokens", headers={
        "Authorization": f"Bearer {caller.token}"}, json={
        "name": m.world.unique("cli"), "kind": "runner", "workspace": scope, "allow": ["*"]})
    return r.status_code, (r.get_json() or {}).get("token")


def test_cli_through_a_server_has_the_token_scope(matrix, wb):
    """The CLI has no roles of its own.  Locally it is the operator (it holds the master key:
    every scope); through a server (``--server``: ``run`` and ``exec``) it holds a runner token
    of one scope, which only an admin of that scope (or above) may issue, and which gets the
    credentials of its scope and those inherited from above, never a sibling's or a child's."""
    m = matrix
    by = {c.person.label: c for c in m.callers}
    status, team_token = _runner_token(m, by["admin@own"], TEAM)
    assert status == 201, "an admin of team issues team's runner tokens"
    assert _runner_token(m, by["admin@sibling"], TEAM)[0] in (403, 404)
    assert _runner_token(m, by["editor@own"], TEAM)[0] == 403
    cli_cred = m.world.cred()  # one the matrix has not given new versions
    tokens = {TEAM: team_token}
    for scope in (PROJ, TEAM2):
        tokens[scope] = _runner_token(m, by["instance-admin"], scope)[1]
    server = _served(m.app)
    url = f"http://127.0.0.1:{server.server_port}"
    check = ("sh", "-c", 'test "$V" = s3cret-value')
    try:
        def exec_as(token_scope: str, workspace: str):
            return wb("exec", "--server", url, "--workspace", workspace, "--cred",
                      f"{cli_cred}:env=V", "--", *check,
                      env={"WORKBENCH_RUNNER_TOKEN": tokens[token_scope]})
        got = {(t, w): exec_as(t, w) for t, w in ((TEAM, TEAM), (PROJ, PROJ), (TEAM2, TEAM2),
                                                  (TEAM2, TEAM))}
    finally:
        server.shutdown()
    assert got[(TEAM, TEAM)][0] == 0, got[(TEAM, TEAM)]
    assert got[(PROJ, PROJ)][0] == 0, got[(PROJ, PROJ)]  # inherited from team
    for key in ((TEAM2, TEAM2), (TEAM2, TEAM)):
        code, out, err = got[key]
        assert code not in (0, 1), (key, err)  # refused before anything ran
        assert "s3cret-value" not in out + err
    assert f"unknown credential {cli_cred!r}" in got[(TEAM2, TEAM2)][2]  # not a sibling's
    assert "scoped to workspace" in got[(TEAM2, TEAM)][2]
    # locally, with the key, the CLI sees every scope
    settings = m.world.vault.settings
    code, out, err = wb("cred", "list", "--workspace", TEAM, "-o", "json", env={
        "WORKBENCH_INSTANCE": str(settings.instance),
        "WORKBENCH_DATABASE_URL": settings.database_url,
        "WORKBENCH_MASTER_KEY": settings.master_key})
    assert code == 0 and cli_cred in out, err
