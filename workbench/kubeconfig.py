"""Kubeconfig parsing and inspection; messages never quote the document."""
from __future__ import annotations

from dataclasses import dataclass

from . import safeyaml
from .errors import ValidationError

FIELD = "kubeconfig"
_FILE_KEYS = {"certificate-authority", "client-certificate", "client-key", "tokenFile"}
MAX_DEPTH = 32  # exec plugins' env lists and extensions nest deeper than pipelines
_SECRET_KEYS = {"token", "password", "client-key-data", "client-certificate-data"}


@dataclass(frozen=True)
class Flag:
    reason: str
    message: str


def load_yaml(text: str):
    """The document under ``safeyaml``'s limits; a message gives the line, never a snippet."""
    def fail(message: str, line: int | None) -> ValidationError:
        where = f" at line {line}" if line else ""
        return ValidationError(f"kubeconfig is not valid YAML for Workbench: {message}{where}",
                               field=FIELD)
    return safeyaml.load(text, fail, max_depth=MAX_DEPTH)


def _named(doc: dict, key: str) -> dict[str, dict]:
    items = doc.get(key)
    if not isinstance(items, list) or not items:
        raise ValidationError(f"kubeconfig needs a non-empty '{key}' list", field=FIELD)
    out = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValidationError(f"kubeconfig '{key}' entry {i + 1} needs a 'name'", field=FIELD)
        out[item["name"]] = item
    return out


def parse(text: str) -> dict:
    """Parse and check structure: clusters, users, contexts, and an existing current-context."""
    doc = load_yaml(text)
    if not isinstance(doc, dict):
        raise ValidationError("kubeconfig must be a YAML mapping", field=FIELD)
    clusters, users, contexts = (_named(doc, k) for k in ("clusters", "users", "contexts"))
    current = doc.get("current-context")
    if not current:
        raise ValidationError("kubeconfig needs a 'current-context'", field=FIELD)
    if current not in contexts:
        raise ValidationError(f"current-context {str(current)[:64]!r} is not among the contexts",
                              field=FIELD)
    for name, ctx in contexts.items():
        body = ctx.get("context") or {}
        if body.get("cluster") not in clusters:
            raise ValidationError(f"context {name!r} refers to a cluster that is not defined",
                                  field=FIELD)
        if body.get("user") is not None and body.get("user") not in users:
            raise ValidationError(f"context {name!r} refers to a user that is not defined",
                                  field=FIELD)
    for name, cl in clusters.items():
        server = (cl.get("cluster") or {}).get("server")
        if not isinstance(server, str) or not server.startswith(("https://", "http://")):
            raise ValidationError(f"cluster {name!r} needs a server URL (https://…)", field=FIELD)
    return doc


def flags(doc: dict) -> list[Flag]:
    """Findings that make a kubeconfig non-portable or untestable from the server."""
    found: list[Flag] = []
    for u in doc.get("users") or []:
        body = (u or {}).get("user") or {}
        if "exec" in body:
            found.append(Flag("ExecPlugin", f"user {u.get('name')!r} runs an exec plugin; it "
                              "works only where that program is installed and is never run by "
                              "the server"))
        if "auth-provider" in body:
            found.append(Flag("AuthProvider", f"user {u.get('name')!r} uses an auth-provider"))
        for key in sorted(_FILE_KEYS & set(body)):
            found.append(Flag("LocalFilePath", f"user {u.get('name')!r} refers to a local file "
                              f"({key}); it will not exist on the runner"))
    for c in doc.get("clusters") or []:
        body = (c or {}).get("cluster") or {}
        if "certificate-authority" in body:
            found.append(Flag("LocalFilePath", f"cluster {c.get('name')!r} refers to a local file "
                              "(certificate-authority); it will not exist on the runner"))
    return found


def secrets(text: str) -> list[str]:
    """The secret strings inside a kubeconfig (tokens, passwords, key and cert data)."""
    try:
        doc = load_yaml(text)
    except ValidationError:
        return []
    out: list[str] = []
    for u in (doc or {}).get("users") or [] if isinstance(doc, dict) else []:
        body = (u or {}).get("user") or {}
        for key in _SECRET_KEYS:
            if isinstance(body.get(key), str) and body[key]:
                out.append(body[key])
    return out


def current(doc: dict) -> tuple[dict, dict]:
    """The (cluster, user) bodies of the current context."""
    ctx = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])["context"]
    cluster = next(c for c in doc["clusters"] if c["name"] == ctx["cluster"])["cluster"]
    user = next((u for u in doc["users"] if u["name"] == ctx.get("user")), {}).get("user") or {}
    return cluster, user
