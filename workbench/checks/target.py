"""Connectivity checks of username/password and secret-text credentials against their target."""
from __future__ import annotations

import base64
from http.client import HTTPException
from urllib.parse import urlsplit

from . import Condition, reachable, register
from .git import SCP, is_git_target, ls_remote
from .probe import (BadURL, fetch, network_failure, safe_url, status_condition,
                    without_userinfo)

GIT_ADVERTISEMENT = "application/x-git-upload-pack-advertisement"


def _target(values: dict) -> str | None:
    t = values.get("target")
    return t.strip() if isinstance(t, str) and t.strip() else None


def _no_target() -> Condition:
    return reachable("Unknown", "NoTarget", "no target is stored with this credential, so there "
                     "is nothing to test it against")


def _testable(target: str) -> Condition | None:
    if any(c.isspace() or ord(c) < 32 for c in target) or target.startswith("-"):
        return reachable("Unknown", "NotTestable", "the target is not a URL")
    if SCP.match(target) or urlsplit(target).scheme in ("http", "https", "ssh", "git"):
        return None
    return reachable("Unknown", "NotTestable",
                     "only http, https, ssh and git targets are tested")


def _speaks_git(url: str, auth: str, timeout: float) -> bool:
    """Does ``url`` answer the smart-HTTP ref advertisement (a git server without ``.git``)?"""
    probe = url.split("?", 1)[0].rstrip("/") + "/info/refs?service=git-upload-pack"
    try:
        reply = fetch(probe, timeout=timeout, headers={"Authorization": auth})
    except (OSError, HTTPException, BadURL):
        return False
    return reply.status == 200 and reply.content_type.startswith(GIT_ADVERTISEMENT)


def check_target(target: str, username: str, secret: str, timeout: float,
                 token: bool) -> Condition:
    """git targets via ``git ls-remote``; other http(s) URLs by one authenticated request."""
    refused = _testable(target)
    if refused:
        return refused
    if urlsplit(target).scheme == "git":
        return reachable("Unknown", "NotTestable", "the git:// protocol has no authentication")
    if token and (urlsplit(target).scheme == "ssh" or SCP.match(target)):
        return reachable("Unknown", "NotTestable", "a token cannot be tested over SSH")
    if is_git_target(target):
        return ls_remote(target, username, secret, timeout, token=token)
    url = without_userinfo(target)
    basic = "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()
    if _speaks_git(url, basic, timeout):  # asked the way git itself will ask
        return ls_remote(target, username, secret, timeout, token=token)
    auth = f"Bearer {secret}" if token else basic
    at = safe_url(url)
    try:
        reply = fetch(url, timeout=timeout, headers={"Authorization": auth})
    except BadURL:
        return reachable("Unknown", "NotTestable", "the target is not a URL")
    except (OSError, HTTPException) as exc:
        return network_failure(exc, at, timeout)
    return status_condition(reply.status, at)


@register("username_password")
def check_username_password(values: dict, timeout: float) -> Condition:
    """Basic auth (or git's password prompt) against the stored target."""
    target = _target(values)
    if not target:
        return _no_target()
    return check_target(target, values.get("username", ""), values.get("password", ""), timeout,
                        token=False)


@register("secret_text")
def check_secret_text(values: dict, timeout: float) -> Condition:
    """Bearer auth (or the token as git's password) against the stored target."""
    target = _target(values)
    if not target:
        return _no_target()
    user = urlsplit(target).username if not SCP.match(target) else None
    return check_target(target, user or "x-access-token", values.get("secret", ""), timeout,
                        token=True)
