"""One HTTP(S) request for a connectivity test, and network failures turned into conditions."""
from __future__ import annotations

import errno
import http.client
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from . import Condition, deadline, reachable

MAX_BODY = 256 * 1024  # an answer bigger than this is cut; the tests only look at small JSON


class BadURL(ValueError):
    """The target is not an http(s) URL this module can request."""


class HungUp(ConnectionError):
    """The server closed the connection after the TLS handshake, before any HTTP answer."""


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: the only form a message may show."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{p.port}" if p.port else ""
    except ValueError:
        return "the target URL"
    return urlunsplit((p.scheme, host + port, p.path, "", ""))


def without_userinfo(url: str) -> str:
    """``url`` with any ``user:password@`` removed (the query is kept: it may be needed)."""
    p = urlsplit(url)
    netloc = p.netloc.rpartition("@")[2]
    return urlunsplit((p.scheme, netloc, p.path, p.query, ""))


class _Connection(http.client.HTTPSConnection):
    """HTTPS that may verify the certificate against another name (kubeconfig tls-server-name)."""

    def __init__(self, host, port, *, timeout, context, server_name=None):
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock,
                                              server_hostname=self._server_name or self.host)


def fetch(url: str, *, timeout: float, method: str = "GET", headers: dict | None = None,
          body: bytes | None = None, context: ssl.SSLContext | None = None,
          server_name: str | None = None) -> Reply:
    """Send one request to ``url`` (no redirects followed, no proxy) and read a bounded answer."""
    try:
        p = urlsplit(url)
        p.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise BadURL("not an http(s) URL") from None
    if p.scheme not in ("http", "https") or not p.hostname:
        raise BadURL("not an http(s) URL")
    path = (p.path or "/") + (f"?{p.query}" if p.query else "")
    timeout = deadline.left(timeout)
    if p.scheme == "https":
        conn: http.client.HTTPConnection = _Connection(
            p.hostname, p.port, timeout=timeout, context=context or ssl.create_default_context(),
            server_name=server_name)
    else:
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)
    try:
        conn.connect()
        with deadline.guard(conn.sock):  # a trickling server is cut at the deadline
            try:
                conn.request(method, path, body=body, headers={"User-Agent": "workbench-check/1",
                                                              **(headers or {})})
                resp = conn.getresponse()
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                    BrokenPipeError, http.client.RemoteDisconnected):
                raise HungUp("closed without an answer") from None
            data = resp.read(MAX_BODY)
        return Reply(resp.status, resp.getheader("Content-Type", "") or "", data)
    finally:
        conn.close()


def join(base: str, path: str) -> str:
    """``base`` (which may carry a path prefix) + an absolute API ``path``."""
    return base.rstrip("/") + path


def network_failure(exc: BaseException, where: str, timeout: float,
                    client_cert: bool = False) -> Condition:
    """The condition for a request that never got an HTTP answer; names no secret."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or "verification failed"
        return reachable("False", "Unreachable",
                         f"the TLS certificate of {where} is not trusted ({why})")
    if isinstance(exc, ssl.SSLError):
        code = str(exc.reason or "").upper()
        if client_cert and "ALERT" in code and ("CERTIFICATE" in code or "UNKNOWN_CA" in code):
            return reachable("False", "AuthenticationFailed",
                             f"{where} refused the client certificate ({exc.reason})")
        return reachable("False", "Unreachable",
                         f"the TLS handshake with {where} failed ({exc.reason or 'error'})")
    if isinstance(exc, HungUp):
        if client_cert:  # TLS 1.3 servers refuse a client certificate after the handshake
            return reachable("False", "AuthenticationFailed", f"{where} closed the connection "
                             "after the client certificate was sent")
        return reachable("False", "UnexpectedResponse", f"{where} closed the connection "
                         "without an answer")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return reachable("False", "Unreachable", f"no answer from {where} within {timeout:g} s")
    if isinstance(exc, socket.gaierror):
        return reachable("False", "Unreachable", f"the host of {where} does not resolve")
    if isinstance(exc, ConnectionRefusedError):
        return reachable("False", "Unreachable", f"{where} refused the connection")
    if isinstance(exc, http.client.HTTPException):
        return reachable("False", "UnexpectedResponse", f"{where} did not answer in HTTP")
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "network error")
        return reachable("False", "Unreachable", f"cannot connect to {where} ({name})")
    raise exc


def status_condition(code: int, where: str) -> Condition:
    """2xx/3xx → Authenticated, 401/403 → AuthenticationFailed, anything else unexpected."""
    if 200 <= code < 400:
        return reachable("True", "Authenticated", f"{where} accepted the credential (HTTP {code})")
    if code in (401, 403):
        return reachable("False", "AuthenticationFailed",
                         f"{where} rejected the credential (HTTP {code})")
    return reachable("False", "UnexpectedResponse", f"{where} answered HTTP {code}")
