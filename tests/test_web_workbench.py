"""The web workbench's rough edges (issue 20), through the Flask test client: statuses,
key/value pairs, rejected forms, filters, paging, tokens, audit, sources, breadcrumbs."""
import re
from datetime import timedelta

import pytest

from tests.fixtures.kube_api import CertAuthority
from tests.fixtures.vault import add_scopes
from tests.test_web import (KUBECONFIG, add_reference, as_role, create, post,  # noqa: F401
                            wait_for_sync)
from workbench import audit, credentials as svc, status
from workbench.checks import Condition
from workbench.db import utcnow
from workbench.pipeline import records


def page_of(client, path) -> str:
    r = client.get(path)
    assert r.status_code == 200, (path, r.status_code)
    return r.get_data(as_text=True)


def badge(html: str, cred_id: str) -> str:
    """The status badge's words in the table row of ``cred_id``."""
    row = re.search(rf'<tr>\s*<td data-col="id"[^>]*><a [^>]*>{re.escape(cred_id)}</a>.*?</tr>',
                    html, re.S)
    assert row, f"no row for {cred_id}"
    b = re.search(r'<span class="badge badge-(\w+)" data-status="[^"]*"[^>]*>'
                  r'<span aria-hidden="true">[^<]*</span> ([^<]+)</span>', row.group(0))
    return f"{b.group(1)}:{b.group(2)}"


def kubeconfig(ca: CertAuthority, user: str) -> str:
    return KUBECONFIG.replace("certificate-authority-data: Q0E=",
                              f"certificate-authority-data: {_b64(ca.pem)}") \
        .replace("user: {token: CANARY-kube-token-7731}", f"user: {user}")


def test_warnings_and_failures_get_different_badges(as_role, vault):
    c = as_role("editor")
    ca = CertAuthority("test-ca")
    exec_kc = kubeconfig(ca, "{exec: {command: aws, apiVersion: "
                             "client.authentication.k8s.io/v1}}")
    assert create(c, "kubeconfig", "eks", v_kubeconfig=exec_kc).status_code == 302
    assert create(c, "kubeconfig", "kind-ok",
                  v_kubeconfig=kubeconfig(ca, "{token: CANARY-tok-1}")).status_code == 302
    cert, key = ca.issue("ci", days=3)  # expires soon: works today
    soon = kubeconfig(ca, "{client-certificate-data: %s, client-key-data: %s}" % (
        _b64(cert), _b64(key)))
    assert create(c, "kubeconfig", "soon", v_kubeconfig=soon).status_code == 302
    assert create(c, "kubeconfig", "expired",
                  v_kubeconfig=kubeconfig(ca, "{token: CANARY-tok-2}")).status_code == 302
    with audit.unit(vault.factory) as s:  # what the nightly re-check writes once a date passes
        cred = svc.get_credential(s, "default", "expired")
        status.set_conditions(cred, [Condition("Valid", "False", "Expired",
                                               "the client certificate expired on 2026-01-01")])
    html = page_of(c, "/")
    assert badge(html, "eks") == "warn:Warning"
    assert badge(html, "soon") == "warn:Warning"
    assert badge(html, "expired") == "bad:Issues found"
    assert badge(html, "kind-ok") == "muted:No status"
    detail = page_of(c, "/credentials/default/eks")
    assert "exec plugin" in detail and "Issues found" not in detail
    # the status filter offers the badge words and finds warnings only
    assert '<option value="Warning"' in html and ">Ready</option>" in html
    warned = page_of(c, "/?status=Warning")
    assert "eks" in warned and "soon" in warned and "expired" not in warned


def _b64(text: str) -> str:
    import base64
    return base64.b64encode(text.encode()).decode()


def test_summary_tells_a_warning_from_a_failure():
    valid_exec = Condition("Valid", "True", "ExecPlugin", "runs an exec plugin").to_dict()
    untestable = Condition("Reachable", "Unknown", "NotTestable", "exec plugin").to_dict()
    expired = Condition("Valid", "False", "Expired", "expired").to_dict()
    soon = Condition("Expiring", "True", "ExpiresSoon", "expires in 3 days").to_dict()
    refused = Condition("Reachable", "False", "AuthenticationFailed", "rejected").to_dict()
    assert status.summarize([valid_exec, untestable]) == ("Warning", "runs an exec plugin")
    assert status.summarize([expired]) == ("Issues found", "expired")
    assert status.summarize([Condition("Valid", "True", "WellFormed", "ok").to_dict(), soon]) \
        == ("Warning", "expires in 3 days")
    assert status.summarize([valid_exec, refused])[0] == "Issues found"


def test_key_value_credentials_show_keys_and_change_one_pair(as_role, vault):
    c = as_role("editor")
    assert create(c, "generic", "env").status_code == 302
    detail = page_of(c, "/credentials/default/env")
    assert re.search(r'<ul class="keys"[^>]*><li class="mono">API_KEY</li><li class="mono">'
                     r'API_URL</li></ul>', detail)
    assert "CANARY" not in detail
    form = page_of(c, "/credentials/default/env/secret")
    assert "API_KEY" in form and "CANARY" not in form and "Save version 2" in form
    # change one value: the other pair is untouched
    r = post(c, "/credentials/default/env/secret", {"pair_key": "API_KEY",
                                                     "pair_value": "CANARY-new-key"})
    assert r.status_code == 302
    # add one, then remove one
    assert post(c, "/credentials/default/env/secret",
                {"pair_key": "REGION", "pair_value": "eu-1"}).status_code == 302
    assert post(c, "/credentials/default/env/secret", {"remove": "API_URL"}).status_code == 302
    with vault.factory() as s:
        cred = svc.get_credential(s, "default", "env")
        _, values = svc.current_values(s, vault.barrier, cred)
        assert cred.current_version == 4
    assert values["values"] == {"API_KEY": "CANARY-new-key", "REGION": "eu-1"}
    assert "removed API_URL" in page_of(c, "/credentials/default/env")
    # a bad key is refused with the key kept, the value never echoed
    r = post(c, "/credentials/default/env/secret", {"pair_key": "9bad", "pair_value": "CANARY-x"})
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and 'id="error-summary"' in html
    assert 'value="9bad"' in html and "CANARY" not in html
    # an existing key with an empty value asks for the value
    r = post(c, "/credentials/default/env/secret", {"pair_key": "REGION", "pair_value": ""})
    assert r.status_code == 422 and "enter the new value of REGION" in r.get_data(as_text=True)
    post(c, "/credentials/default/env/secret", {"remove": "REGION"})
    r = post(c, "/credentials/default/env/secret", {"remove": "API_KEY"})
    assert r.status_code == 422 and "last pair" in r.get_data(as_text=True)
    detail = page_of(c, "/credentials/default/env")
    assert "the key/value pairs are well-formed" in detail


def test_a_rejected_form_keeps_what_was_typed_and_summarizes_errors(as_role):
    c = as_role("editor")
    broken = KUBECONFIG.replace("current-context: ctx", "current-context: [ctx")
    r = create(c, "kubeconfig", "broken", v_kubeconfig=broken)
    html = r.get_data(as_text=True)
    assert r.status_code == 422
    assert 'id="error-summary"' in html and 'tabindex="-1"' in html
    assert html.index('id="error-summary"') < html.index('<form method="post" action="/credentials/new')
    # the pasted kubeconfig is there to fix (the error points at a line in it)
    assert "CANARY-kube-token-7731" in html and "current-context: [ctx" in html
    # single-line secrets are not echoed
    r = create(c, "username_password", "Bad ID!")
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and 'href="#id"' in html and "CANARY-pw-1111" not in html
    assert 'value="alice"' in html
    # an update form never shows the stored value, before or after an error
    assert create(c, "kubeconfig", "kc").status_code == 302
    assert "CANARY" not in page_of(c, "/credentials/default/kc/secret")
    r = post(c, "/credentials/default/kc/secret", {"v_kubeconfig": "not: [yaml"})
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and "not: [yaml" in html and "CANARY" not in html


def test_last_used_agrees_with_recent_runs(as_role, vault):
    c = as_role("editor")
    create(c, "secret_text", "exec-only")
    create(c, "secret_text", "by-run")
    with vault.factory.begin() as s:  # a resolve outside any recorded run (workbench exec)
        svc.get_credential(s, "default", "exec-only").last_used_at = utcnow()
        records.store_run(s, "default", {
            "id": "r-used-1", "status": "success", "pipeline": "deploy",
            "steps": [{"name": "push", "status": "success", "exit_code": 0, "log": ""}],
            "uses": [{"step": "push", "credential_id": "by-run", "version": 1}]})
    exec_only = page_of(c, "/credentials/default/exec-only")
    assert re.search(r'id="last-used">\d{4}-\d\d-\d\d \d\d:\d\d UTC <span class="muted">outside '
                     r'a recorded run', exec_only)
    assert "No recorded run has used this credential. It was last handed out" in exec_only
    by_run = page_of(c, "/credentials/default/by-run")
    assert re.search(r'id="last-used">[^<]+<span class="muted">by a recorded run', by_run)
    assert "r-used-1"[:8] in by_run
    table = page_of(c, "/?cols_set=1&cols=last_used")
    assert "never" not in re.search(r'<a [^>]*>by-run</a>.*?</tr>', table, re.S).group(0)


def test_filters_on_any_column_and_case_insensitive_name_sort(as_role, vault):
    c = as_role("editor")
    for cid, name in (("c1", "beta"), ("c2", "Alpha"), ("c3", "alpha two"), ("c4", "Gamma")):
        create(c, "secret_text", cid, name=name, description=f"{cid} for deploys")
    add_reference(vault, "c4")
    html = page_of(c, "/?sort=name&cols_set=1&cols=name")
    names = re.findall(r'<td data-col="name"[^>]*>([^<]*)</td>', html)
    assert names == ["Alpha", "alpha two", "beta", "Gamma"]
    def ids(path):
        return re.findall(r'<td data-col="id"[^>]*><a [^>]*>([^<]+)</a>', page_of(c, path))
    assert ids("/?name=ALPHA&sort=id") == ["c2", "c3"]
    assert ids("/?used_by=used") == ["c4"]
    assert sorted(ids("/?used_by=unused")) == ["c1", "c2", "c3"]
    assert ids("/?created_by=nobody") == []
    assert sorted(ids("/?created_by=editor1&last_used=never")) == ["c1", "c2", "c3", "c4"]
    today = utcnow().date()
    assert len(ids(f"/?created_from={today}&created_to={today}")) == 4
    assert ids(f"/?created_from={today + timedelta(days=1)}") == []
    # an active filter shows as a chip that removes it; a bad date says why
    html = page_of(c, "/?name=alpha")
    assert 'aria-label="Remove filter name: alpha"' in html
    assert "a date like" in page_of(c, "/?created_from=yesterday")
    # the per-row menu for editors, not for viewers
    assert html.count('class="menu"') == 2 and "New version" in html
    assert 'class="menu"' not in page_of(as_role("viewer"), "/")


def test_pages_past_the_end_show_the_last_page(as_role, vault):
    c = as_role("viewer")
    with vault.factory.begin() as s:
        records.store_run(s, "default", {
            "id": "r-exit-128", "status": "failed", "pipeline": "clone",
            "steps": [{"name": "fetch", "status": "failed", "exit_code": 128,
                       "message": "exit code 128", "log": "fatal"}]})
    empty = page_of(c, "/?page=99")
    assert "Page 1 of 1" in empty and "Page 99" not in empty and "No credentials yet" in empty
    runs = page_of(c, "/runs?page=99")
    assert "Page 99" not in runs and "Page 1 of 1" in runs
    assert page_of(c, "/runs/r-exit-128").count("exit code 128") == 1


def test_credential_pages_past_the_end(as_role):
    c = as_role("editor")
    for i in range(3):
        create(c, "secret_text", f"p{i}")
    html = page_of(c, "/?per=25&page=99")
    assert "Page 1 of 1" in html and "p0" in html and "Page 99" not in html


def test_tokens_revoke_asks_first_and_names_are_unique(as_role):
    c = as_role("editor")
    assert post(c, "/admin/tokens", {"name": "ci"}, page="/admin/tokens").status_code == 200
    r = post(c, "/admin/tokens", {"name": "ci"}, page="/admin/tokens")
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and "already exists" in html and 'id="error-summary"' in html
    listing = page_of(c, "/admin/tokens")
    tok_id = re.search(r'/admin/tokens/(\d+)/revoke', listing).group(1)
    confirm = page_of(c, f"/admin/tokens/{tok_id}/revoke")
    assert "<h1>Revoke token “ci”?</h1>" in confirm and ">Cancel</a>" in confirm
    assert "revoked</span>" not in page_of(c, "/admin/tokens")  # asking changed nothing
    assert post(c, f"/admin/tokens/{tok_id}/revoke", {}).status_code == 302
    assert "revoked</span>" in page_of(c, "/admin/tokens")
    # a revoked name may be used again; another user's token is not theirs to see
    assert post(c, "/admin/tokens", {"name": "ci"}, page="/admin/tokens").status_code == 200
    assert as_role("viewer").get(f"/admin/tokens/{tok_id}/revoke").status_code == 404


def test_audit_log_to_the_second_with_an_action_list(as_role):
    create(as_role("editor"), "secret_text", "audited")
    html = page_of(as_role("admin"), "/admin/audit")
    assert re.search(r'<td class="nowrap">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>', html)
    options = re.search(r'<select id="a-action" name="action">(.*?)</select>', html, re.S)
    assert "<option >credential.create</option>" in options.group(1)
    assert "auth.login" in options.group(1)
    filtered = page_of(as_role("admin"), "/admin/audit?action=credential.create")
    assert "auth.login</td>" not in filtered and "credential.create</td>" in filtered


def test_breadcrumbs_name_the_workspace_and_no_script_delete_page(as_role, vault):
    add_scopes(vault, "team-a")
    c = as_role("editor")
    create(c, "secret_text", "crumb", workspace="team-a")
    for path in ("/credentials/team-a/crumb", "/credentials/team-a/crumb/edit",
                 "/credentials/team-a/crumb/secret", "/credentials/team-a/crumb/delete"):
        html = page_of(c, path)
        assert re.search(r'<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Credentials'
                         r'</a> / <a href="/\?workspace=team-a">team-a</a> / ', html), path
    html = page_of(c, "/credentials/team-a/crumb/delete")
    assert '<h1 id="delete-title">Delete crumb?</h1>' in html
    assert re.search(r'<a class="button secondary" href="/credentials/team-a/crumb">Cancel</a>',
                     html)
    assert "data-close" not in html


def test_add_a_pipeline_source_from_the_page(as_role, tmp_path, job_worker):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "ship.yaml").write_text(
        "name: ship\nsteps:\n  - name: push\n    run: echo hi\n")
    editor = as_role("editor")
    assert "Add pipeline source" in page_of(editor, "/pipelines")
    r = post(editor, "/pipelines/sources/new", {"name": "bad name!", "url": "https://x/y.git"},
             page="/pipelines/sources/new")
    assert r.status_code == 422 and 'id="error-summary"' in r.get_data(as_text=True)
    assert 'value="https://x/y.git"' in r.get_data(as_text=True)
    admin = as_role("admin")
    r = post(admin, "/pipelines/sources/new", {"name": "here", "kind": "local",
                                                "url": str(tmp_path)},
             page="/pipelines/sources/new")
    assert r.status_code == 302
    html = wait_for_sync(admin)
    assert "ship" in html and "here" in html
