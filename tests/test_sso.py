"""Sign-in through an OpenID Connect provider (tests/fixtures/oidc_provider.py, a real HTTP
server): accounts created at first sign-in, roles from groups, and every forged, tampered or
misdirected answer refused."""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import time

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlalchemy import select

from tests.fixtures.oidc_provider import b64url, sso_env
from tests.test_web import csrf
from workbench import create_app, sso
from workbench.config import Settings
from workbench.errors import ConfigError
from workbench.models import AuditEvent, User
from workbench.sso import SsoIdentity


def make_app(vault, provider=None, **kw):
    oidc = sso_env(provider, **kw) if provider else {}
    settings = dataclasses.replace(vault.settings, oidc=oidc)
    return create_app(settings, vault=vault)


@pytest.fixture
def sso_client(vault, oidc_provider):
    return make_app(vault, oidc_provider).test_client()


def start(client, next_path=None):
    """Click "Sign in with …": the redirect to the provider's authorize endpoint."""
    r = client.get("/sso/login", query_string={"next": next_path} if next_path else None)
    assert r.status_code == 302, r.data
    return r.headers["Location"]


def at_provider(authorize_url, username):
    """The person signs in at the provider, which redirects back with a code."""
    r = requests.post(authorize_url, data={"username": username}, allow_redirects=False,
                      timeout=10)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def sign_in(client, provider, username, next_path=None):
    back = at_provider(start(client, next_path), username)
    assert back.startswith("http://localhost/sso/callback?")
    return client.get(back)


def user(vault, name):
    with vault.factory() as s:
        return s.scalar(select(User).where(User.username == name))


def events(vault, action):
    with vault.factory() as s:
        return [(e.actor, e.outcome, e.target, e.details) for e in
                s.scalars(select(AuditEvent).where(AuditEvent.action == action)
                          .order_by(AuditEvent.id))]


def test_the_button_is_shown_only_when_a_provider_is_configured(vault, oidc_provider):
    plain = make_app(vault).test_client()
    assert b"Sign in with" not in plain.get("/login").data
    assert plain.get("/sso/login").status_code == 404
    page = make_app(vault, oidc_provider).test_client().get("/login").data.decode()
    assert "Sign in with Test IdP" in page and 'href="/sso/login"' in page


def test_first_sign_in_creates_the_user_with_the_role_of_their_group(vault, oidc_provider,
                                                                     sso_client):
    r = sign_in(sso_client, oidc_provider, "alice")
    assert r.status_code == 302 and r.headers["Location"] == "/"
    page = sso_client.get("/").data.decode()
    assert re.search(r'<a class="user"[^>]*>alice</a>', page) and "role-admin" in page
    alice = user(vault, "alice")
    assert alice.role == "admin" and alice.password_hash == sso.NO_PASSWORD
    with vault.factory() as s:
        ident = s.scalar(select(SsoIdentity).where(SsoIdentity.user_id == alice.id))
    assert (ident.issuer, ident.subject) == (oidc_provider.issuer, "sub-alice-1")
    # state, nonce and an S256 PKCE challenge went out; the verifier came back to the token call
    sent = oidc_provider.authorize_requests[-1]
    assert sent["state"] and sent["nonce"] and sent["code_challenge_method"] == "S256"
    assert oidc_provider.token_requests[-1]["code_verifier"]
    assert events(vault, "user.create") == [("sso:Test IdP", "ok", "alice",
                                             {"role": "admin", "via": "sso"})]
    assert events(vault, "auth.sso") == [("alice", "ok", "alice", {
        "provider": "Test IdP", "role": "admin", "groups": ["ops", "everyone"]})]


def test_an_sso_user_cannot_sign_in_with_a_password(vault, oidc_provider, sso_client):
    sign_in(sso_client, oidc_provider, "alice")
    other = make_app(vault, oidc_provider).test_client()
    for password in (sso.NO_PASSWORD, "alice-password-1"):
        r = other.post("/login", data={"username": "alice", "password": password,
                                       "csrf_token": csrf(other)})
        assert r.status_code == 401 and b"Wrong username or password" in r.data
    assert other.get("/").status_code == 302


def test_the_last_active_admin_is_not_demoted_by_the_provider(vault, oidc_provider,
                                                               sso_client):
    sign_in(sso_client, oidc_provider, "alice")
    oidc_provider.people["alice"]["groups"] = ["dev"]
    again = make_app(vault, oidc_provider).test_client()
    assert sign_in(again, oidc_provider, "alice").status_code == 302  # signed in, still admin
    assert user(vault, "alice").role == "admin"
    assert events(vault, "user.role") == [("alice", "denied", "alice", {
        "role": "editor", "was": "admin", "via": "sso", "reason": "last active admin"})]


def test_an_sso_account_has_no_password_to_reset(vault, oidc_provider, sso_client, api_as):
    sign_in(sso_client, oidc_provider, "dave")
    r = api_as("admin").post("/users/dave/password", {"password": "a-long-new-password-9"})
    assert r.status_code == 422 and "single sign-on" in r.get_json()["error"]["message"]
    assert user(vault, "dave").password_hash == sso.NO_PASSWORD


def test_the_role_is_derived_again_at_each_sign_in(vault, oidc_provider, sso_client, users):
    sign_in(sso_client, oidc_provider, "alice")  # users: admin1 stays an admin
    oidc_provider.people["alice"]["groups"] = ["dev"]
    again = make_app(vault, oidc_provider).test_client()
    assert sign_in(again, oidc_provider, "alice").status_code == 302
    assert user(vault, "alice").role == "editor"
    assert "role-editor" in again.get("/").data.decode()
    assert events(vault, "user.role") == [("alice", "ok", "alice",
                                           {"role": "editor", "was": "admin", "via": "sso"})]
    # out of every mapped group: refused, and nothing about the account changes
    oidc_provider.people["alice"]["groups"] = ["interns"]
    third = make_app(vault, oidc_provider).test_client()
    assert sign_in(third, oidc_provider, "alice").status_code == 403
    assert user(vault, "alice").role == "editor"


def test_a_user_in_no_mapped_group_is_refused_with_a_clear_page(vault, oidc_provider,
                                                                 sso_client):
    r = sign_in(sso_client, oidc_provider, "mallory")
    assert r.status_code == 403
    page = r.data.decode()
    assert "Sign-in refused" in page
    assert "Your Test IdP account is in no group that has a role in Workbench" in page
    assert user(vault, "mallory") is None
    assert sso_client.get("/").status_code == 302
    assert events(vault, "auth.sso") == [("anonymous", "denied", "mallory", {
        "provider": "Test IdP", "reason": "no mapped group"})]


def test_a_star_rule_gives_everyone_of_the_provider_a_role(vault, oidc_provider):
    client = make_app(vault, oidc_provider, roles="ops=admin,*=viewer").test_client()
    assert sign_in(client, oidc_provider, "mallory").status_code == 302
    assert user(vault, "mallory").role == "viewer"


def test_a_nested_groups_claim_and_an_es256_token(vault, oidc_provider):
    oidc_provider.alg = "ES256"
    oidc_provider.tamper = lambda p, c: p.sign(
        {**{k: v for k, v in c.items() if k != "groups"}, "realm": {"roles": ["dev"]}})
    client = make_app(vault, oidc_provider, groups_claim="realm.roles").test_client()
    assert sign_in(client, oidc_provider, "dave").status_code == 302
    assert user(vault, "dave").role == "editor"


def _resigned_payload(p, c):
    """A real signature over the real claims, with the payload swapped for an admin's groups."""
    head, _, sig = p.sign(c).split(".")
    return ".".join([head, b64url(json.dumps({**c, "groups": ["ops"]}).encode()), sig])


def _alg_none(p, c):
    return ".".join([b64url(b'{"alg":"none"}'), b64url(json.dumps(c).encode()), ""])


def _hs256_with_client_secret(p, c):
    return jwt.encode({"alg": "HS256"}, c, OctKey.import_key(p.client_secret))


def _key_not_in_jwks(p, c):
    return p.sign(c, key=RSAKey.generate_key(2048, parameters={"kid": "rs-1"}))


def _set(**claims):
    def tamper(p, c):
        c.update(claims)
        for k in [k for k, v in claims.items() if v is None]:
            del c[k]
    return tamper


TAMPERED = {  # what the provider sends → why it is refused (the audit row's reason)
    "wrong audience": (_set(aud="another-client"), "Invalid claim: 'aud'"),
    "another client's token naming us as azp": (_set(aud="another-client", azp="workbench-test"),
                                                "Invalid claim: 'aud'"),
    "tampered payload": (_resigned_payload, "bad_signature"),
    "alg none": (_alg_none, "unsupported_algorithm"),
    "HS256 keyed with the client secret": (_hs256_with_client_secret, "unsupported_algorithm"),
    "signed by a key not in the JWKS": (_key_not_in_jwks, "bad_signature"),
    "wrong issuer": (_set(iss="https://idp.example.com"), "Invalid claim: 'iss'"),
    "expired": (_set(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "expired_token"),
    "wrong nonce": (_set(nonce="not-the-one-sent"), "Invalid claim: 'nonce'"),
    "no nonce": (_set(nonce=None), "Missing claim: 'nonce'"),
    "no subject": (_set(sub=None), "Missing claim: 'sub'"),
}


@pytest.mark.parametrize("tamper,reason", TAMPERED.values(), ids=TAMPERED.keys())
def test_an_id_token_that_does_not_verify_is_refused(vault, oidc_provider, sso_client, tamper,
                                                     reason):
    oidc_provider.people["mallory"]["groups"] = ["ops"]  # would be an admin if it verified
    oidc_provider.tamper = tamper
    r = sign_in(sso_client, oidc_provider, "mallory")
    assert r.status_code == 401
    assert "could not be verified, so you are not signed in" in r.data.decode()
    assert oidc_provider.tamper is None  # the provider did issue the tampered token
    assert sso_client.get("/").status_code == 302
    assert user(vault, "mallory") is None
    [(actor, outcome, _, details)] = events(vault, "auth.sso")
    assert (actor, outcome, details["provider"]) == ("anonymous", "denied", "Test IdP")
    assert reason in details["reason"]


def test_a_callback_from_another_browser_is_refused(vault, oidc_provider, sso_client):
    """State: a code obtained by someone else's flow cannot be pushed into this session."""
    back = at_provider(start(make_app(vault, oidc_provider).test_client()), "alice")
    r = sso_client.get(back)
    assert r.status_code == 401 and user(vault, "alice") is None
    assert events(vault, "auth.sso")[0][3]["reason"].startswith("mismatching_state")


def test_a_refusal_at_the_provider_or_a_wrong_client_secret_is_refused(vault, oidc_provider,
                                                                      sso_client):
    authorize = start(sso_client)
    state = dict(p.split("=", 1) for p in authorize.split("?", 1)[1].split("&"))["state"]
    r = sso_client.get("/sso/callback", query_string={"error": "access_denied", "state": state})
    assert r.status_code == 401
    wrong = make_app(vault, oidc_provider, client_secret="not-the-secret").test_client()
    assert sign_in(wrong, oidc_provider, "alice").status_code == 401
    assert [e[3]["reason"].split(":")[0] for e in events(vault, "auth.sso")] == [
        "access_denied", "invalid_client"]
    assert user(vault, "alice") is None


def test_a_local_account_of_the_same_name_is_not_taken_over(vault, oidc_provider, sso_client,
                                                            users):
    oidc_provider.people["admin1"] = {"sub": "sub-x", "groups": ["ops"], "email": "x@e.test"}
    r = sign_in(sso_client, oidc_provider, "admin1")
    assert r.status_code == 403
    assert "account named &#39;admin1&#39; already exists and is not linked" in r.data.decode()
    assert sso_client.get("/").status_code == 302


def test_a_disabled_sso_user_is_refused(vault, oidc_provider, sso_client):
    sign_in(sso_client, oidc_provider, "dave")
    with vault.factory.begin() as s:
        s.scalar(select(User).where(User.username == "dave")).disabled = True
    r = sign_in(make_app(vault, oidc_provider).test_client(), oidc_provider, "dave")
    assert r.status_code == 403 and "disabled" in r.data.decode()


@pytest.mark.parametrize("asked,landed", [("/runs", "/runs"), ("//evil.example/x", "/"),
                                          ("https://evil.example/", "/")])
def test_next_is_kept_only_for_paths_of_this_site(vault, oidc_provider, sso_client, asked,
                                                 landed):
    assert sign_in(sso_client, oidc_provider, "dave", asked).headers["Location"] == landed


def test_an_issuer_that_does_not_match_its_discovery_document_is_not_used(vault, oidc_provider,
                                                                          sso_client):
    oidc_provider.discovery_overrides = {"issuer": "https://idp.example.com"}
    r = sso_client.get("/sso/login")
    assert r.status_code == 502 and "Test IdP is not available" in r.data.decode()


def test_no_secret_of_the_flow_is_logged_or_audited(vault, oidc_provider, sso_client, caplog):
    caplog.set_level(logging.DEBUG)
    sign_in(sso_client, oidc_provider, "alice")
    sent = oidc_provider.token_requests[-1]
    audit_text = json.dumps(events(vault, "auth.sso") + events(vault, "user.create"))
    for secret in (oidc_provider.client_secret, sent["code_verifier"], sent["code"]):
        assert secret not in caplog.text and secret not in audit_text
    assert oidc_provider.client_secret not in repr(sso_client.application.extensions)


# settings


def test_roles_mapping_is_parsed_and_checked():
    assert sso.parse_roles(" ops = admin , dev=editor,*=viewer") == (
        ("ops", sso.Grant("admin")), ("dev", sso.Grant("editor")), ("*", sso.Grant("viewer")))
    assert sso.parse_roles("ops=team-a:admin,*=viewer") == (
        ("ops", sso.Grant("admin", "team-a")), ("*", sso.Grant("viewer")))
    for bad, says in [("", "is required"), ("ops", "is not group=role"),
                      ("ops=root", "one of admin, editor, viewer"),
                      ("ops=team-a:root", "one of admin, editor, viewer")]:
        with pytest.raises(ConfigError, match=says):
            sso.parse_roles(bad)


def test_derive_takes_the_highest_role_of_the_matched_groups():
    rules = sso.parse_roles("ops=admin,dev=editor,*=viewer")
    assert sso.derive(rules, ["dev", "x"]) == sso.Grants("editor", ("dev", "*"))
    assert sso.derive(rules, ["dev", "ops"]).role == "admin"
    assert sso.derive(sso.parse_roles("ops=admin"), ["dev"]) is None


def test_scope_roles_from_groups_are_derived_again_at_each_sign_in(vault, oidc_provider, users,
                                                                    caplog):
    """``group=scope:role``: dave (dev) gets editor on team (so on team/proj), not on sib; his
    instance role is none.  A grant made by hand stays; a scope that does not exist is
    skipped with a warning; leaving the group takes the SSO grant away at the next sign-in."""
    from tests.fixtures.vault import add_scopes
    from workbench import access, scopes
    from workbench.audit import SYSTEM
    add_scopes(vault, "team", "sib")
    with vault.factory.begin() as s:
        scopes.create_scope(s, SYSTEM, "proj", parent="team")
    roles = "ops=admin,dev=team:editor,dev=nowhere:viewer,qa=sib:viewer"
    with caplog.at_level(logging.WARNING, logger="workbench.sso"):
        client = make_app(vault, oidc_provider, roles=roles).test_client()
        assert sign_in(client, oidc_provider, "dave").status_code == 302
    assert "'nowhere', which does not exist: skipped" in caplog.text
    assert user(vault, "dave").role == "none"
    with vault.factory() as s:
        assert [(m.user.username, m.role, m.source) for m in access.members(s, "team")] == [
            ("dave", "editor", "sso")]
    # through the session: a credential in team/proj, but the sibling does not exist for dave
    from tests.test_web import EVERY_TYPE, post
    form = {"type": "secret_text", "id": "db", "workspace": "proj", **EVERY_TYPE["secret_text"]}
    assert post(client, "/credentials/new?type=secret_text", form).status_code == 302
    assert post(client, "/credentials/new?type=secret_text",
                {**form, "workspace": "sib"}).status_code == 422
    assert client.get("/credentials/proj/db").status_code == 200
    assert client.get("/pipelines?workspace=sib").status_code == 404
    assert client.get("/?workspace=sib").status_code == 404
    # an admin gives dave viewer on sib by hand; SSO leaves it alone and moves him to qa
    with vault.factory.begin() as s:
        access.grant(s, SYSTEM, "sib", "dave", "viewer")
    oidc_provider.people["dave"]["groups"] = ["qa"]
    again = make_app(vault, oidc_provider, roles=roles).test_client()
    assert sign_in(again, oidc_provider, "dave").status_code == 302
    with vault.factory() as s:
        assert access.members(s, "team") == []
        assert [(m.role, m.source) for m in access.members(s, "sib")] == [("viewer", "manual")]
    assert again.get("/credentials/proj/db").status_code == 404
    assert ("dave", "ok", "dave", {"via": "sso"}) in events(vault, "scope.revoke")


def test_settings_take_the_secret_from_a_file_and_never_show_it(tmp_path):
    (tmp_path / "secret").write_text("s3cret-from-file\n")
    env = {"WORKBENCH_OIDC_ISSUER": "https://idp.example.com/realms/x",
           "WORKBENCH_OIDC_CLIENT_ID": "wb", "WORKBENCH_OIDC_ROLES": "ops=admin",
           "WORKBENCH_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "secret")}
    provider = sso.load(env)
    assert provider.client_secret == "s3cret-from-file" and provider.name == "idp.example.com"
    assert "s3cret" not in repr(provider)
    assert sso.load({}) is None


@pytest.mark.parametrize("change,says", [
    ({"WORKBENCH_OIDC_ISSUER": "http://idp.example.com"}, "must be an https:// URL"),
    ({"WORKBENCH_OIDC_CLIENT_ID": ""}, "needs WORKBENCH_OIDC_CLIENT_ID"),
    ({"WORKBENCH_OIDC_CLIENT_SECRET_FILE": "/nonexistent/secret"}, "cannot be read"),
    ({"WORKBENCH_OIDC_SCOPES": "profile email"}, "must include openid"),
])
def test_half_configured_sso_stops_with_a_clear_message(change, says):
    env = {"WORKBENCH_OIDC_ISSUER": "https://idp.example.com", "WORKBENCH_OIDC_CLIENT_ID": "wb",
           "WORKBENCH_OIDC_CLIENT_SECRET": "s", "WORKBENCH_OIDC_ROLES": "ops=admin", **change}
    with pytest.raises(ConfigError, match=says):
        sso.load(env)


def test_the_environment_reaches_the_app_and_a_bad_setting_stops_it(vault):
    env = {"WORKBENCH_OIDC_ISSUER": "https://idp.example.com", "WORKBENCH_OIDC_CLIENT_ID": "wb",
           "WORKBENCH_OIDC_CLIENT_SECRET": "zz-secret-1", "WORKBENCH_OIDC_ROLES": "ops=root"}
    settings = Settings.from_env(env, instance=str(vault.settings.instance),
                                 database_url=vault.settings.database_url)
    assert settings.oidc == env and "zz-secret-1" not in repr(settings)
    with pytest.raises(ConfigError, match="the role must be one of"):
        create_app(settings, vault=vault)
