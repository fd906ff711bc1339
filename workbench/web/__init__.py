"""The server-rendered web workbench: sign-in, CSRF, security headers and the page blueprints."""
from __future__ import annotations

import importlib
from datetime import datetime, timezone

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import select

from .. import access, accounts, audit
from ..audit import Actor
from ..db import aware
from ..errors import PermissionDenied, WorkbenchError
from ..models import User, Workspace
from ..vault import Vault

web = Blueprint("web", __name__)
# View modules, each adding its routes to ``web``.
VIEW_MODULES = ["auth", "account", "table", "credentials", "pipelines", "admin", "scopes"]
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def vault() -> Vault:
    return current_app.extensions["workbench"]


def actor() -> Actor:
    """The signed-in user as an audit actor (with the scope grants loaded with it)."""
    return Actor(current_user.username, role=current_user.role,
                 source=request.remote_addr or "",
                 grants=getattr(current_user, "scope_grants", None))


def instance(role: str) -> bool:
    """Whether the signed-in user has at least ``role`` on the whole instance."""
    return current_user.is_authenticated and \
        access.rank(current_user.role) >= accounts.RANK[role]


def role_on(workspace: str) -> str | None:
    """The signed-in user's role on ``workspace`` (remembered for the request)."""
    cache = g.setdefault("roles_on", {})
    if workspace not in cache:
        me = actor()
        if access.rank(me.role) >= accounts.RANK["admin"] or not me.grants:
            cache[workspace] = access.highest([me.role])
        else:
            with vault().factory() as s:
                cache[workspace] = access.role_on(s, me, workspace)
    return cache[workspace]


def can(role: str, workspace: str | None = None) -> bool:
    """Whether the signed-in user has at least ``role`` on ``workspace``, or (without one) on
    the instance or some scope: templates hide what it may not do."""
    if not current_user.is_authenticated:
        return False
    if workspace is not None:
        return access.rank(role_on(workspace)) >= accounts.RANK[role]
    return instance(role) or any(access.rank(r) >= accounts.RANK[role]
                                 for _, r in getattr(current_user, "scope_grants", ()) or ())


def need(role: str, workspace: str | None = None) -> None:
    """Refuse a page (403) unless ``can(role, workspace)``; services check again, audited."""
    if not can(role, workspace):
        raise PermissionDenied(f"this needs the {role} role"
                               + (f" on workspace {workspace!r}" if workspace else ""))


def visible_scopes(s) -> list[str]:
    """The scope IDs the signed-in user may see (for pickers)."""
    seen = access.visible(s, actor())
    names = s.scalars(select(Workspace.name).order_by(Workspace.name))
    return [n for n in names if seen is None or n in seen]


def default_scope(s) -> str:
    """``?workspace=``, else ``default`` if the user may see it, else the first it may (the
    404 of ``default`` if it may see none)."""
    if "workspace" in request.args:
        return request.args["workspace"][:63]
    seen = visible_scopes(s)
    if not seen:
        raise accounts.no_workspace("default")
    return "default" if "default" in seen else seen[0]


def when(dt: datetime | None, seconds: bool = False) -> str:
    """A short UTC timestamp for tables (to the second for audit events)."""
    if dt is None:
        return "—"
    if isinstance(dt, str):
        try:
            dt = datetime.fromisoformat(dt)
        except ValueError:
            return dt
    return aware(dt).astimezone(timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _load_user(session_id: str):
    """The user of a session cookie: ``"<id>.<epoch>"``, valid until that user signs out."""
    user_id, _, epoch = session_id.partition(".")
    if not (user_id.isdigit() and epoch.isdigit()):
        return None
    with vault().factory() as s:
        user = s.get(User, int(user_id))
        if user is None or user.disabled or user.session_epoch != int(epoch):
            return None
        # once per request: every check of this request reads them from the actor
        user.scope_grants = access.load_grants(s, user.username) if user.role != "admin" \
            else ()
        return user


@web.before_request
def _require_login():
    if request.endpoint == "web.login":
        return None
    if not current_user.is_authenticated:
        return redirect(url_for("web.login", next=request.full_path.rstrip("?")))
    # a page about a scope needs the viewer role on it; an invisible one is not found
    args = request.view_args or {}
    scope = args.get("workspace") or args.get("scope_id") or request.args.get("workspace")
    if scope and role_on(scope) is None:
        with audit.unit(vault().factory):
            raise audit.refused(accounts.no_workspace(scope), actor(), "scope.read",
                                workspace=scope[:63], target=request.path[:200])
    return None


@web.app_errorhandler(CSRFError)
def _csrf_error(err):
    return render_template("error.html", title="Form expired",
                           message="The form was missing its security token or it expired. "
                                   "Go back, reload the page and try again."), 400


@web.errorhandler(WorkbenchError)
def _error_page(err: WorkbenchError):
    titles = {403: "Not allowed", 404: "Not found", 409: "Conflict"}
    return render_template("error.html", title=titles.get(err.status, "Something went wrong"),
                           message=err.message), err.status


SECURITY_HEADERS = [("Content-Security-Policy", CSP), ("X-Frame-Options", "DENY"),
                    ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"),
                    ("Cross-Origin-Opener-Policy", "same-origin")]


def _security_headers(resp):
    h = resp.headers
    present = {k.lower() for k in h.keys()}
    h.extend([(k, v) for k, v in SECURITY_HEADERS if k.lower() not in present])
    if request.is_secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    if not request.path.startswith("/static/"):
        # pages show credential metadata and audit data: never keep them in any cache
        h["Cache-Control"] = "no-store"
    return resp


def register(app) -> None:
    """Attach the UI: Flask-Login, CSRF protection (not for the bearer-token API) and pages."""
    login = LoginManager(app)
    login.login_view = "web.login"
    login.login_message = "Please sign in."
    login.user_loader(_load_user)
    csrf = CSRFProtect(app)
    if "api" in app.blueprints:
        csrf.exempt(app.blueprints["api"])
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", 8 * 3600)
    for name in VIEW_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    app.register_blueprint(web)
    app.after_request(_security_headers)
    app.jinja_env.globals.update(can=can, instance=instance, when=when)
