"""SSO end to end in Chromium: "Sign in with Test IdP" on the sign-in page, the provider's own
sign-in form (tests/fixtures/oidc_provider.py, on another site: localhost, not 127.0.0.1), and
back to Workbench signed in with the role of the person's groups, or refused."""
from __future__ import annotations

import dataclasses
import re
import threading

import pytest
from werkzeug.serving import make_server

from tests.fixtures.axe import axe_watch
from tests.fixtures.oidc_provider import sso_env
from workbench import create_app

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def sso_server(vault, oidc_provider):
    """Workbench with SSO to the test provider, served on 127.0.0.1 in a thread."""
    oidc_provider.issuer = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    settings = dataclasses.replace(vault.settings, oidc=sso_env(oidc_provider))
    server = make_server("127.0.0.1", 0, create_app(settings, vault=vault), threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    oidc_provider.redirect_uris.add(url + "/sso/callback")  # registered exactly, as at a real one
    thread = threading.Thread(target=server.serve_forever, name="sso-server", daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def page(chromium, sso_server, axe_script):
    """A fresh context (no cookies); axe-core scans every page, the provider's included."""
    ctx = chromium.new_context(base_url=sso_server, viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(10_000)
    axe = axe_watch(ctx, axe_script)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and
            not m.text.startswith("Failed to load resource") else None)
    try:
        yield page
        page.wait_for_function("() => window.__wbAxeDone !== undefined")
        page.evaluate("() => window.__wbAxeDone")
    finally:
        ctx.close()
    assert not errors, errors
    assert axe.scanned and not axe.violations, axe.report()


def through_provider(page, username, screenshot=None):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    if screenshot:
        screenshot(page, "sso-sign-in")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    expect(page).to_have_url(re.compile(r"^http://localhost:\d+/authorize\?"))
    page.get_by_label("Test IdP user").fill(username)
    page.get_by_role("button", name="Continue").click()


def test_sign_in_with_the_provider_lands_signed_in_with_the_mapped_role(page, screenshot):
    through_provider(page, "alice", screenshot)
    expect(page.get_by_role("heading", name=re.compile("^Credentials"))).to_be_visible()
    expect(page.locator(".who .user")).to_have_text("alice")
    expect(page.locator(".who .role")).to_have_text("admin")
    expect(page.get_by_role("link", name="Users")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))

    through_provider(page, "dave")  # in "dev": an editor, who sees no admin pages
    expect(page.locator(".who .user")).to_have_text("dave")
    expect(page.locator(".who .role")).to_have_text("editor")
    expect(page.get_by_role("link", name="Users")).to_have_count(0)


def test_a_person_in_no_mapped_group_is_refused(page, screenshot):
    through_provider(page, "mallory")
    expect(page.get_by_role("heading", name="Sign-in refused")).to_be_visible()
    screenshot(page, "sso-refused")
    expect(page.get_by_role("alert")).to_contain_text(
        "Your Test IdP account is in no group that has a role in Workbench")
    page.get_by_role("link", name="Back to sign in").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
