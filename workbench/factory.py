"""The app factory: opens the vault and attaches the API and the web workbench."""
from __future__ import annotations

import importlib
from pathlib import Path

from flask import Flask, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.exc import DataError
from werkzeug.exceptions import BadRequest, MethodNotAllowed, NotFound, RequestEntityTooLarge

from .api.hotpath import PATH as HOT_PATH, HotPath
from . import proxies
from .config import Settings
from .proxies import TrustedProxies
from .vault import Vault

ROOT = Path(__file__).resolve().parent.parent
WEB_MODULES = ["workbench.web", "workbench.web.sso"]


def _secret_key(settings: Settings, vault: Vault) -> str:
    """The session-signing key: from the environment, or kept in the database sealed by the
    master key, so that every app instance on the database accepts every other's sessions."""
    if settings.secret_key:
        return settings.secret_key
    from . import sealed
    return sealed.ensure(vault.factory, vault.barrier, sealed.SESSION)


class SessionInterface(SecureCookieSessionInterface):
    """The UI's signed-cookie session; none for the API, which takes bearer tokens only (so a
    browser's cookie can never authenticate an API call, and no API response sets one)."""

    def open_session(self, app, request):
        if request.path.startswith("/api/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def create_app(settings: Settings | None = None, *, vault: Vault | None = None,
               **overrides) -> Flask:
    """Build the app; stops with ConfigError if the database or master key is not usable."""
    settings = settings or Settings.from_env(**overrides)
    vault = vault or Vault(settings).open()
    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(Path(__file__).parent / "static"),
                instance_path=str(settings.instance))
    app.config.update(SECRET_KEY=_secret_key(settings, vault),
                      MAX_CONTENT_LENGTH=settings.max_body_bytes,
                      TESTING=settings.testing, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=not settings.testing and not settings.insecure_cookies)
    app.extensions["workbench"] = vault
    app.extensions["workbench_settings"] = settings  # may differ from the vault's (tests)
    app.session_interface = SessionInterface()

    from . import api, model_modules
    from .api import inputs
    inputs.install(app)  # bounded JSON bodies and 64-bit <int:…>, before any route exists
    model_modules.import_all()  # models register their hooks (e.g. the reference index's guard)
    api.register(app)
    for name in WEB_MODULES:
        try:
            importlib.import_module(name).register(app)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err):
        if request.path.startswith("/api/"):
            return jsonify({"error": {"code": "too_large", "message":
                                      f"request body over {settings.max_body_bytes} bytes"}}), 413
        return err

    @app.errorhandler(DataError)
    def _unstorable(err):  # e.g. a NUL character, which PostgreSQL text cannot hold
        bad = BadRequest("a value in the request cannot be stored or searched for (a NUL "
                         "character?)")
        if request.path.startswith("/api/"):
            payload, status = api.http_error(bad)
            return jsonify(payload), status
        return bad

    @app.errorhandler(NotFound)
    @app.errorhandler(MethodNotAllowed)
    def _api_routing(err):  # no route matched, so the API blueprint's handlers never ran
        if request.path.startswith("/api/"):
            payload, status = api.http_error(err)
            return jsonify(payload), status
        return err

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    app.wsgi_app = HotPath(app.wsgi_app, vault, max_body=settings.max_body_bytes,
                           headers=lambda scheme: _api_headers(app, scheme),
                           error=api.http_error)
    if settings.trusted_proxies:  # outermost: the hot path audits the client's address too
        app.wsgi_app = TrustedProxies(app.wsgi_app, proxies.parse(settings.trusted_proxies))
    return app


def _api_headers(app: Flask, scheme: str) -> list[tuple[str, str]]:
    """The headers the app's after-request hooks add to an API answer (for ``HotPath``),
    taken from a dry run of those hooks."""
    with app.test_request_context(HOT_PATH, method="POST", base_url=f"{scheme}://localhost"):
        resp = app.process_response(app.response_class())
    headers = [(k, v) for k, v in resp.headers.items()
               if k.lower() not in ("content-type", "content-length", "cache-control")]
    return [("Cache-Control", "no-store"), *headers]  # values: never in any cache
