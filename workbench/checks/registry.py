"""Connectivity check of docker_registry credentials: log in to ``/v2/`` like the engine does."""
from __future__ import annotations

import ipaddress
import re
import ssl
from typing import Any
from urllib.parse import urlsplit

import requests

from . import Condition, reachable, register

# Docker Hub answers the registry API on another host than its name (as the engine knows)
HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
HUB_API = "https://registry-1.docker.io"
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
        if parts.netloc.lower() in HUB_NAMES:
            return [HUB_API]
        return [f"{parts.scheme.lower()}://{parts.netloc}"]
    host = registry.split("/", 1)[0]
    if host.lower() in HUB_NAMES:
        return [HUB_API]
    return [f"https://{host}"] + ([f"http://{host}"] if is_local(host) else [])


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def session() -> requests.Session:
    """No proxies or ~/.netrc from the environment, the system's CAs, no redirects followed."""
    http = requests.Session()
    http.trust_env = False  # else requests would add the runner's netrc password for the host
    http.verify = ssl.get_default_verify_paths().cafile or True
    http.headers["User-Agent"] = "workbench-check/1"
    return http


def fetch_token(http: requests.Session, base: str, params: dict[str, str],
                auth: tuple[str, str], timeout: float):
    """The token flow: GET realm (with basic auth) → token, or a Condition saying why not."""
    realm = params.get("realm", "")
    scheme = urlsplit(realm).scheme.lower()
    if scheme not in ("http", "https") or (scheme == "http" and not base.startswith("http:")):
        return None, reachable("False", "UnexpectedResponse",
                               "the registry names a token service that is not an https URL; "
                               "credentials were not sent")
    query = {k: params[k] for k in ("service", "scope") if params.get(k)}
    resp = http.get(realm, params=query, auth=auth, timeout=timeout, allow_redirects=False)
    if resp.status_code in (401, 403):
        return None, reachable("False", "AuthenticationFailed",
                               f"the token service of {base} refused the username or password "
                               f"(HTTP {resp.status_code})")
    try:
        body = resp.json() if resp.ok else {}
    except ValueError:
        body = {}
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    if not token:
        return None, reachable("Unknown", "UnexpectedResponse",
                               f"the token service of {base} answered HTTP {resp.status_code} "
                               f"without a token")
    return token, None


def probe(http: requests.Session, base: str, auth: tuple[str, str], timeout: float) -> Condition:
    """One registry endpoint: anonymous GET /v2/, then answer its challenge."""
    url = f"{base}/v2/"
    resp = http.get(url, timeout=timeout, allow_redirects=False)
    if resp.status_code == 200:
        return reachable("Unknown", "NotTestable",
                         f"{base} answers without credentials, so the credential could not be "
                         f"tested")
    if resp.status_code != 401:
        return unexpected(base, resp)
    scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
    if scheme == "basic":
        resp = http.get(url, auth=auth, timeout=timeout, allow_redirects=False)
    elif scheme == "bearer":
        token, problem = fetch_token(http, base, params, auth, timeout)
        if problem:
            return problem
        resp = http.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        allow_redirects=False)
    else:
        return reachable("Unknown", "UnexpectedResponse",
                         f"{base} asks for an unsupported authentication scheme {scheme[:20]!r}")
    if resp.status_code == 200:
        return reachable("True", "Authenticated", f"logged in to {base} as {auth[0]}")
    if resp.status_code in (401, 403):
        return reachable("False", "AuthenticationFailed",
                         f"{base} refused the username or password for {auth[0]} "
                         f"(HTTP {resp.status_code})")
    return unexpected(base, resp)


def unexpected(base: str, resp: requests.Response) -> Condition:
    status = "False" if resp.status_code == 404 else "Unknown"
    hint = "; is this a Docker registry?" if resp.status_code == 404 else ""
    return reachable(status, "UnexpectedResponse",
                     f"{base}/v2/ answered HTTP {resp.status_code}{hint}")


@register("docker_registry")
def check_registry(values: dict[str, Any], timeout: float) -> Condition:
    """Reachable=True when the registry accepts the credential's username and password."""
    auth = (str(values.get("username", "")), str(values.get("password", "")))
    registry = str(values.get("registry", "")).strip()
    if not registry:
        return reachable("Unknown", "UnexpectedResponse", "the credential names no registry")
    failures = []
    with session() as http:
        for base in base_urls(registry):
            try:
                return probe(http, base, auth, timeout)
            except requests.exceptions.SSLError:
                failures.append(f"{base}: TLS handshake failed")
            except requests.exceptions.Timeout:
                failures.append(f"{base}: no answer within {timeout:g} s")
            except requests.exceptions.RequestException as exc:
                failures.append(f"{base}: {type(exc).__name__}")
    return reachable("False", "Unreachable", "cannot reach the registry (" + "; ".join(failures)
                     + ")")
