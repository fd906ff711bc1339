"""Release rules: who may receive a credential, protected refs, and ``policy explain``."""
from __future__ import annotations

from flask import jsonify, request

from .. import policy, sources
from ..audit import unit
from ..errors import ValidationError
from . import actor, api, body, flag, vault, workspace


@api.get("/policy/explain")
def explain_policy():
    """Would a step of a pipeline receive a credential (ref, event, fork)?  allow or deny, and
    the rule that decided."""
    a = request.args
    missing = [k for k in ("pipeline", "step", "credential") if not a.get(k)]
    if missing:
        raise ValidationError(f"missing query parameter(s): {', '.join(missing)}",
                              field=missing[0])
    with vault().factory() as s:
        return jsonify(policy.explain(s, workspace(), a["pipeline"], a["step"], a["credential"],
                                      ref=a.get("ref"), event=a.get("event"),
                                      fork=flag("fork"), source=a.get("source")))


@api.get("/credentials/<cred_id>/policy")
def credential_policy(cred_id: str):
    """Who may receive a credential: the steps binding it, its rules, allow-listed tokens."""
    with vault().factory() as s:
        return jsonify(policy.receivers(s, workspace(), cred_id))


@api.put("/credentials/<cred_id>/policy")
def set_credential_policy(cred_id: str):
    """Set a credential's release rules: protected, exclude_events (admin)."""
    data = body()
    unknown = set(data) - {"protected", "exclude_events"}
    if unknown:
        raise ValidationError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    with unit(vault().factory) as s:
        return jsonify(policy.set_policy(s, actor(), workspace(), cred_id, **data))


@api.get("/pipeline-sources/<int:source_id>/protected-refs")
def list_protected_refs(source_id: int):
    """A source's protected branch and tag globs."""
    with vault().factory() as s:
        src = sources.get_source(s, workspace(), source_id)
        return jsonify({"source": src.name, "patterns": policy.protected_refs(s, src.id)})


@api.put("/pipeline-sources/<int:source_id>/protected-refs")
def set_protected_refs(source_id: int):
    """Replace a source's protected branch and tag globs (admin): {"patterns": [...]}."""
    data = body()
    with unit(vault().factory) as s:
        src = sources.get_source(s, workspace(), source_id)
        patterns = policy.set_protected_refs(s, actor(), workspace(), src,
                                             data.get("patterns"))
        return jsonify({"source": src.name, "patterns": patterns})
