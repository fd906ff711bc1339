"""POST /api/v1/resolve as plain WSGI, ahead of Flask.

Every step of every pipeline resolves its credentials, so this is the one request whose cost
grows with CI load.  Through Flask it spent more time in the framework (request context,
proxies, hooks, the response object) than in its own work: the token check, one read, the
decryption and the audit row.  ``HotPath`` answers it from the WSGI environ; everything
else, and any resolve request it does not take (no Content-Length, a body over the limit),
goes to Flask, whose ``/resolve`` route calls the same ``resolve_request``.  A test sends the
same requests both ways and compares status, body, headers and audit rows."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from werkzeug.exceptions import InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from .. import accounts, audit, credtypes, resolution, stepresolve
from ..audit import Actor, hot_unit
from ..errors import AuthenticationRequired, BadRequest, ValidationError, WorkbenchError
from ..pipeline.resolve import Ref
from ..statements import Raw
from ..vault import Vault
from . import inputs

PATH = "/api/v1/resolve"
log = logging.getLogger(__name__)


def check_token(raw: Raw, authorization: str, source: str, path: str, lookup=None) -> Actor:
    """The actor behind an ``Authorization: Bearer`` header (on the caller's connection;
    ``lookup`` as in ``accounts.token_actor``).  A bad token is refused with 401, audited."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationRequired("send a personal or runner token as 'Authorization: Bearer …'")
    try:
        return accounts.token_actor(raw, token.strip(), source=source, lookup=lookup)
    except WorkbenchError as e:
        raise audit.refused(e, Actor("anonymous", source=source, kind="token"), "auth.token",
                            target=path[:200])


def resolve_request(vault: Vault, data: Any, *, workspace: str, authorization: str,
                    source: str, issuer: str = "") -> dict[str, Any]:
    """The answer to a resolve request (``data``: its JSON body, or None), or an error;
    ``issuer``: the server's URL, the ``iss`` of step identity tokens unless configured."""
    scheme, _, token = authorization.partition(" ")
    if token.strip().startswith(stepresolve.PREFIX) and scheme.lower() == "bearer":
        # a run token: one step of one run of an indexed pipeline (stepresolve)
        return stepresolve.resolve_step(vault, data, workspace=workspace, secret=token.strip(),
                                        source=source, issuer=issuer)
    # One connection for the token check, the reads and the audit rows.  The body is read
    # first, so that the token's statement can read the first reference too
    # (resolution.Prefetch), but its errors are raised after the token is checked.
    problem = None
    try:
        refs, context = parse_body(data)
    except WorkbenchError as e:
        refs, context, problem = [], {}, e
    remember = None
    if len(refs) == 1 and scheme.lower() == "bearer":
        # a repeat of a one-reference resolve this process answered: one statement re-checks
        # everything and audits it (resolution.Answers)
        answers, digest = resolution.answers(vault), accounts.digest(token.strip())
        remember = (digest, workspace, refs[0])
        got = answers.get(remember)
        if got is not None:
            with hot_unit(vault) as raw:
                again = resolution.answer_again(raw, got, workspace=workspace,
                                                context=context, source=source)
            if again is not None:
                return again
            answers.drop(remember)
    with hot_unit(vault) as raw:
        prefetch = resolution.Prefetch(workspace, refs[0]) if refs else None
        who = check_token(raw, authorization, source, PATH, lookup=prefetch)
        if problem is not None:
            raise problem
        out = resolution.resolve(raw, vault.barrier, who, workspace=workspace, refs=refs,
                                 context=context, prefetch=prefetch)
    answer = {"credentials": [{"ref": str(ref), "id": rc.id, "version": rc.version,
                               "type": rc.type, "values": credtypes.to_json(rc.values)}
                              for ref, rc in out.items()]}
    if remember is not None and who.kind == "runner" and prefetch.row is not None:
        answer = Encoded(answer)
        answers.put(remember, resolution.to_remember(who, digest, prefetch, refs[0]), answer)
    return answer


class Encoded(dict):
    """An answer with its body, encoded once: an answer given again is not encoded again."""

    def __init__(self, answer: dict):
        super().__init__(answer)
        self.body = encode(answer)


def encode(payload: dict) -> bytes:
    """The body of a hot-path answer."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _url_root(environ: dict) -> str:
    """scheme://host[:port] as Flask's ``request.host_url`` gives it, without the slash."""
    host = environ.get("HTTP_HOST") or \
        f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


def parse_body(data: Any) -> tuple[list[Ref], dict]:
    """A resolve request's references and context, or the error that refuses it."""
    data = json_object(data)
    refs = data.get("refs")
    if not isinstance(refs, list) or not refs or len(refs) > 100:
        raise ValidationError("refs must be a list of 1–100 references", field="refs")
    context = data.get("context")
    return ([resolution.parse_ref(r if isinstance(r, str) else "") for r in refs],
            context if isinstance(context, dict) else {})


def json_object(data: Any) -> dict[str, Any]:
    """A parsed request body that must be a JSON object (every API body is one)."""
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object (UTF-8 text, nested at most "
                         f"{inputs.MAX_DEPTH} levels)")
    return data


def json_body(environ: dict, length: int) -> Any:
    """The body parsed as JSON, or None (not JSON, or malformed), as ``get_json(silent=True)``."""
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if not (mimetype == "application/json" or
            (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        return None
    try:
        return inputs.loads(environ["wsgi.input"].read(length))
    except ValueError:  # also UnicodeDecodeError, and JSON past inputs' limits
        return None


class HotPath:
    """WSGI middleware: answers POST /api/v1/resolve itself and passes everything else on.

    ``headers(scheme)`` gives the headers Flask's after-request hooks add to an API answer
    (security headers, ``Cache-Control``), ``error(exc)`` the API's JSON error for an
    exception Flask would turn into a 500: both come from the app, so the two paths cannot
    drift apart."""

    def __init__(self, app: Callable, vault: Vault, *, max_body: int,
                 headers: Callable[[str], list[tuple[str, str]]],
                 error: Callable[[Exception], tuple[dict, int]]):
        self.app, self.vault, self.max_body = app, vault, max_body
        self.headers = {scheme: headers(scheme) for scheme in ("http", "https")}
        self.error = error

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return self.app(environ, start_response)  # chunked or missing: Flask reads it
        if not 0 <= length <= self.max_body:
            return self.app(environ, start_response)  # Flask answers 413
        qs = environ.get("QUERY_STRING")
        workspace = parse_qs(qs, keep_blank_values=True).get("workspace", ["default"])[0] \
            if qs else "default"
        workspace = workspace.replace("\0", "\ufffd")  # PostgreSQL text holds no NUL
        try:
            status, payload = 200, resolve_request(
                self.vault, json_body(environ, length), workspace=workspace,
                authorization=environ.get("HTTP_AUTHORIZATION", ""),
                source=environ.get("REMOTE_ADDR") or "", issuer=_url_root(environ))
        except WorkbenchError as e:
            status, payload = e.status, {"error": e.to_dict()}
        except Exception as e:  # as Flask does: logged, and a 500 that says nothing more
            log.error("Exception on %s [POST]", PATH, exc_info=True)
            payload, status = self.error(InternalServerError(original_exception=e))
        body = payload.body if isinstance(payload, Encoded) else encode(payload)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        *self.headers[environ.get("wsgi.url_scheme", "http")]])
        return [body]

