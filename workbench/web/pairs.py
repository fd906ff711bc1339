"""Key/value (generic) credentials: their key names, and a new version that changes one pair."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from .. import audit, credentials as svc
from ..credtypes import ENV_NAME
from ..errors import ValidationError
from . import actor, vault

GENERIC = "generic"
FIELD = "values"  # the generic type's one field: a map of KEY → value


def key_names(s, c) -> list[str]:
    """The keys of the current version (environment variable names, never values)."""
    _, values = svc.current_values(s, vault().barrier, c)
    return sorted(values.get(FIELD) or {})


def _changed(current: dict, form) -> tuple[dict, str]:
    """The whole map after this form's one change, and the flash message that describes it."""
    if "remove" in form:
        key = form["remove"]
        if key not in current:
            raise ValidationError(f"there is no key {key[:128]!r}", field="pair_key")
        if len(current) == 1:
            raise ValidationError("this is the last pair: add another one first, or delete the "
                                  "credential", field="pair_key")
        return {k: v for k, v in current.items() if k != key}, f"removed {key}"
    key, value = form.get("pair_key", "").strip(), form.get("pair_value", "")
    if not ENV_NAME.match(key):
        raise ValidationError("Key: letters, digits and underscore, not starting with a digit "
                              "(it becomes an environment variable name)", field="pair_key")
    if not value:
        raise ValidationError(f"Value: enter the {'new ' if key in current else ''}value of "
                              f"{key}", field="pair_value")
    return {**current, key: value}, f"{'changed' if key in current else 'added'} {key}"


def update_pairs(workspace: str, cred_id: str):
    """Add a pair, change one value or remove one pair: each saves version N+1."""
    errors: dict[str, str] = {}
    typed = request.values.get("pair_key", request.args.get("key", "")).strip()[:128]
    with vault().factory() as s:
        c = svc.get_credential(s, workspace, cred_id)
        keys = key_names(s, c)
    if request.method == "POST":
        try:
            with audit.unit(vault().factory) as s:
                cur = svc.get_credential(s, workspace, cred_id)
                _, values = svc.current_values(s, vault().barrier, cur)
                pairs, what = _changed(dict(values.get(FIELD) or {}), request.form)
                version = svc.update_credential(
                    s, vault().barrier, actor(), workspace=workspace, cred_id=cred_id,
                    changes={"values": {FIELD: pairs}}).current_version
        except ValidationError as e:
            errors[e.field if e.field in ("pair_key", "pair_value") else "pair_key"] = e.message
        else:
            flash(f"Saved version {version} of {cred_id}: {what}.", "success")
            return redirect(url_for("web.credential", workspace=workspace, cred_id=cred_id))
    return render_template("credentials/pairs.html", c=c, keys=keys, typed=typed,
                           errors=errors), 422 if errors else 200
