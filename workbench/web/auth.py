"""Sign in and sign out, with failed attempts rate-limited from the audit log."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select, update

from .. import accounts, audit
from ..audit import Actor
from ..db import utcnow
from ..errors import AuthenticationRequired
from ..models import AuditEvent, User
from . import actor, vault, web

MAX_FAILURES = 5  # per username and address
MAX_ADDRESS_FAILURES = 20  # per address, whatever the username (password spraying)
WINDOW = timedelta(minutes=15)
WRONG = "Wrong username or password."
LIMITED = "Too many failed sign-in attempts. Wait 15 minutes and try again."


def count_failures(s, source: str, username: str | None = None) -> int:
    """Failed sign-ins from this address (for this username) in the last 15 minutes."""
    q = select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "auth.login", AuditEvent.outcome == "denied",
        AuditEvent.source == source[:100], AuditEvent.at >= utcnow() - WINDOW)
    if username is not None:
        q = q.where(AuditEvent.target == username[:200])
    return s.scalar(q) or 0


def limited(s, username: str, source: str) -> bool:
    return count_failures(s, source, username) >= MAX_FAILURES or \
        count_failures(s, source) >= MAX_ADDRESS_FAILURES


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
    with vault().factory.begin() as s:
        if limited(s, username, source):
            audit.record(s, anonymous, "auth.login", outcome="denied", target=username,
                         details={"reason": "rate_limited"})
            error = LIMITED
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
                return redirect(_safe_next(request.form.get("next")))
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
