"""The web workbench through the Flask test client: sign-in, CSRF, roles, headers, no secrets."""
import io
import re
import time

import pytest

from workbench import audit, credentials as svc
from workbench.pipeline import records

CANARY = "CANARY"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Q0E=}
users:
- name: u1
  user: {token: CANARY-kube-token-7731}
contexts:
- name: ctx
  context: {cluster: c1, user: u1}
current-context: ctx
"""
SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nCANARYb3BlbnNzaC1rZXktdjEAAAAABG5vbmUtc3No"
           "\n-----END OPENSSH PRIVATE KEY-----\n")
# form fields per type (files as (bytes, name)); every secret holds the canary
EVERY_TYPE = {
    "username_password": {"v_username": "alice", "v_password": "CANARY-pw-1111",
                          "v_target": "https://git.example/repo.git"},
    "secret_text": {"v_secret": "CANARY-st-2222"},
    "kubeconfig": {"v_kubeconfig": KUBECONFIG},
    "docker_registry": {"v_registry": "127.0.0.1:5000", "v_username": "bob",
                        "v_password": "CANARY-reg-3333"},
    "ssh_private_key": {"v_username": "git", "v_private_key": SSH_KEY,
                        "v_passphrase": "CANARY-pp-44"},
    "access_key": {"v_access_key_id": "AKIAEXAMPLE", "v_secret_access_key": "CANARY-ak-5555"},
    "generic": {"v_values_key": ["API_URL", "API_KEY"],
                "v_values_value": ["CANARY-url-x", "CANARY-gen-6666"]},
    "secret_file": {"v_filename": "creds.json",
                    "v_content_file": (b'{"k": "CANARY-file-7777"}', "creds.json")},
}
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client, path="/login") -> str:
    m = TOKEN.search(client.get(path).get_data(as_text=True))
    assert m, f"no CSRF token on {path}"
    return m.group(1)


def login(client, username, password, addr="127.0.0.1"):
    token = csrf(client)
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token},
                       environ_base={"REMOTE_ADDR": addr})


@pytest.fixture
def as_role(app, users):
    """``as_role("editor")`` → a signed-in test client."""
    def make(role):
        c = app.test_client()
        assert login(c, *users[role]).status_code == 302
        return c
    return make


def post(client, path, data, page=None):
    data = dict(data)
    data["csrf_token"] = csrf(client, page or "/")
    for k, v in list(data.items()):
        if isinstance(v, tuple):
            data[k] = (io.BytesIO(v[0]), v[1])
    return client.post(path, data=data, content_type="multipart/form-data")


def create(client, type_name, cred_id, **extra):
    data = {"type": type_name, "id": cred_id, "name": f"{type_name} one",
            "workspace": "default", **EVERY_TYPE[type_name], **extra}
    return post(client, f"/credentials/new?type={type_name}", data)


def test_sign_in_and_out(client, users):
    assert client.get("/").status_code == 302
    assert "/login" in client.get("/").headers["Location"]
    r = login(client, *users["editor"])
    assert r.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "editor1" in page and "Sign out" in page
    r = client.post("/logout", data={"csrf_token": csrf(client, "/")})
    assert r.status_code == 302
    assert client.get("/").status_code == 302


def test_signing_out_ends_a_copied_session_cookie(app, users):
    """Sessions are signed cookies; signing out must still end a copy of one (stolen, or the
    same account in another browser), and a new sign-in works."""
    first, copy = app.test_client(), app.test_client()
    assert login(first, *users["editor"]).status_code == 302
    copy.set_cookie("session", first.get_cookie("session").value)
    assert copy.get("/").status_code == 200
    assert first.post("/logout", data={"csrf_token": csrf(first, "/")}).status_code == 302
    assert copy.get("/").status_code == 302
    assert login(copy, *users["editor"]).status_code == 302
    assert copy.get("/").status_code == 200


def test_same_message_for_unknown_user_and_wrong_password(client, users):
    unknown = login(client, "nobody-here", "whatever-123")
    wrong = login(client, users["admin"][0], "not-the-password")
    assert unknown.status_code == wrong.status_code == 401
    assert "Wrong username or password." in unknown.get_data(as_text=True)
    strip = lambda r: r.get_data(as_text=True).replace("nobody-here", "X").replace("admin1", "X")
    assert TOKEN.sub("", strip(unknown)) == TOKEN.sub("", strip(wrong))


def test_failed_sign_ins_are_rate_limited_per_user_and_address(client, users, vault):
    name, pw = users["editor"]
    for _ in range(5):
        assert login(client, name, "wrong-password", addr="10.0.0.7").status_code == 401
    r = login(client, name, pw, addr="10.0.0.7")
    assert r.status_code == 429 and "Too many failed sign-in attempts" in r.get_data(as_text=True)
    # the limit is per username and address, and every failure is in the audit log
    assert login(client, name, pw, addr="10.0.0.8").status_code == 302
    with vault.factory() as s:
        denied = audit.query(s, action="auth.login", outcome="denied", target=name)
    assert len(denied) == 6 and {e.source for e in denied} == {"10.0.0.7"}


def test_many_usernames_from_one_address_are_rate_limited(client, users, vault):
    from workbench.models import AuditEvent
    with vault.factory.begin() as s:  # 20 recent failures for other names from this address
        s.add_all(AuditEvent(actor="anonymous", action="auth.login", outcome="denied",
                             target=f"guess{i}", source="10.0.0.9") for i in range(20))
    r = login(client, *users["viewer"], addr="10.0.0.9")
    assert r.status_code == 429
    assert login(client, *users["viewer"], addr="10.0.0.10").status_code == 302


def test_forms_without_csrf_token_are_refused(as_role, vault):
    c = as_role("editor")
    r = c.post("/credentials/new?type=secret_text",
               data={"type": "secret_text", "id": "no-token", "v_secret": "x-secret-1"})
    assert r.status_code == 400
    with vault.factory() as s:
        assert svc.list_credentials(s, workspace=None)[1] == 0


def test_security_headers_on_every_page(client, as_role):
    c = as_role("admin")
    create(c, "secret_text", "hdr")
    for page, cl in (("/login", client), ("/", c), ("/credentials/default/hdr", c),
                     ("/admin/audit", c), ("/pipelines", c), ("/runs", c)):
        r = cl.get(page)
        assert r.status_code == 200, page
        h = r.headers
        assert "default-src 'self'" in h["Content-Security-Policy"]
        assert "unsafe-inline" not in h["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "same-origin"
        assert h["Cache-Control"] == "no-store"
        body = r.get_data(as_text=True)
        assert "<script>" not in body and " style=" not in body and "<style" not in body


def test_description_is_shown_as_text(as_role):
    c = as_role("editor")
    create(c, "secret_text", "xss", description='<script>alert("x")</script>',
           name="<b>bold</b>")
    for page in ("/", "/credentials/default/xss", "/credentials/default/xss/edit"):
        body = c.get(page).get_data(as_text=True)
        assert '<script>alert' not in body and "<b>bold</b>" not in body
    assert "&lt;script&gt;alert" in c.get("/credentials/default/xss").get_data(as_text=True)


def test_viewer_sees_no_actions_and_is_refused(as_role):
    create(as_role("editor"), "secret_text", "seen")
    v = as_role("viewer")
    table = v.get("/").get_data(as_text=True)
    page = v.get("/credentials/default/seen").get_data(as_text=True)
    assert "seen" in table and "New credential" not in table
    for label in ("Rename", "Update secret", "Delete", "Test connection"):
        assert label not in page
    for path, data in (("/credentials/new?type=secret_text",
                        {"type": "secret_text", "id": "v1", "v_secret": "viewer-secret"}),
                       ("/credentials/default/seen/edit", {"id": "seen", "name": "x"}),
                       ("/credentials/default/seen/secret", {"v_secret": "viewer-new"}),
                       ("/credentials/default/seen/delete", {}),
                       ("/credentials/default/seen/test", {}),
                       ("/admin/users", {"username": "eve", "password": "p" * 12,
                                         "role": "admin"})):
        assert post(v, path, data).status_code == 403, path
    assert v.get("/credentials/default/seen").status_code == 200
    assert v.get("/admin/users").status_code == 403


def test_no_secret_value_in_any_page(as_role, vault):
    c = as_role("admin")
    for type_name in EVERY_TYPE:
        r = create(c, type_name, type_name.replace("_", "-"))
        assert r.status_code == 302, (type_name, r.get_data(as_text=True)[:2000])
    with vault.factory.begin() as s:
        assert svc.list_credentials(s, workspace=None)[1] == len(EVERY_TYPE)
        records.store_run(s, "default", {
            "id": "run-1", "status": "success", "pipeline": "deploy",
            "steps": [{"name": "build", "status": "success", "log": "token=****"}],
            "uses": [{"step": "build", "credential_id": "secret-text", "version": 1}]})
    ids = [t.replace("_", "-") for t in EVERY_TYPE]

    def every_page():
        pages = ["/", "/?cols_set=1&" + "&".join(f"cols={k}" for k in
                                                   ("name", "description", "type", "status")),
                 "/credentials/new", "/admin/audit", "/admin/users", "/admin/tokens",
                 "/pipelines", "/runs", "/runs/run-1"]
        pages += [f"/credentials/new?type={t}" for t in EVERY_TYPE]
        for cid in ids:
            base = f"/credentials/default/{cid}"
            pages += [base, base + "/edit", base + "/secret", base + "/delete"]
        for p in pages:
            r = c.get(p)
            assert r.status_code == 200, p
            assert CANARY not in r.get_data(as_text=True), p
        return len(pages)

    assert every_page() > 40
    r = post(c, "/credentials/default/username-password/secret",
             {"v_username": "alice", "v_password": "CANARY-pw-updated-9999", "v_target": ""})
    assert r.status_code == 302
    page = c.get("/credentials/default/username-password").get_data(as_text=True)
    assert "version 2" in page and "Saved version 2" in page
    every_page()


def test_validation_error_next_to_field_keeps_input_but_not_secrets(as_role, vault):
    c = as_role("editor")
    r = create(c, "username_password", "Bad ID!", description="kept text")
    body = r.get_data(as_text=True)
    assert r.status_code == 422
    assert 'id="err-id"' in body and "ID must be" in body
    assert 'value="Bad ID!"' in body and "kept text" in body and 'value="alice"' in body
    assert "CANARY-pw-1111" not in body
    r = create(c, "username_password", "no-password", v_password="")
    assert r.status_code == 422 and 'id="err-password"' in r.get_data(as_text=True)
    create(c, "secret_text", "taken")
    r = create(c, "secret_text", "taken")
    assert r.status_code == 422 and "already exists" in r.get_data(as_text=True)
    assert "CANARY" not in r.get_data(as_text=True)


def test_created_credential_is_first_in_table_with_message(as_role):
    c = as_role("editor")
    create(c, "secret_text", "older")
    r = create(c, "access_key", "newest")
    assert r.status_code == 302 and r.headers["Location"].endswith("/")
    body = c.get("/").get_data(as_text=True)
    assert "Credential newest created." in body
    assert body.index(">newest<") < body.index(">older<")


def test_id_cannot_be_changed_by_a_forged_post(as_role, vault):
    c = as_role("editor")
    create(c, "secret_text", "fixed-id")
    form = c.get("/credentials/default/fixed-id/edit").get_data(as_text=True)
    assert re.search(r'<input id="id" name="id" value="fixed-id" readonly', form)
    r = post(c, "/credentials/default/fixed-id/edit", {"id": "other-id", "name": "Renamed"})
    assert r.status_code == 422 and "cannot be changed" in r.get_data(as_text=True)
    r = post(c, "/credentials/default/fixed-id/edit",
             {"id": "fixed-id", "name": "Renamed", "description": "new words"})
    assert r.status_code == 302
    with vault.factory() as s:
        got = svc.get_credential(s, "default", "fixed-id")
        assert (got.name, got.description) == ("Renamed", "new words")
        assert svc.list_credentials(s, workspace=None)[1] == 1


def test_filter_search_sort_columns_and_pages(as_role):
    c = as_role("editor")
    for i in range(30):
        create(c, "secret_text" if i % 2 else "access_key", f"cred-{i:02d}",
               description="alpha" if i == 7 else "")
    body = c.get("/?per=25").get_data(as_text=True)
    assert "Page 1 of 2" in body and "cred-29" in body and "cred-04" not in body
    assert "cred-04" in c.get("/?per=25&page=2").get_data(as_text=True)
    found = c.get("/?q=alpha").get_data(as_text=True)
    assert "cred-07" in found and "cred-08" not in found
    only = c.get("/?type=access_key&per=100").get_data(as_text=True)
    assert "cred-02" in only and "cred-03" not in only
    asc = c.get("/?sort=id&per=25").get_data(as_text=True)
    assert asc.index("cred-00") < asc.index("cred-01") and "cred-29" not in asc
    r = c.get("/?cols_set=1&cols=type")
    assert "wb_cols=id.type" in r.headers["Set-Cookie"]
    head = c.get("/").get_data(as_text=True).split("<tbody>")[0]
    assert 'data-col="type"' in head and 'data-col="name"' not in head


def test_the_table_sorts_by_used_by(as_role, vault):
    c = as_role("viewer")
    editor = as_role("editor")
    for cid in ("in-use", "idle"):
        create(editor, "secret_text", cid)
    add_reference(vault, "in-use")
    down = c.get("/?sort=-used_by").get_data(as_text=True)
    up = c.get("/?sort=used_by").get_data(as_text=True)
    assert down.index("in-use") < down.index("idle") and up.index("idle") < up.index("in-use")
    assert "Sort by Used by" in down.split("<tbody>")[0]


def add_reference(vault, cred_id, pipeline="deploy", step="push", workspace="default"):
    """A pipeline of an indexed source whose step ``step`` references ``cred_id``."""
    from workbench.references import IndexedPipeline, PipelineReference, PipelineSource
    with vault.factory.begin() as s:
        src = PipelineSource(workspace=workspace, name="repo", kind="local", url="/srv/pipes")
        s.add(src)
        s.flush()
        p = IndexedPipeline(source_id=src.id, workspace=workspace, path=f"pipelines/{pipeline}"
                            ".yaml", name=pipeline, blob="0" * 40, steps=f"build\n{step}")
        s.add(p)
        s.flush()
        s.add(PipelineReference(pipeline_id=p.id, workspace=workspace, step=step,
                                credential_id=cred_id, binding="env TOKEN"))
        return p.id


def test_delete_unreferenced_and_referenced(as_role, vault):
    create(as_role("editor"), "secret_text", "free")
    create(as_role("editor"), "secret_text", "busy")
    pid = add_reference(vault, "busy")
    e = as_role("editor")
    assert post(e, "/credentials/default/free/delete", {}).status_code == 302
    table = e.get("/").get_data(as_text=True)
    assert "Credential free deleted." in table and "1 pipeline<" in table
    assert ">free<" not in table
    page = e.get("/credentials/default/busy").get_data(as_text=True)
    assert "<dialog" in page and f"/pipelines/{pid}" in page and "push" in page
    assert "Only an admin can delete" in page and "Delete anyway" not in page
    r = post(e, "/credentials/default/busy/delete", {"force": "1"})
    assert r.status_code == 403
    r = post(e, "/credentials/default/busy/delete", {})
    assert r.status_code == 302 and "Not deleted" in e.get("/").get_data(as_text=True)
    a = as_role("admin")
    assert "Delete anyway" in a.get("/credentials/default/busy").get_data(as_text=True)
    assert post(a, "/credentials/default/busy/delete", {"force": "1"}).status_code == 302
    with vault.factory() as s:
        assert svc.list_credentials(s, workspace=None)[1] == 0
        assert audit.query(s, action="credential.delete", target="busy")[0].details["forced"]
    listing = a.get("/pipelines").get_data(as_text=True)
    assert "1 dangling reference" in listing
    page = a.get(f"/pipelines/{pid}").get_data(as_text=True)
    assert "credential does not exist" in page and "push" in page


def test_admin_users_tokens_and_audit(as_role, vault):
    a = as_role("admin")
    r = post(a, "/admin/users", {"username": "newbie", "password": "long-enough-pw",
                                 "role": "viewer"})
    assert r.status_code == 302 and "newbie" in a.get("/admin/users").get_data(as_text=True)
    assert post(a, "/admin/users/newbie/role", {"role": "editor"}).status_code == 302
    r = post(a, "/admin/users", {"username": "short", "password": "x", "role": "viewer"})
    assert r.status_code == 422 and 'id="err-password"' in r.get_data(as_text=True)
    r = post(a, "/admin/tokens", {"name": "ci", "kind": "runner", "workspace": "default"})
    secret = re.search(r'value="(wbr_[^"]+)"', r.get_data(as_text=True)).group(1)
    listing = a.get("/admin/tokens").get_data(as_text=True)
    assert secret not in listing and "ci" in listing
    tok_id = re.search(r'/admin/tokens/(\d+)/revoke', listing).group(1)
    assert post(a, f"/admin/tokens/{tok_id}/revoke", {}).status_code == 302
    assert "revoked" in a.get("/admin/tokens").get_data(as_text=True)
    log = a.get("/admin/audit?action=user.role").get_data(as_text=True)
    assert "newbie" in log and "token.create</td>" not in log  # (still in the action list)
    with vault.factory() as s:
        assert [e.action for e in audit.query(s, target="newbie")] == ["user.role",
                                                                       "user.create"]


def test_runs_show_masked_logs_and_credentials(as_role, vault):
    with vault.factory.begin() as s:
        records.store_run(s, "default", {
            "id": "r-42", "status": "failed", "pipeline": "deploy",
            "steps": [{"name": "push", "status": "failed", "exit_code": 1,
                       "log": "login as ****\nerror: denied"}],
            "uses": [{"step": "push", "credential_id": "reg", "version": 3}]})
    c = as_role("viewer")
    assert "r-42"[:8] in c.get("/runs").get_data(as_text=True)
    page = c.get("/runs/r-42").get_data(as_text=True)
    assert "login as ****" in page and "reg@3" in page


def test_test_connection_stores_the_result(as_role, vault):
    c = as_role("editor")
    create(c, "secret_text", "no-target")
    r = post(c, "/credentials/default/no-target/test", {})
    assert r.status_code == 302
    assert "Testing no-target…" in c.get(r.headers["Location"]).get_data(as_text=True)
    for _ in range(100):  # the test runs off the request: the page shows it when it is done
        page = c.get("/credentials/default/no-target").get_data(as_text=True)
        if "Checking…" not in page:
            break
        time.sleep(0.1)
    assert "NoTarget" in page and ">Test connection</button>" in page
    with vault.factory() as s:
        assert audit.query(s, action="credential.verify", target="no-target")


def test_test_connection_is_not_offered_without_a_check(as_role, vault):
    c = as_role("editor")
    create(c, "access_key", "no-check")
    assert "Test connection" not in c.get("/credentials/default/no-check").get_data(as_text=True)
    create(c, "secret_text", "has-check")
    menus = c.get("/").get_data(as_text=True)  # the table's per-row menu, too
    assert "/credentials/default/has-check/test" in menus
    assert "/credentials/default/no-check/test" not in menus
    r = post(c, "/credentials/default/no-check/test", {})
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "There is no connectivity test for access_key credentials." in page
    with vault.factory() as s:
        assert not audit.query(s, action="credential.verify", target="no-check")


def test_a_running_test_shows_checking_and_disables_the_button(as_role, vault):
    from workbench import status
    c = as_role("editor")
    create(c, "secret_text", "busy")
    with vault.factory.begin() as s:
        status.mark_running(svc.get_credential(s, "default", "busy"))
    page = c.get("/credentials/default/busy").get_data(as_text=True)
    assert "data-poll=" in page and 'class="spinner"' in page  # follows the check by itself
    assert re.search(r"<button[^>]*disabled[^>]*>.*Checking…</button>", page)
    assert ">Test connection</button>" not in page
    assert "Checking…" in c.get("/").get_data(as_text=True)  # the table, too
    r = post(c, "/credentials/default/busy/test", {})
    assert "busy is already being tested." in c.get(r.headers["Location"]).get_data(as_text=True)


def test_new_version_records_only_the_changed_fields(as_role, vault):
    c = as_role("editor")
    create(c, "username_password", "svc")
    r = post(c, "/credentials/default/svc/secret",
             {"v_username": "alice", "v_password": "", "v_target": "https://git.example/repo.git"})
    assert r.status_code == 422 and "Nothing to save" in r.get_data(as_text=True)
    r = post(c, "/credentials/default/svc/secret",
             {"v_username": "alice", "v_password": "CANARY-new-pw",
              "v_target": "https://git.example/repo.git"})
    assert r.status_code == 302
    # moving the target needs the password again, so a session cannot redirect the secret
    r = post(c, "/credentials/default/svc/secret",
             {"v_username": "alice", "v_password": "", "v_target": "https://evil.example/"})
    assert r.status_code == 422 and 'id="err-password"' in r.get_data(as_text=True)
    with vault.factory() as s:
        ev = audit.query(s, action="credential.update", target="svc")
        assert [e.details["fields"] for e in ev] == [["password"]]
        assert svc.get_credential(s, "default", "svc").current_version == 2


def test_sync_a_pipeline_source_and_see_what_uses_a_credential(as_role, vault, tmp_path,
                                                              job_worker):
    from workbench import sources
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "ship.yaml").write_text(
        "name: ship\nsteps:\n  - name: upload\n    run: 'true'\n    credentials:\n"
        "      - bucket-key\n")
    with vault.factory.begin() as s:
        src_id = sources.add_source(s, audit.SYSTEM, "default", kind="local",
                                    url=str(tmp_path), name="local-pipes").id
    e = as_role("editor")
    create(e, "access_key", "bucket-key")
    page = e.get("/pipelines").get_data(as_text=True)
    assert "local-pipes" in page and "never" in page
    assert post(as_role("viewer"), f"/pipelines/sources/{src_id}/sync", {}).status_code == 403
    r = post(e, f"/pipelines/sources/{src_id}/sync", {"workspace": "default"})
    assert r.status_code == 302
    page = wait_for_sync(e)
    assert ">ship<" in page and "data-poll=" not in page
    cred = e.get("/credentials/default/bucket-key").get_data(as_text=True)
    assert "ship" in cred and "upload" in cred
    assert "1 pipeline<" in e.get("/").get_data(as_text=True)


def wait_for_sync(client, path="/pipelines", timeout=30.0) -> str:
    """The page once no source shows "syncing…" (syncs from the UI run in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(path).get_data(as_text=True)
        if "syncing…" not in page or time.monotonic() > deadline:
            return page
        time.sleep(0.1)


def test_a_sync_started_from_the_page_runs_in_the_background(as_role, vault, git_http_server,
                                                             job_worker):
    from tests.fixtures.pipeline_repo import (add_source, make_credential, pipeline_yaml,
                                              unique_name)
    server = git_http_server
    url = server.create_repo(unique_name("web-bg"), {"pipelines/a.yaml": pipeline_yaml("bg-a", {"s": []})})
    make_credential(vault, "web-bg-login", username=server.username, password=server.password)
    sid = add_source(vault, url=url, credential_id="web-bg-login", name="slow-remote")
    e = as_role("editor")
    server.release.clear()
    server.hold.set()  # the remote takes the fetch and does not answer until released
    try:
        started = time.monotonic()
        r = post(e, f"/pipelines/sources/{sid}/sync", {"workspace": "default"})
        assert r.status_code == 302 and time.monotonic() - started < 10  # did not wait on git
        page = e.get("/pipelines").get_data(as_text=True)
        assert "Sync started." in page and "syncing…" in page
        assert "data-poll=" in page  # the page follows the sync by itself
        # a second click while it runs is refused, not queued
        post(e, f"/pipelines/sources/{sid}/sync", {"workspace": "default"})
        assert "a sync of source &#39;slow-remote&#39; is already running" in \
            e.get("/pipelines").get_data(as_text=True)
    finally:
        server.hold.clear()
        server.release.set()
    page = wait_for_sync(e)
    assert "syncing…" not in page and "bg-a" in page and "data-poll=" not in page
