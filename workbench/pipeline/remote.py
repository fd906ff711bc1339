"""Talking to a Workbench server: the HTTP resolver and the HTTP run recorder."""
from __future__ import annotations

import json
import random
import time
from typing import Sequence

import requests

from .. import credtypes, errors
from .resolve import Ref, ResolvedCredential, Resolver
from .runner import Recorder

TIMEOUT = (10, 60)  # connect, read (seconds)
MAX_RESPONSE = 64 * 1024 * 1024
MAX_REFS = 100
MAX_RECORD = 1536 * 1024  # below the server's default 2 MiB request limit
DROPPED = "[… earlier output dropped …]\n"
# Both calls may be repeated: a resolve only reads (each answer has its own audit row) and a
# run record replaces the run of the same ID.  So a call that failed on the way (no answer,
# or an instance or the database restarting) is tried again after these pauses (± 50 %).
RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0)
RETRY_STATUS = {500, 502, 503, 504}


class _Client:
    """Bearer-token JSON client; the token lives in one header and nowhere else."""

    def __init__(self, server: str, token: str, workspace: str, ca_file: str | None = None):
        if not server.startswith(("http://", "https://")):
            raise errors.ConfigError("the server URL must start with http:// or https://",
                                     field="server")
        if not token:
            raise errors.ConfigError("a runner token is required (WORKBENCH_RUNNER_TOKEN or "
                                     "--token-file)")
        self.server = server.rstrip("/")
        self.workspace = workspace
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy env or .netrc: the token goes to `server` only
        self.session.verify = ca_file or True  # a private CA is named explicitly, never disabled
        self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.server} workspace={self.workspace}>"

    def post(self, path: str, body: dict) -> dict:
        url = f"{self.server}{path}"
        for pause in (*RETRIES, None):
            try:
                resp = self.session.post(url, params={"workspace": self.workspace}, json=body,
                                         timeout=TIMEOUT, allow_redirects=False)
            except requests.RequestException as exc:
                if pause is None:
                    raise errors.ExecutionError(f"cannot reach {self.server} "
                                                f"({type(exc).__name__})") from None
            else:
                if resp.status_code not in RETRY_STATUS or pause is None:
                    break
            time.sleep(pause * (0.5 + random.random()))
        if resp.status_code >= 300:
            raise _error(resp)
        if len(resp.content) > MAX_RESPONSE:
            raise errors.PayloadTooLarge("the server's answer is too large")
        try:
            return resp.json()
        except ValueError:
            raise errors.ExecutionError(f"{path}: the server did not answer JSON") from None


def _error(resp: requests.Response) -> errors.WorkbenchError:
    """The server's error body → the matching exception of errors.py."""
    try:
        body = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        body = {}
    message = str(body.get("message") or f"the server answered HTTP {resp.status_code}")
    details = body.get("details") if isinstance(body.get("details"), dict) else {}
    if 300 <= resp.status_code < 400:
        return errors.ExecutionError(f"the server redirected (HTTP {resp.status_code}); "
                                     "check the server URL")
    for cls in _classes():
        if cls.code == body.get("code"):
            break
    else:
        cls = {401: errors.AuthenticationRequired, 403: errors.PermissionDenied,
               404: errors.NotFound, 409: errors.Conflict, 413: errors.PayloadTooLarge,
               422: errors.ValidationError}.get(resp.status_code, errors.WorkbenchError)
    if issubclass(cls, errors.PipelineError):  # its message already names file and line
        cls = errors.ValidationError
    return cls(message, **details)


def _classes():
    todo, seen = [errors.WorkbenchError], []
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: -len(c.__mro__))  # most specific first


class HttpResolver(Resolver):
    """Resolver over ``POST {server}/api/v1/resolve?workspace=W``."""

    def __init__(self, server: str, token: str, workspace: str, ca_file: str | None = None):
        self.client = _Client(server, token, workspace, ca_file)

    def __repr__(self) -> str:
        return repr(self.client)

    def resolve(self, refs: Sequence[Ref], *, context: dict | None = None
                ) -> dict[Ref, ResolvedCredential]:
        by_text = {str(r): r for r in refs}
        texts = list(by_text)
        items: list[dict] = []
        for i in range(0, len(texts), MAX_REFS):  # the server takes at most MAX_REFS per call
            body = self.body(texts[i:i + MAX_REFS], context or {})
            answer = self.client.post("/api/v1/resolve", body)
            self.received(answer)
            items.extend(answer.get("credentials") or [])
        out: dict[Ref, ResolvedCredential] = {}
        for item in items:
            ref = by_text.get(str(item.get("ref")))
            if ref is None:
                continue
            out[ref] = ResolvedCredential(id=str(item["id"]), version=int(item["version"]),
                                          type=str(item["type"]),
                                          values=credtypes.from_json(item["type"], item.get("values") or {}))
        missing = [t for t, r in by_text.items() if r not in out]
        if missing:
            raise errors.NotFound(f"unknown credentials: {', '.join(missing)}", missing=missing)
        return out

    def body(self, refs: list[str], context: dict) -> dict:
        return {"refs": refs, "context": context}

    def received(self, answer: dict) -> None:
        """Called with each answer (a subclass keeps what else it carries)."""


class StepResolver(HttpResolver):
    """Resolver of a run opened on the server (``open_run``): with its run token, one request
    per step, which receives what that step of the indexed definition binds and nothing
    else.  ``per_step`` tells the runner to plan each step just before it runs."""

    per_step = True

    def __init__(self, server: str, run: dict, workspace: str, ca_file: str | None = None):
        super().__init__(server, run["token"], workspace, ca_file)
        self.run_id = run["id"]
        self.id_token: str | None = None  # the last step's identity token, if it asked

    def resolve(self, refs, *, context=None):
        self.id_token = None
        if refs:
            return super().resolve(refs, context=context)
        self.received(self.client.post("/api/v1/resolve", self.body([], context or {})))
        return {}  # a step with no credentials that asks for an identity token

    def body(self, refs: list[str], context: dict) -> dict:
        if not context.get("step"):
            raise errors.ExecutionError("a run token resolves for one step at a time")
        return {"step": context["step"], "attempt": 1, **({"refs": refs} if refs else {})}

    def received(self, answer: dict) -> None:
        token = answer.get("id_token")
        self.id_token = token if isinstance(token, str) else None


def open_run(server: str, token: str, workspace: str, ca_file: str | None = None,
             **fields) -> dict:
    """Open a run of an indexed pipeline (``POST /api/v1/runs``): its ID, run token, steps
    and grants.  NotFound with ``details['indexed'] is False`` when the pipeline is not
    indexed."""
    body = {k: v for k, v in fields.items() if v not in (None, "")}
    run = _Client(server, token, workspace, ca_file).post("/api/v1/runs", body)
    if not str(run.get("token", "")).startswith("wbrun_"):
        raise errors.ExecutionError("the server did not answer a run token")
    return run


class HttpRecorder(Recorder):
    """Sends the finished run to ``POST {server}/api/v1/runs?workspace=W``."""

    def __init__(self, server: str, token: str, workspace: str, ca_file: str | None = None):
        self.client = _Client(server, token, workspace, ca_file)

    def __repr__(self) -> str:
        return repr(self.client)

    def record(self, record: dict) -> None:
        self.client.post("/api/v1/runs", fit(record, MAX_RECORD))


def fit(record: dict, budget: int) -> dict:
    """Shorten step logs (keeping their tails) until the JSON body fits the server's limit."""
    if _size(record) <= budget:
        return record
    out = dict(record, steps=[dict(s) for s in record.get("steps") or []])
    full = {i: s["log"] for i, s in enumerate(out["steps"]) if s.get("log")}
    keep = max((len(v) for v in full.values()), default=0)
    while keep > 0 and _size(out) > budget:
        keep //= 2
        for i, log in full.items():
            if len(log) > keep:
                out["steps"][i]["log"] = f"{DROPPED}{log[-keep:]}" if keep else DROPPED
    if _size(out) > budget:
        out["source"] = None  # the pipeline file itself; the server still has its name
    return out


def _size(record: dict) -> int:
    return len(json.dumps(record).encode())
