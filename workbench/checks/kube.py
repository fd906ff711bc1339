"""Connectivity check of a kubeconfig: /version, then a SelfSubjectAccessReview, as its user."""
from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import ssl
import tempfile
from http.client import HTTPException
from pathlib import Path

from .. import kubeconfig
from ..errors import ValidationError
from . import Condition, reachable, register
from .probe import BadURL, Reply, fetch, join, network_failure, safe_url

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
REVIEW = json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                     "spec": {"nonResourceAttributes": {"path": "/api", "verb": "get"}}}).encode()
# keys that name files on the machine that wrote the kubeconfig; never read on the server
USER_FILES = ("client-certificate", "client-key", "tokenFile")


class _Untestable(Exception):
    """The kubeconfig cannot be tested from here; the message says why (no secret in it)."""


def _decode(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Untestable(f"the {what} is not valid base64") from None


def _context(cluster: dict, user: dict, tmp: Path) -> ssl.SSLContext:
    """TLS as kubectl does it: the cluster's CA (else system roots), the user's client cert."""
    if "certificate-authority" in cluster and "certificate-authority-data" not in cluster:
        raise _Untestable("the cluster's CA is a local file path, which the server never reads")
    if cluster.get("insecure-skip-tls-verify") is True:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        ca = _decode(cluster["certificate-authority-data"], "certificate-authority-data")
        try:
            ctx = ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
        except ssl.SSLError:
            raise _Untestable("the cluster's certificate-authority-data is not a PEM "
                              "certificate") from None
    else:
        ctx = ssl.create_default_context()
    cert, key = user.get("client-certificate-data"), user.get("client-key-data")
    if cert and key:
        # OpenSSL loads a client certificate only from files: private ones, gone right after
        cert_file, key_file = tmp / "client.crt", tmp / "client.key"
        for path, data, what in ((cert_file, cert, "client-certificate-data"),
                                 (key_file, key, "client-key-data")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_decode(data, what))
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except ssl.SSLError:
            raise _Untestable("the client certificate and key do not load as a pair") from None
        finally:
            cert_file.unlink(missing_ok=True)
            key_file.unlink(missing_ok=True)
    return ctx


def _headers(user: dict) -> dict[str, str]:
    if user.get("token"):
        return {"Authorization": f"Bearer {user['token']}"}
    if user.get("username") and user.get("password"):
        pair = f"{user['username']}:{user['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


def _refusal(doc: dict, user: dict) -> str | None:
    """Why this kubeconfig must not be tested here (the exec plugin is never run), or None."""
    if "exec" in user:
        return ("the user authenticates with an exec plugin, which is not testable from the "
                "server (the plugin is never run)")
    if "auth-provider" in user:
        return "the user authenticates with an auth-provider, which is not testable from the server"
    local = [k for k in USER_FILES if k in user]
    if local and not (user.get("token") or user.get("client-certificate-data")):
        return f"the user's {local[0]} is a local file path, which the server never reads"
    return None


def _version(reply: Reply) -> str:
    try:
        return str(json.loads(reply.body).get("gitVersion") or "")
    except (ValueError, AttributeError):
        return ""


@register("kubeconfig")
def check_kubeconfig(values: dict, timeout: float) -> Condition:
    """Authenticate to the current context's API server with its CA, token or client cert."""
    try:
        doc = kubeconfig.parse(values.get("kubeconfig", ""))
    except ValidationError as e:
        return reachable("Unknown", "NotTestable", f"the kubeconfig does not parse: {e.message}")
    cluster, user = kubeconfig.current(doc)
    refusal = _refusal(doc, user)
    if refusal:
        return reachable("Unknown", "NotTestable", refusal)
    server = cluster["server"]
    at = safe_url(server)
    has_cert = bool(user.get("client-certificate-data") and user.get("client-key-data"))
    tmp = Path(tempfile.mkdtemp(prefix="wb-check-kube-"))
    try:
        try:
            ctx = _context(cluster, user, tmp)
        except _Untestable as e:
            return reachable("Unknown", "NotTestable", str(e))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        opts = {"timeout": timeout, "context": ctx, "headers": _headers(user),
                "server_name": cluster.get("tls-server-name")}
        version = fetch(join(server, "/version"), **opts)
        if version.status == 401:
            return reachable("False", "AuthenticationFailed", f"{at} rejected the credential "
                             "(HTTP 401)")
        # 403: authenticated but /version is locked down; the access review still tells
        if version.status != 403 and (version.status != 200 or not _version(version)):
            return reachable("False", "UnexpectedResponse", f"{at} does not answer /version like "
                             f"a Kubernetes API server (HTTP {version.status})")
        review = fetch(join(server, SSAR), method="POST", body=REVIEW,
                       **{**opts, "headers": {**opts["headers"],
                                              "Content-Type": "application/json",
                                              "Accept": "application/json"}})
        if review.status in (200, 201):
            return _authenticated(at, _version(version), "")
        if review.status not in (403, 404):
            return _answer(review, at)
        api = fetch(join(server, "/api"), **opts)  # access reviews forbidden: try discovery
        if api.status == 200:
            return _authenticated(at, _version(version), "")
        if api.status == 403:
            return _authenticated(at, _version(version), "; the user may not read /api")
        return _answer(api, at)
    except BadURL:
        return reachable("Unknown", "NotTestable", "the cluster's server is not a URL")
    except (OSError, HTTPException) as exc:
        return network_failure(exc, at, timeout, client_cert=has_cert)


def _authenticated(at: str, version: str, note: str) -> Condition:
    what = f"Kubernetes {version}" if version else "the Kubernetes API server"
    return reachable("True", "Authenticated", f"authenticated to {what} at {at}{note}")


def _answer(reply: Reply, at: str) -> Condition:
    if reply.status == 401:
        return reachable("False", "AuthenticationFailed",
                         f"{at} rejected the credential (HTTP 401)")
    return reachable("False", "UnexpectedResponse", f"{at} answered HTTP {reply.status}")
