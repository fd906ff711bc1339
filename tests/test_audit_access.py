"""Who reads the audit log (issue 16, item 7): one rule for the API and the web page."""
import pytest

from tests.test_web import login
from workbench import accounts
from workbench.audit import SYSTEM

READS = {"admin": True, "auditor": True, "editor": False, "viewer": False}


@pytest.fixture
def auditor(vault, users):
    with vault.factory.begin() as s:
        accounts.create_user(s, SYSTEM, "auditor1", "auditor-password-1", "auditor",
                             must_change=False)
    users["auditor"] = ("auditor1", "auditor-password-1")
    return users


@pytest.mark.parametrize("role", READS)
def test_the_api_and_the_page_agree_on_who_reads_the_audit_log(app, api_as, auditor, role):
    r = api_as(role).get("/audit")
    assert r.status_code == (200 if READS[role] else 403), r.get_json()
    web = app.test_client()
    assert login(web, *auditor[role]).status_code == 302
    page = web.get("/admin/audit")
    assert page.status_code == (200 if READS[role] else 403)
    home = web.get("/").get_data(as_text=True)
    assert ('href="/admin/audit"' in home) == READS[role]


def test_runner_tokens_never_read_the_audit_log(api_as):
    assert api_as("runner").get("/audit").status_code == 403


def test_a_refused_read_is_itself_audited(api_as, auditor):
    assert api_as("viewer").get("/audit").status_code == 403
    events = api_as("admin").get("/audit?action=audit.read").get_json()["items"]
    assert [(e["actor"], e["outcome"]) for e in events] == [("viewer1", "denied")]


def test_an_auditor_reads_but_changes_nothing(api_as, auditor):
    api = api_as("auditor")
    assert api.get("/credentials").status_code == 200
    assert api.post("/credentials", {"id": "x", "type": "secret_text",
                                     "values": {"secret": "abcdefgh"}}).status_code == 403
    assert api.get("/users").status_code == 403


@pytest.mark.parametrize("role", READS)
def test_a_credential_page_shows_its_audit_trail_by_the_same_rule(app, api_as, auditor, role):
    assert api_as("editor").post("/credentials", {"id": "c1", "type": "secret_text",
                                                  "values": {"secret": "abcdefgh"}}
                                                 ).status_code == 201
    web = app.test_client()
    assert login(web, *auditor[role]).status_code == 302
    page = web.get("/credentials/default/c1").get_data(as_text=True)
    assert ("Audit trail" in page) == READS[role]
    assert ("credential.create" in page) == READS[role]
