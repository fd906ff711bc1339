"""The web workbench's rough edges (issue 20) in a real Chromium: focus, menus, layout, and an
axe-core scan of every page."""
import re

import pytest

from tests.fixtures.axe import axe_scan
from tests.test_e2e_browser import sign_in
from tests.test_web import KUBECONFIG, add_reference

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


def add(live_server, cred_id, type_="secret_text", values=None, workspace="default"):
    from workbench import audit, credentials
    with audit.unit(live_server.vault.factory) as s:
        credentials.create_credential(
            s, live_server.vault.barrier, audit.SYSTEM, workspace=workspace, cred_id=cred_id,
            type=type_, values=values or {"secret": f"CANARY-{cred_id}-value"})


def test_delete_dialog_opens_on_cancel_and_enter_does_not_delete(browser_page, live_server):
    add(live_server, "keep-me")
    page = browser_page
    sign_in(page, live_server.users["editor"])
    page.goto("/credentials/default/keep-me")
    page.get_by_role("link", name="Delete…").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    assert axe_scan(page) == []  # the open dialog too
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    page.goto("/?q=keep-me")
    expect(page.locator('#credentials td[data-col="id"]')).to_have_text(["keep-me"])


def test_a_rejected_kubeconfig_stays_and_focus_moves_to_the_errors(browser_page, live_server):
    page = browser_page
    sign_in(page, live_server.users["editor"])
    page.goto("/credentials/new?type=kubeconfig")
    page.locator("#id").fill("broken-kc")
    pasted = KUBECONFIG.replace("current-context: ctx", "current-context: [ctx")
    page.locator("#v_kubeconfig").fill(pasted)
    page.get_by_role("button", name="Create credential").click()
    summary = page.locator("#error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("There is a problem")
    expect(page.locator("#v_kubeconfig")).to_have_value(pasted)
    # the summary links to the field
    summary.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(r"#v_kubeconfig$"))


def test_row_menu_and_one_pair_update(browser_page, live_server):
    add(live_server, "pairs", "generic", {"values": {"API_URL": "CANARY-u", "API_KEY": "CANARY-k"}})
    page = browser_page
    sign_in(page, live_server.users["editor"])
    page.goto("/?q=pairs")
    menu = page.locator("details.menu").first
    menu.get_by_label("Actions for pairs").click()
    expect(menu.get_by_role("link", name="Edit")).to_be_visible()
    # key/value credentials have no connectivity test: the menu does not offer one
    expect(menu.get_by_role("button", name="Test connection")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(menu.get_by_role("link", name="Edit")).to_be_hidden()
    menu.get_by_label("Actions for pairs").click()
    menu.get_by_role("link", name="New version").click()
    expect(page.get_by_role("heading", name="Key/value pairs of pairs")).to_be_visible()
    expect(page.locator("#pairs tbody td.mono")).to_have_text(["API_KEY", "API_URL"])
    page.get_by_role("link", name="Change the value of API_URL").click()
    expect(page.locator("#pair_key")).to_have_value("API_URL")
    page.locator("#pair_value").fill("CANARY-u2")
    page.get_by_role("button", name="Save version 2").click()
    expect(page.get_by_text("Saved version 2 of pairs: changed API_URL.")).to_be_visible()
    expect(page.locator("ul.keys li")).to_have_text(["API_KEY", "API_URL"])
    assert "CANARY" not in page.content()


def test_tables_fit_at_1440_px_and_the_phone_header_is_compact(browser_page, live_server,
                                                                 screenshot):
    add(live_server, "a-fairly-long-credential-identifier-for-layout",
        values={"secret": "CANARY-layout-1"})
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    sign_in(page, live_server.users["admin"])
    every = "&".join(f"cols={c}" for c in ("name", "description", "type", "status", "used_by",
                                           "created_by", "workspace", "created_at",
                                           "last_used"))
    page.goto(f"/?cols_set=1&{every}")
    expect(page.locator("#credentials thead th")).to_have_count(11)
    wrap = page.locator(".table-wrap").first
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), "the table is cut off"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1440
    screenshot(page, "20-table-1440")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    screenshot(page, "21-phone-header")
    header = page.locator("header.top").bounding_box()
    assert header["height"] <= 0.12 * 844, header
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for path in ("/credentials/default/a-fairly-long-credential-identifier-for-layout",
                 "/pipelines", "/runs", "/admin/audit", "/admin/tokens"):
        page.goto(path)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, path


def test_token_revoke_asks_first(browser_page, live_server):
    page = browser_page
    sign_in(page, live_server.users["viewer"])
    page.goto("/admin/tokens")
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token “laptop” created")).to_be_visible()
    page.get_by_role("link", name="Revoke laptop…").click()
    expect(page.get_by_role("heading", name="Revoke token “laptop”?")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_role("link", name="Revoke laptop…")).to_be_visible()
    page.get_by_role("link", name="Revoke laptop…").click()
    page.get_by_role("button", name="Revoke token").click()
    expect(page.get_by_text("Token laptop revoked.")).to_be_visible()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="Token “laptop” created")).to_be_visible()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#error-summary")).to_be_focused()
    expect(page.locator("#error-summary")).to_contain_text("already exists")


# one example URL per page that takes arguments (pages without arguments are found alone)
def _samples(live_server) -> dict:
    from workbench import access, accounts, audit
    from workbench.pipeline import records
    for type_, cid, values in (
            ("generic", "ax-pairs", {"values": {"A_KEY": "CANARY-ax-1"}}),
            ("secret_text", "ax-used", None), ("secret_text", "ax-free", None)):
        add(live_server, cid, type_, values)
    pipeline_id = add_reference(live_server.vault, "ax-used", pipeline="ax-deploy")
    with live_server.vault.factory.begin() as s:
        records.store_run(s, "default", {
            "id": "ax-run-1", "status": "failed", "pipeline": "ax-deploy",
            "steps": [{"name": "push", "status": "failed", "exit_code": 128,
                       "message": "exit code 128", "log": "fatal: " + "x" * 400}],
            "uses": [{"step": "push", "credential_id": "ax-used", "version": 1}]})
    with audit.unit(live_server.vault.factory) as s:
        tok = accounts.create_token(s, audit.SYSTEM, "ax-token", username="admin1").token.id
        access.grant(s, audit.SYSTEM, "default", "viewer1", "editor")  # a members table
    return {"web.credential": ["/credentials/default/ax-used", "/credentials/default/ax-pairs"],
            "web.edit_credential": ["/credentials/default/ax-free/edit"],
            "web.update_secret": ["/credentials/default/ax-free/secret",
                                  "/credentials/default/ax-pairs/secret"],
            "web.delete_credential": ["/credentials/default/ax-used/delete",
                                      "/credentials/default/ax-free/delete"],
            "web.pipeline": [f"/pipelines/{pipeline_id}?workspace=default"],
            "web.run": ["/runs/ax-run-1"],
            "web.revoke_token": [f"/admin/tokens/{tok}/revoke"],
            "web.scope_page": ["/admin/scopes/default"]}


def test_every_page_has_no_serious_accessibility_violation(browser_page, live_server):
    page = browser_page
    rules = [r for r in live_server.app.url_map.iter_rules()
             if r.endpoint.startswith("web.") and "GET" in r.methods]
    samples = _samples(live_server)
    missing = [r.endpoint for r in rules if r.arguments and r.endpoint not in samples]
    assert not missing, f"add an example URL to _samples for {missing}"
    urls = [r.rule for r in rules if not r.arguments and r.endpoint != "web.login"]
    urls += [u for r in rules if r.arguments for u in samples[r.endpoint]]
    # forms in every state: each type's form, and rejected ones with their error summary
    urls += [f"/credentials/new?type={t}" for t in ("kubeconfig", "generic", "secret_file")]
    urls += ["/credentials/nowhere/none", "/?page=99", "/?status=Warning&name=ax"]
    page.goto("/login")
    axe_scan(page)
    sign_in(page, live_server.users["admin"])
    for phone in (False, True):
        if phone:
            page.set_viewport_size({"width": 390, "height": 844})
        for url in urls:
            page.goto(url)
            assert axe_scan(page) == [], url
    page.goto("/credentials/new?type=username_password")
    page.get_by_role("button", name="Create credential").click()
    expect(page.locator("#error-summary")).to_be_focused()
    page.goto("/?q=ax-used")
    page.get_by_label("Actions for ax-used").click()
    assert axe_scan(page) == []
    page.goto("/credentials/default/ax-used")
    page.get_by_role("link", name="Delete…").click()
    assert axe_scan(page) == []
    scanned = {re.sub(r"^https?://[^/]+", "", u).removesuffix(" (now)") for u in page.axe.scanned}
    assert set(urls) <= scanned, set(urls) - scanned
