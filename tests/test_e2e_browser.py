"""The web workbench in a real Chromium: create every type, search, sort, rename, update, delete."""
import re

import pytest

from tests.test_web import KUBECONFIG, SSH_KEY, add_reference

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

# what the forms receive per type: text fields, file uploads (field → (name, bytes)), map rows
FORMS = {
    "username_password": ({"v_username": "alice", "v_password": "CANARY-b-pw-1"}, {}, None),
    "secret_text": ({"v_secret": "CANARY-b-st-2"}, {}, None),
    "kubeconfig": ({}, {"v_kubeconfig_file": ("config", KUBECONFIG.encode())}, None),
    "docker_registry": ({"v_registry": "127.0.0.1:5000", "v_username": "bob",
                         "v_password": "CANARY-b-reg-3"}, {}, None),
    "ssh_private_key": ({"v_username": "git", "v_private_key": SSH_KEY,
                         "v_passphrase": "CANARY-b-pp-4"}, {}, None),
    "access_key": ({"v_access_key_id": "AKIAEXAMPLE", "v_secret_access_key": "CANARY-b-ak-5"},
                   {}, None),
    "generic": ({}, {}, [("API_URL", "CANARY-b-url"), ("DROP_ME", "x-drop"),
                         ("API_KEY", "CANARY-b-gen-6")]),
    "secret_file": ({"v_filename": "creds.json"},
                    {"v_content_file": ("creds.json", b'{"k": "CANARY-b-file-7"}')}, None),
}

FORMS_IDS = [t.replace("_", "-") for t in FORMS]


def sign_in(page, who):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("Username").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=re.compile("^Credentials"))).to_be_visible()


def create(page, type_name, cred_id, description=""):
    page.goto("/")
    page.get_by_role("link", name="New credential").click()
    label = {"username_password": "Username with password", "secret_text": "Secret text",
             "kubeconfig": "Kubeconfig", "docker_registry": "Docker registry",
             "ssh_private_key": "SSH private key", "access_key": "Access key",
             "generic": "Key/value pairs", "secret_file": "Secret file"}[type_name]
    page.locator(".type-card", has_text=label).click()
    page.get_by_label("ID", exact=False).first.fill(cred_id)
    page.locator("#description").fill(description)
    fields, files, pairs = FORMS[type_name]
    for name, value in fields.items():
        page.locator(f'[name="{name}"]').fill(value)
    for name, (fname, data) in files.items():
        page.locator(f'[name="{name}"]').set_input_files(
            {"name": fname, "mimeType": "application/octet-stream", "buffer": data})
    if pairs:
        box = page.locator("fieldset.kv")
        box.get_by_role("button", name="Add a pair").click()
        rows = box.locator(".kv-row")
        expect(rows).to_have_count(3)
        for i, (k, v) in enumerate(pairs):
            rows.nth(i).get_by_label("Key").fill(k)
            rows.nth(i).get_by_label("Value").fill(v)
        rows.nth(1).get_by_role("button", name="Remove").click()
        expect(rows).to_have_count(2)
    page.get_by_role("button", name="Create credential").click()
    expect(page.get_by_role("status").filter(has_text=f"Credential {cred_id} created.")) \
        .to_be_visible()
    expect(page.locator("#credentials tbody tr").first.locator('td[data-col="id"]')) \
        .to_have_text(cred_id)


def ids_in_table(page):
    return page.locator('#credentials tbody td[data-col="id"]').all_inner_texts()


def test_editor_and_admin_workflow(browser_page, live_server, screenshot):
    page = browser_page
    page.goto("/login")
    screenshot(page, "01-login")
    sign_in(page, live_server.users["editor"])
    for type_name in FORMS:
        create(page, type_name, type_name.replace("_", "-"), description=f"{type_name} for CI")
    screenshot(page, "02-credentials-table")
    assert len(ids_in_table(page)) == len(FORMS)
    page.goto("/credentials/new")
    screenshot(page, "03-new-choose-type")
    page.goto("/credentials/new?type=username_password")
    page.get_by_label("ID", exact=False).first.fill("Not Valid!")
    page.locator('[name="v_username"]').fill("carol")
    page.locator('[name="v_password"]').fill("CANARY-b-typed")
    page.get_by_role("button", name="Create credential").click()
    expect(page.locator("#err-id")).to_contain_text("ID must be")
    expect(page.locator('[name="v_username"]')).to_have_value("carol")
    expect(page.locator('[name="v_password"]')).to_have_value("")
    screenshot(page, "04-new-form-error")

    # search, filter, sort
    page.goto("/")
    page.get_by_label("Search").fill("ssh")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"q=ssh"))
    assert ids_in_table(page) == ["ssh-private-key"]
    page.goto("/")
    page.get_by_role("combobox", name="Type").select_option("docker_registry")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"type=docker_registry"))
    assert ids_in_table(page) == ["docker-registry"]
    page.goto("/")
    page.get_by_role("link", name=re.compile("^Sort by ID")).click()
    expect(page).to_have_url(re.compile(r"sort=id"))
    assert ids_in_table(page) == sorted(FORMS_IDS)
    page.get_by_role("link", name=re.compile("^Sort by ID")).click()
    expect(page).to_have_url(re.compile(r"sort=-id"))
    assert ids_in_table(page) == sorted(FORMS_IDS, reverse=True)
    # choose columns: remembered across visits
    page.goto("/")
    page.locator("details.columns summary").click()
    page.get_by_role("checkbox", name="Created by").uncheck()
    page.get_by_role("button", name="Save columns").click()
    page.goto("/")
    expect(page.locator('th[data-col="created_by"]')).to_have_count(0)
    expect(page.locator('th[data-col="type"]')).to_have_count(1)

    # rename; the ID is read-only and a forged change is refused
    page.goto("/credentials/default/secret-text")
    screenshot(page, "05-credential-page")
    page.get_by_role("link", name="Rename").click()
    id_box = page.locator("#id")
    expect(id_box).not_to_be_editable()
    page.locator("#name").fill("Deploy token")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Credential secret-text saved.")).to_be_visible()
    expect(page.locator(".subtitle")).to_contain_text("Deploy token")
    page.get_by_role("link", name="Rename").click()
    screenshot(page, "06-rename")
    page.evaluate("() => { const i = document.getElementById('id'); i.readOnly = false; "
                  "i.value = 'stolen-id'; }")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#err-id")).to_contain_text("cannot be changed")
    page.goto("/?q=stolen")
    assert ids_in_table(page) == []

    # update a secret: version 2
    page.goto("/credentials/default/username-password")
    page.get_by_role("link", name="Update secret").click()
    screenshot(page, "07-update-secret")
    page.locator('[name="v_password"]').fill("CANARY-b-pw-new")
    page.get_by_role("button", name="Save version 2").click()
    expect(page.get_by_text("Saved version 2 of username-password.")).to_be_visible()
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    expect(page.locator("#versions tbody tr").first).to_contain_text("current")
    assert "CANARY" not in page.content()

    # delete an unreferenced credential after a simple confirmation
    page.get_by_role("button", name="Test connection").click()  # no target stored: quick
    expect(page.get_by_text("Testing username-password…")).to_be_visible()
    expect(page.locator("#status")).to_contain_text("NoTarget")  # after Checking…, reloaded
    page.goto("/credentials/default/access-key")
    expect(page.get_by_role("button", name="Test connection")).to_have_count(0)  # no check
    page.get_by_role("link", name="Delete…").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("No pipeline references this credential")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("link", name="Delete…").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("Credential access-key deleted.")).to_be_visible()
    assert "access-key" not in ids_in_table(page)

    # a referenced credential: the dialog lists the pipeline and step; editors cannot force
    add_reference(live_server.vault, "secret-text")
    page.goto("/credentials/default/secret-text")
    expect(page.locator("#used-by")).to_contain_text("deploy")
    page.get_by_role("link", name="Delete…").click()
    expect(dialog).to_contain_text("deploy")
    expect(dialog).to_contain_text("push")
    expect(dialog).to_contain_text("Only an admin can delete")
    screenshot(page, "08-delete-referenced-editor")
    page.goto("/")
    row = page.locator("#credentials tbody tr", has_text="secret-text")
    expect(row.locator('td[data-col="used_by"]')).to_have_text("1 pipeline")
    page.goto("/pipelines")
    page.get_by_role("link", name="deploy").click()
    expect(page.locator("section.step", has_text="push")).to_contain_text("secret-text")
    screenshot(page, "09-pipeline")
    assert page.console_errors == []

    # the admin needs an explicit second confirmation
    page.context.clear_cookies()
    sign_in(page, live_server.users["admin"])
    page.goto("/credentials/default/secret-text")
    page.get_by_role("link", name="Delete…").click()
    force = dialog.get_by_role("button", name="Delete anyway")
    expect(force).to_be_disabled()
    dialog.get_by_label("I understand").check()
    expect(force).to_be_enabled()
    screenshot(page, "10-delete-referenced-admin")
    force.click()
    expect(page.get_by_text("Credential secret-text deleted. 1 reference(s) are now broken.")) \
        .to_be_visible()
    page.goto("/pipelines")
    expect(page.get_by_text("1 dangling reference").first).to_be_visible()
    screenshot(page, "09-pipelines-dangling")
    for path, name in (("/admin/users", "11-admin-users"), ("/admin/audit", "12-audit-log"),
                       ("/admin/tokens", "13-tokens")):
        page.goto(path)
        screenshot(page, name)
    assert "CANARY" not in page.content()
    assert page.console_errors == []


def test_viewer_cannot_change_anything(browser_page, live_server, screenshot):
    from workbench import audit, credentials
    with audit.unit(live_server.vault.factory) as s:
        credentials.create_credential(s, live_server.vault.barrier, audit.SYSTEM,
                                      workspace="default", cred_id="viewer-sees",
                                      type="secret_text", values={"secret": "CANARY-b-v-8"})
    page = browser_page
    sign_in(page, live_server.users["viewer"])
    page.goto("/")
    ids = ids_in_table(page)
    assert "viewer-sees" in ids
    expect(page.get_by_role("link", name="New credential")).to_have_count(0)
    screenshot(page, "14-viewer-table")
    page.goto(f"/credentials/default/{ids[0]}")
    for name in ("Rename", "Update secret", "Delete…"):
        expect(page.get_by_role("link", name=name)).to_have_count(0)
    expect(page.get_by_role("button", name="Test connection")).to_have_count(0)
    # the only form that changes anything is "Sign out"
    expect(page.locator('form[method="post"]')).to_have_count(1)
    for path in ("/credentials/new", f"/credentials/default/{ids[0]}/edit", "/admin/users"):
        assert page.goto(path).status == 403, path
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    screenshot(page, "15-phone-table")
    page.goto(f"/credentials/default/{ids[0]}")
    screenshot(page, "16-phone-credential")


def test_a_page_waiting_on_a_check_reloads_once_when_it_ends(browser_page, live_server):
    """No timed <meta refresh>: the page asks for itself in the background and reloads only
    when the check is over (axe-core, which scans it while it waits, finds nothing)."""
    from workbench import credentials, status
    from workbench.audit import SYSTEM
    vault, page = live_server.vault, browser_page
    with vault.factory.begin() as s:
        c = credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                          cred_id="poll-me", type="secret_text",
                                          values={"secret": "poll-canary-value"})
        status.mark_running(c)
    sign_in(page, live_server.users["viewer"])
    page.goto("/credentials/default/poll-me")
    assert page.locator("[data-poll]").count() == 1
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
    page.evaluate("() => { window.__sameDocument = true; }")
    page.wait_for_timeout(2500)  # a poll while it still runs must not reload the page
    assert page.evaluate("() => window.__sameDocument === true")
    with vault.factory.begin() as s:
        c = credentials.get_credential(s, "default", "poll-me")  # the check ends
        c.conditions = [d for d in c.conditions if d["type"] != status.RUNNING]
    expect(page.locator("[data-poll]")).to_have_count(0, timeout=10_000)
    assert page.evaluate("() => window.__sameDocument === undefined")  # reloaded, once
