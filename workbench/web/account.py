"""The signed-in user's own account: changing their password, and the forced change after a
generated or admin-set one."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user

from .. import audit, passwords
from ..errors import ValidationError
from ..models import User
from . import actor, vault, web

# what a user who must change their password may still reach
UNFORCED = {"web.change_password", "web.logout", "web.login", "static"}


@web.before_request
def _force_password_change():
    """Until a generated or admin-set password is changed, every page leads to the form."""
    if current_user.is_authenticated and current_user.must_change_password \
            and request.endpoint not in UNFORCED:
        return redirect(url_for("web.change_password"))
    return None


@web.route("/account/password", methods=["GET", "POST"])
def change_password():
    """Change your own password (the current one is asked for again)."""
    errors: dict[str, str] = {}
    if request.method == "POST":
        new = request.form.get("password", "")
        try:
            if new != request.form.get("password_confirm", ""):
                raise ValidationError("the two new passwords differ", field="password_confirm")
            with audit.unit(vault().factory) as s:
                user = s.get(User, current_user.id)
                passwords.change_own(s, actor(), user, request.form.get("current_password", ""),
                                     new)
            # the change ended every session of the user, this one too: start a new one
            login_user(user)
        except ValidationError as e:
            errors[e.field or "password"] = e.message
        else:
            flash("Your password is changed. Your other sessions are signed out.", "success")
            return redirect(url_for("web.credentials"))
    return render_template("account/password.html", errors=errors,
                           forced=current_user.must_change_password,
                           min_length=passwords.MIN_LENGTH), 422 if errors else 200
