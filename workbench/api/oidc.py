"""OIDC discovery for step identity tokens: ``/.well-known/openid-configuration`` and the
keys that verify them, ``/.well-known/jwks.json`` (public, no token needed)."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import idtokens
from . import api, vault

wellknown = Blueprint("wellknown", __name__, url_prefix="/.well-known")


def _issuer() -> str:
    return vault().settings.id_token_issuer or request.host_url.rstrip("/")


@wellknown.get("/openid-configuration")
def openid_configuration():
    """Where the keys are, and what the tokens hold."""
    resp = jsonify(idtokens.discovery(_issuer()))
    resp.headers["Cache-Control"] = "max-age=300"
    return resp


@wellknown.get("/jwks.json")
def jwks():
    """The public keys that sign step identity tokens (the active one, and retired ones until
    their tokens have expired)."""
    with vault().factory() as s:
        resp = jsonify(idtokens.jwks(s))
    resp.headers["Cache-Control"] = "max-age=60"
    return resp


# served beside the API, outside /api/v1 (where OIDC verifiers look for them)
api.record_once(lambda state: state.app.register_blueprint(wellknown))
