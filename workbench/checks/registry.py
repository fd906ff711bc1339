"""Connectivity check of docker_registry credentials: log in to ``/v2/`` like the engine does."""
from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

import requests

from . import Condition, register

CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def is_local(host: str) -> bool:
    """localhost or a loopback address: the only hosts we also try over plain HTTP."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def base_urls(registry: str) -> list[str]:
    """Where to look: the explicit scheme if given; else https, and http too for loopback."""
    registry = registry.strip().rstrip("/")
    if re.match(r"^https?://", registry, re.I):
        parts = urlsplit(registry)
        return [f"{parts.scheme.lower()}://{parts.netloc}"]
    host = registry.split("/", 1)[0]
    return [f"https://{host}"] + ([f"http://{host}"] if is_local(host) else [])


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def condition(status: str, reason: str, message: str) -> Condition:
    return Condition(type="Reachable", status=status, reason=reason, message=message)


def fetch_token(base: str, params: dict[str, str], auth: tuple[str, str], timeout: float):
    """The token flow: GET realm (with basic auth) → token, or a Condition saying why not."""
    realm = params.get("realm", "")
    scheme = urlsplit(realm).scheme.lower()
    if scheme not in ("http", "https") or (scheme == "http" and not base.startswith("http:")):
        return None, condition("False", "UnexpectedResponse",
                               "the registry names a token service that is not an https URL; "
                               "credentials were not sent")
    query = {k: params[k] for k in ("service", "scope") if params.get(k)}
    resp = requests.get(realm, params=query, auth=auth, timeout=timeout)
    if resp.status_code in (401, 403):
        return None, condition("False", "AuthenticationFailed",
                               f"the token service of {base} refused the username or password "
                               f"(HTTP {resp.status_code})")
    try:
        body = resp.json() if resp.ok else {}
    except ValueError:
        body = {}
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    if not token:
        return None, condition("Unknown", "UnexpectedResponse",
                               f"the token service of {base} answered HTTP {resp.status_code} "
                               f"without a token")
    return token, None


def probe(base: str, auth: tuple[str, str], timeout: float) -> Condition:
    """One registry endpoint: anonymous GET /v2/, then answer its challenge."""
    url = f"{base}/v2/"
    resp = requests.get(url, timeout=timeout)
    if resp.status_code == 200:
        return condition("Unknown", "UnexpectedResponse",
                         f"{base} accepts anonymous requests, so the credential could not be "
                         f"verified")
    if resp.status_code != 401:
        return unexpected(base, resp)
    scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
    if scheme == "basic":
        resp = requests.get(url, auth=auth, timeout=timeout)
    elif scheme == "bearer":
        token, problem = fetch_token(base, params, auth, timeout)
        if problem:
            return problem
        resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    else:
        return condition("Unknown", "UnexpectedResponse",
                         f"{base} asks for an unsupported authentication scheme {scheme[:20]!r}")
    if resp.status_code == 200:
        return condition("True", "Authenticated", f"logged in to {base} as {auth[0]}")
    if resp.status_code in (401, 403):
        return condition("False", "AuthenticationFailed",
                         f"{base} refused the username or password for {auth[0]} "
                         f"(HTTP {resp.status_code})")
    return unexpected(base, resp)


def unexpected(base: str, resp: requests.Response) -> Condition:
    status = "False" if resp.status_code == 404 else "Unknown"
    hint = "; is this a Docker registry?" if resp.status_code == 404 else ""
    return condition(status, "UnexpectedResponse",
                     f"{base}/v2/ answered HTTP {resp.status_code}{hint}")


@register("docker_registry")
def check_registry(values: dict[str, Any], timeout: float) -> Condition:
    """Reachable=True when the registry accepts the credential's username and password."""
    auth = (str(values.get("username", "")), str(values.get("password", "")))
    registry = str(values.get("registry", "")).strip()
    if not registry:
        return condition("Unknown", "UnexpectedResponse", "the credential names no registry")
    failures = []
    for base in base_urls(registry):
        try:
            return probe(base, auth, timeout)
        except requests.exceptions.SSLError:
            failures.append(f"{base}: TLS handshake failed")
        except requests.exceptions.Timeout:
            failures.append(f"{base}: no answer within {timeout:g}s")
        except requests.exceptions.RequestException as exc:
            failures.append(f"{base}: {type(exc).__name__}")
    return condition("False", "Unreachable", "cannot reach the registry (" + "; ".join(failures)
                     + ")")
