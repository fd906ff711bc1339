"""The credentials table (home page): filter, search, sort, choose columns, paginate."""
from __future__ import annotations

from dataclasses import dataclass

from flask import flash, make_response, render_template, request

from .. import access, checks, credential_filters, credentials as svc, credtypes, references
from ..db import aware
from ..errors import ValidationError
from . import actor, vault, visible_scopes, web

COOKIE = "wb_cols"
STATUSES = ("No issues found", "Issues found", "Warning", "Not tested", "Checking…")
PAGE_SIZES = (25, 50, 100)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    sort: str | None  # the service's sort key, or None when it cannot sort by this column
    default: bool = True


COLUMNS = (Column("id", "ID", "id"), Column("name", "Name", "name"),
           Column("description", "Description", "description", default=False),
           Column("type", "Type", "type"), Column("status", "Status", "status"),
           Column("used_by", "Used by", "used_by"), Column("created_by", "Created by", "created_by"),
           Column("workspace", "Workspace", "workspace"),
           Column("created_at", "Created", "created_at"),
           Column("last_used", "Last used", "last_used_at"))
BY_KEY = {c.key: c for c in COLUMNS}


def chosen_columns() -> list[str]:
    """Columns from ?cols= (a new choice) or the remembered cookie; the ID always shows."""
    raw = request.args.getlist("cols") if "cols_set" in request.args else \
        (request.cookies.get(COOKIE) or "").split(".")
    cols = [c for c in raw if c in BY_KEY]
    if not cols:
        cols = [c.key for c in COLUMNS if c.default]
    return ["id"] + [c for c in cols if c != "id"]


def _int(name: str, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(request.args.get(name, default))))
    except ValueError:
        return default


def _usage(s, rows) -> tuple[dict, dict]:
    """(used_by, last_used) keyed by (workspace, ID): pipelines from the reference index, and the
    later of the credential's own "last used" and its last use by a recorded run."""
    used, last = {}, {}
    by_ws: dict[str, list[str]] = {}
    for c in rows:
        by_ws.setdefault(c.workspace.name, []).append(c.cred_id)
        if c.last_used_at:
            last[(c.workspace.name, c.cred_id)] = c.last_used_at
    for ws, ids in by_ws.items():
        for cid, n in references.usage_counts(s, ws, ids).items():
            used[(ws, cid)] = n
        for cid, at in references.last_used(s, ws, ids).items():
            if at is not None:
                prev = last.get((ws, cid))
                last[(ws, cid)] = max(prev, at, key=aware) if prev else at
    return used, last


@web.get("/")
def credentials():
    """All credentials, newest first."""
    a = request.args
    q, type_, status = a.get("q", "").strip()[:200], a.get("type", ""), a.get("status", "")
    ws = a.get("workspace", "")
    sort = a.get("sort", "-created_at")
    if not svc.sortable(sort.lstrip("-")):
        sort = "-created_at"
    per = _int("per", 50, 1, 100)
    per = per if per in PAGE_SIZES else 50
    page = _int("page", 1, 1, 10**6)
    extra = {k: a.get(k, "").strip()[:200] for k in credential_filters.NAMES if a.get(k)}
    with vault().factory() as s:
        try:
            query = dict(workspace=ws or None, q=q or None, type=type_ or None,
                         status=status or None, sort=sort, limit=per,
                         where=credential_filters.conditions(extra),
                         workspaces=access.visible(s, actor()))
            rows, total = svc.list_credentials(s, offset=(page - 1) * per, **query)
            if page > max(1, -(-total // per)):  # past the end: show the last page
                page = max(1, -(-total // per))
                rows, total = svc.list_credentials(s, offset=(page - 1) * per, **query)
        except ValidationError as e:
            rows, total = [], 0
            flash(e.message, "error")
        used, last = _usage(s, rows)
        workspaces = visible_scopes(s)
    cols = chosen_columns()
    args = {k: v for k, v in (("q", q), ("type", type_), ("status", status), ("workspace", ws),
                              ("sort", sort), ("per", per)) if v and v not in ("-created_at", 50)}
    args.update(extra)
    resp = make_response(render_template(
        "credentials/table.html", rows=rows, total=total, page=page, per=per,
        pages=max(1, -(-total // per)), q=q, type=type_, status=status, workspace=ws,
        sort=sort, args=args, cols=cols, columns=COLUMNS, by_key=BY_KEY, types=credtypes.TYPES,
        statuses=STATUSES, workspaces=workspaces, used=used, last=last, page_sizes=PAGE_SIZES,
        extra=extra, text_filters=credential_filters.TEXT, testable=checks.CHECKS))
    if "cols_set" in a:
        resp.set_cookie(COOKIE, ".".join(cols), max_age=365 * 86400, samesite="Lax",
                        httponly=True, secure=request.is_secure)
    return resp
