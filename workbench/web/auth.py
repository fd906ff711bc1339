"""Sign in and sign out; failed attempts are throttled (``workbench.signin``)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import update

from .. import accounts, audit, signin
from ..audit import Actor
from ..errors import AuthenticationRequired
from ..models import User
from . import actor, vault, web

WRONG = "Wrong username or password."


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after sign-in (nor a control
    character, which cannot go in a Location header)."""
    if not target or not target.startswith("/") or target.startswith("//") \
            or not target.isprintable() or urlsplit(target).netloc or "\\" in target:
        return url_for("web.credentials")
    return target


@web.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form."""
    if current_user.is_authenticated:
        return redirect(url_for("web.credentials"))
    username = request.form.get("username", "").strip()[:64]
    if request.method == "GET":
        return render_template("login.html", username="", next=request.args.get("next", ""))
    source = request.remote_addr or ""
    anonymous = Actor("anonymous", source=source)
    secret = current_app.secret_key
    known = signin.is_known_device(secret, request.cookies.get(signin.DEVICE_COOKIE), username)
    with vault().factory.begin() as s:
        error = signin.limited(s, username, source, known_device=known)
        if error:
            audit.record(s, anonymous, "auth.login", outcome="denied", target=username,
                         details={"reason": signin.REFUSED})
        else:
            try:
                user = accounts.authenticate(s, username, request.form.get("password", ""))
            except AuthenticationRequired:
                audit.record(s, anonymous, "auth.login", outcome="denied", target=username)
                error = WRONG
            else:
                audit.record(s, Actor(user.username, role=user.role, source=source),
                             "auth.login", target=user.username)
                login_user(user)
                resp = redirect(_safe_next(request.form.get("next")))
                resp.set_cookie(signin.DEVICE_COOKIE, signin.device_token(secret, user.username),
                                max_age=signin.DEVICE_DAYS * 86400, httponly=True,
                                samesite="Lax", path=url_for("web.login"),
                                secure=current_app.config["SESSION_COOKIE_SECURE"])
                return resp
    return render_template("login.html", username=username, error=error,
                           next=request.form.get("next", "")), 401 if error == WRONG else 429


@web.post("/logout")
def logout():
    """Sign out (a POST with a CSRF token, so other sites cannot sign you out).  This ends every
    session of the user, including copies of the cookie (see ``User.session_epoch``)."""
    with vault().factory.begin() as s:
        s.execute(update(User).where(User.id == current_user.id)
                  .values(session_epoch=User.session_epoch + 1))
        audit.record(s, actor(), "auth.logout", target=current_user.username)
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("web.login"))
