"""Credential endpoints: CRUD, versions, references and resolve."""
from __future__ import annotations

from flask import jsonify, request, url_for

from .. import credentials as svc, credtypes
from ..audit import unit
from ..errors import ValidationError
from . import actor, api, body, flag, hotpath, inputs, vault, workspace


def int_arg(name: str, default: int, low: int = 0, high: int = inputs.INT64_MAX) -> int:
    """An integer query parameter within [low, high], or a 400."""
    return inputs.bounded_int(request.args.get(name), name, default, low, high)


@api.get("/credentials")
def list_credentials():
    """List a workspace's credentials and those it inherits (``inherited=false``: its own
    only), metadata only, newest first; filter, search, sort, paginate."""
    a = request.args
    limit, offset = int_arg("limit", 50, 1, 500), int_arg("offset", 0)
    with vault().factory() as s:
        rows, total = svc.list_credentials(
            s, workspace=workspace(), q=a.get("q"), type=a.get("type"), status=a.get("status"),
            sort=a.get("sort", "-created_at"), limit=limit, offset=offset,
            inherited=flag("inherited", default=True))
        return jsonify({"items": [svc.to_dict(c, workspace()) for c in rows], "total": total,
                        "limit": limit, "offset": offset})


@api.post("/credentials")
def create_credential():
    """Create a credential; secret values are accepted here and never returned."""
    data = body()
    type_name = data.get("type")
    credtypes.get(type_name)
    with unit(vault().factory) as s:
        c = svc.create_credential(
            s, vault().barrier, actor(), workspace=workspace(), cred_id=data.get("id"),
            type=type_name, values=credtypes.from_json(type_name, data.get("values", {})),
            name=data.get("name", ""), description=data.get("description", ""),
            inherit=data.get("inherit", True))
        return jsonify(svc.to_dict(c)), 201


@api.get("/credentials/<cred_id>")
def get_credential(cred_id: str):
    """One credential's metadata, status and non-secret fields."""
    with vault().factory() as s:
        return jsonify(svc.to_dict(svc.get_credential(s, workspace(), cred_id)))


@api.patch("/credentials/<cred_id>")
def update_credential(cred_id: str):
    """Rename (name, description) and/or change values or type (new version); never the ID."""
    data = body()
    with unit(vault().factory) as s:
        if "values" in data:
            current = svc.get_credential(s, workspace(), cred_id)
            data["values"] = credtypes.from_json(data.get("type", current.type), data["values"])
        c = svc.update_credential(s, vault().barrier, actor(), workspace=workspace(),
                                  cred_id=cred_id, changes=data, force=flag("force"))
        return jsonify(svc.to_dict(c))


@api.delete("/credentials/<cred_id>")
def delete_credential(cred_id: str):
    """Delete; 409 with the referencing pipelines and steps unless ``force=true`` (admin)."""
    with unit(vault().factory) as s:
        refs = svc.delete_credential(s, actor(), workspace=workspace(), cred_id=cred_id,
                                     force=flag("force"))
    return jsonify({"deleted": cred_id, "forced_references": refs})


@api.get("/credentials/<cred_id>/versions")
def list_versions(cred_id: str):
    """Version history: who and when, never values."""
    with vault().factory() as s:
        return jsonify({"items": [svc.version_to_dict(v)
                                  for v in svc.list_versions(s, workspace(), cred_id)]})


@api.post("/credentials/<cred_id>/versions")
def add_version(cred_id: str):
    """Store new values as version N+1 (fields left out keep their current values)."""
    data = body()
    with unit(vault().factory) as s:
        current = svc.get_credential(s, workspace(), cred_id)
        values = credtypes.from_json(current.type, data.get("values", {}))
        c = svc.update_credential(s, vault().barrier, actor(), workspace=workspace(),
                                  cred_id=cred_id, changes={"values": values})
        return jsonify(svc.to_dict(c)), 201


@api.post("/credentials/<cred_id>/versions/prune")
def prune_versions(cred_id: str):
    """Delete all but the newest ``keep`` versions; pinned versions answer 409 unless forced."""
    keep = body().get("keep")
    if not isinstance(keep, int):
        raise ValidationError("keep must be an integer", field="keep")
    with unit(vault().factory) as s:
        pruned = svc.prune_versions(s, actor(), workspace=workspace(), cred_id=cred_id,
                                    keep=keep, force=flag("force"))
    return jsonify({"pruned": pruned})


@api.get("/credentials/<cred_id>/references")
def credential_references(cred_id: str):
    """Pipelines and steps that reference this credential."""
    with vault().factory() as s:
        svc.get_credential(s, workspace(), cred_id)
        return jsonify({"items": svc.references(s, workspace(), cred_id)})


@api.post("/resolve")
def resolve():
    """Runner tokens only: return the values of the listed references (``id`` or ``id@N``)."""
    # Served by hotpath.HotPath ahead of Flask; this route answers what it passes on.
    resp = jsonify(hotpath.resolve_request(
        vault(), request.get_json(silent=True), workspace=workspace(),
        authorization=request.headers.get("Authorization", ""),
        source=request.remote_addr or "", issuer=request.host_url.rstrip("/")))
    resp.headers["Cache-Control"] = "no-store"
    return resp


@api.post("/credentials/<cred_id>/verify")
def verify(cred_id: str):
    """Test the credential against its stored target (editors, admins) and record the status.
    The test runs off the request workers; with ``wait=false`` (or ``Prefer: respond-async``)
    the answer is 202 at once (poll the credential until its status leaves ``Checking…``),
    otherwise it waits for the outcome, at most the test's deadline."""
    from .. import checking, status
    future = checking.start(vault(), actor(), workspace(), cred_id)
    if future is not None and flag("wait", default=True) and \
            "respond-async" not in request.headers.get("Prefer", ""):
        future.result(timeout=checking.DEADLINE + 5)
    with vault().factory() as s:
        c = svc.get_credential(s, workspace(), cred_id)
        if status.running_since(c) is None:
            return jsonify(svc.to_dict(c))
        return jsonify(svc.to_dict(c)), 202, {"Location": url_for(
            "api.get_credential", cred_id=cred_id, workspace=workspace())}
