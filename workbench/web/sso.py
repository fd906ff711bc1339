"""Sign-in through the OpenID Connect provider (Authlib): the redirect there and the callback."""
from __future__ import annotations

import logging

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from flask import (Blueprint, current_app, redirect, render_template, request, session,
                   url_for)
from flask_login import current_user, login_user
from joserfc.errors import JoseError

from .. import audit, sso as accounts_sso
from ..audit import Actor
from ..errors import PermissionDenied
from .auth import _safe_next

blueprint = Blueprint("sso", __name__, url_prefix="/sso")
CLIENT = "oidc"
NEXT = "sso_next"
# ID tokens signed with a public key only: never "none" or a MAC keyed with the client secret
SIGNING_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                "ES512", "EdDSA")
# Authlib logs the PKCE code verifier at DEBUG; a verifier is a secret, so is never logged
logging.getLogger("authlib").setLevel(logging.INFO)


def _provider() -> accounts_sso.Provider:
    return current_app.extensions["workbench_sso"]


def _client():
    """The Authlib client, with the provider's metadata loaded and checked."""
    provider = _provider()
    client = current_app.extensions["authlib.integrations.flask_client"].create_client(CLIENT)
    meta = client.load_server_metadata()
    if meta.get("issuer") != provider.issuer:  # OpenID Connect Discovery 1.0, section 4.3
        raise AuthlibBaseError(error="issuer_mismatch")
    meta["id_token_signing_alg_values_supported"] = [
        a for a in meta.get("id_token_signing_alg_values_supported", ["RS256"])
        if a in SIGNING_ALGS]
    return client


def _refused(message: str, status: int):
    return render_template("sso/refused.html", message=message, provider=_provider().name), \
        status


@blueprint.get("/login")
def login():
    """Send the browser to the provider (state, nonce and a PKCE challenge kept in the session)."""
    if current_user.is_authenticated:
        return redirect(url_for("web.credentials"))
    session[NEXT] = _safe_next(request.args.get("next"))
    try:
        client = _client()
    except (AuthlibBaseError, requests.RequestException, ValueError):
        current_app.logger.warning("sso: the provider's discovery document is not usable")
        return _refused(f"{_provider().name} is not available right now (its configuration "
                        "could not be read). Try again later.", 502)
    # Authlib adds the state, a nonce (OpenID scope) and the S256 PKCE challenge
    return client.authorize_redirect(url_for("sso.callback", _external=True))


@blueprint.get("/callback")
def callback():
    """The provider's answer: the code is exchanged and the ID token checked (signature,
    issuer, audience, expiry, nonce; state and PKCE by Authlib) before anyone is signed in."""
    provider, vault = _provider(), current_app.extensions["workbench"]
    source = request.remote_addr or ""
    try:
        token = _client().authorize_access_token(
            claims_options={"iss": {"essential": True, "value": provider.issuer},
                            "aud": {"essential": True, "value": provider.client_id}},
            leeway=60)
        claims = token.get("userinfo")
        if not claims:
            raise AuthlibBaseError(error="no_id_token")
    except (AuthlibBaseError, JoseError, requests.RequestException, KeyError, ValueError) as e:
        # Authlib's and joserfc's codes and fixed descriptions ("Invalid claim: 'aud'"): no values
        reason, why = getattr(e, "error", "") or type(e).__name__, getattr(e, "description", "")
        reason = (f"{reason}: {why}" if why else str(reason))[:200]
        with vault.factory.begin() as s:
            audit.record(s, Actor("anonymous", source=source), "auth.sso", outcome="denied",
                         details={"provider": provider.name, "reason": reason})
        return _refused(f"The sign-in through {provider.name} could not be verified, so you "
                        "are not signed in. Try again.", 401)
    try:
        with audit.unit(vault.factory) as s:
            user = accounts_sso.sign_in(s, provider, claims, source)
            s.flush()
            s.expunge(user)
    except PermissionDenied as e:
        return _refused(e.message, 403)
    login_user(user)
    return redirect(session.pop(NEXT, None) or url_for("web.credentials"))


def register(app) -> None:
    """Offer SSO when ``WORKBENCH_OIDC_ISSUER`` is set; the sign-in page shows its button."""
    provider = accounts_sso.load(app.extensions["workbench_settings"].oidc)
    app.jinja_env.globals["sso_name"] = provider.name if provider else None
    if provider is None:
        return
    app.extensions["workbench_sso"] = provider
    oauth = OAuth(app)
    oauth.register(CLIENT, client_id=provider.client_id, client_secret=provider.client_secret,
                   server_metadata_url=provider.metadata_url,
                   client_kwargs={"scope": provider.scopes, "code_challenge_method": "S256",
                                  "default_timeout": 10})
    app.register_blueprint(blueprint)
