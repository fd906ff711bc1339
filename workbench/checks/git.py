"""``git ls-remote`` with a credential that never appears in argv or the URL."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from git.cmd import Git

from .. import gitauth
from . import Condition, deadline, reachable
from .probe import safe_url

# scp-like syntax: [user@]host:path (no scheme, no "//" after the colon; "host:443" is no path)
SCP = re.compile(r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])"
                 r":(?P<path>(?!//)(?!\d+$)[^\s]+)$")
SCHEMES = ("http", "https", "ssh", "git")
# environment a git subprocess keeps (search path, locale, TLS trust store); everything else
# is blanked (see _environment).  Proxies are not kept: checks connect directly.
KEEP_ENV = ("PATH", "LANG", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
            "GIT_SSL_CAPATH", "CURL_CA_BUNDLE", "NIX_SSL_CERT_FILE")

_AUTH_FAILED = ("authentication failed", "permission denied", "could not read username",
                "could not read password", "returned error: 401", "returned error: 403",
                "invalid username or password", "access denied", "http basic: access denied")
_UNREACHABLE = ("could not resolve host", "failed to connect", "connection refused",
                "couldn't connect", "no route to host", "connection timed out",
                "network is unreachable", "could not read from remote repository",
                "connection closed by", "connection reset")
_TLS = ("ssl certificate problem", "server certificate verification failed",
        "unable to get local issuer certificate")
_MISSING = ("not found", "does not appear to be a git repository", "returned error: 404")


def is_git_target(target: str) -> bool:
    """A URL git itself would be asked about: ssh/git schemes, scp-like, or ``….git``."""
    if SCP.match(target):
        return True
    p = urlsplit(target)
    return p.scheme in ("ssh", "git") or (
        p.scheme in ("http", "https") and p.path.rstrip("/").endswith(".git"))


def where(target: str) -> str:
    m = SCP.match(target)
    return f"{m['host']}:{m['path']}" if m else safe_url(target)


def _url_for(target: str, username: str, token: bool) -> str:
    """The URL git gets: never a password.

    Over HTTP a password credential's username comes from the askpass helper (so the URL
    carries none) and a token keeps the URL's username; over SSH the username is in the URL.
    """
    m = SCP.match(target)
    if m:
        user = username or m["user"]
        return f"{user}@{m['host']}:{m['path']}" if user else f"{m['host']}:{m['path']}"
    p = urlsplit(target)
    if p.scheme in ("http", "https"):
        user = p.username if token else None
    else:
        user = username or p.username
    host = p.netloc.rpartition("@")[2]
    netloc = f"{user}@{host}" if user and p.scheme != "git" else host
    return urlunsplit((p.scheme, netloc, p.path, p.query, ""))


def _environment(tmp: Path, username: str, password: str, timeout: float) -> dict[str, str]:
    # GitPython always starts from os.environ; blank what is not ours so the server's own
    # secrets (database URL, master key…) do not reach git, curl or ssh
    env = {k: "" for k in os.environ if k not in KEEP_ENV}
    env.update({k: os.environ[k] for k in KEEP_ENV if k in os.environ})
    known_hosts = tmp / "known_hosts"
    ssh = ["ssh", "-F", "none", "-o", "StrictHostKeyChecking=accept-new",
           "-o", f"UserKnownHostsFile={known_hosts}",
           "-o", f"ConnectTimeout={max(1, int(timeout))}",
           "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
           "-o", "PreferredAuthentications=password,keyboard-interactive"]
    env.update(gitauth.environment(tmp / "askpass", username, password))
    env.update({
        "HOME": str(tmp), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
        "SSH_ASKPASS": str(tmp / "askpass"), "SSH_ASKPASS_REQUIRE": "force",
        "GIT_SSH_COMMAND": shlex.join(ssh), "GIT_SSH_VARIANT": "ssh",
        "GIT_ALLOW_PROTOCOL": ":".join(SCHEMES),  # no ext::, file:// or other remote helpers
        "GIT_HTTP_LOW_SPEED_LIMIT": "1", "GIT_HTTP_LOW_SPEED_TIME": str(max(1, int(timeout))),
        "WORKBENCH_ASKPASS_DIR": str(tmp), "LC_ALL": "C", "LANGUAGE": "C",
    })
    return env


def ls_remote(target: str, username: str, password: str, timeout: float,
              token: bool = False) -> Condition:
    """Run ``git ls-remote`` against ``target`` answering prompts with the credential."""
    at = where(target)
    url = _url_for(target, username, token)
    if url.startswith("-"):
        return reachable("Unknown", "NotTestable", "the target is not a git URL")
    try:
        left = deadline.left(timeout)  # after an HTTP probe, what is left of the deadline
    except TimeoutError:
        return reachable("False", "Unreachable", f"no answer from {at} within {timeout:g} s")
    tmp = Path(tempfile.mkdtemp(prefix="wb-check-git-"))
    try:
        gitauth.install(tmp)
        status, _out, err = Git(str(tmp)).execute(
            ["git", "-c", "credential.helper=", "-c", "core.askPass=", "-c", "http.proxy=",
             "ls-remote", "--", url, "HEAD"],
            env=_environment(tmp, username, password, left), kill_after_timeout=left,
            with_extended_output=True, with_exceptions=False)
        asked = (tmp / "asked").exists()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if status == 0:
        if not asked:
            return reachable("Unknown", "NotTestable", f"{at} answers without credentials, so "
                             "the credential could not be tested")
        who = "the token" if token else f"user {username!r}"
        return reachable("True", "Authenticated", f"git ls-remote {at} succeeded with {who}")
    return _failure(str(err).lower(), at, timeout)


def _failure(err: str, at: str, timeout: float) -> Condition:
    """Classify git's stderr; the message is ours, never git's text (it may quote a URL)."""
    # "timeout:" is GitPython's kill; "operation too slow" is curl's low-speed limit (curl 28)
    if err.startswith("timeout:") or ("timed out" in err and "connection timed out" not in err) \
            or "operation too slow" in err:
        return reachable("False", "Unreachable", f"no answer from {at} within {timeout:g} s")
    if any(s in err for s in _AUTH_FAILED):
        return reachable("False", "AuthenticationFailed", f"{at} rejected the credential")
    if any(s in err for s in _TLS):
        return reachable("False", "Unreachable", f"the TLS certificate of {at} is not trusted")
    if any(s in err for s in _UNREACHABLE):
        return reachable("False", "Unreachable", f"cannot connect to {at}")
    if ("unsupported" in err and "protocol" in err) or ("transport" in err
                                                        and "not allowed" in err):
        return reachable("Unknown", "NotTestable", f"git does not speak the protocol of {at}")
    if any(s in err for s in _MISSING):
        return reachable("False", "UnexpectedResponse", f"there is no git repository at {at}")
    return reachable("False", "UnexpectedResponse", f"git ls-remote {at} failed")
