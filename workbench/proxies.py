"""The client's address behind reverse proxies that the operator trusts, and only those.

Behind a proxy every request comes from the proxy's address, so limits per address (sign-in
throttling) would lump every user together.  ``X-Forwarded-For`` names the client, but anyone
can send that header: it is believed only when the TCP peer is one of the configured proxies
(``WORKBENCH_TRUSTED_PROXIES``), and then only as far back as the chain stays trusted.
Werkzeug's ``ProxyFix`` trusts a fixed number of hops from any peer, which a client that
reaches the server directly could spoof; hence this middleware."""
from __future__ import annotations

import ipaddress
from typing import Callable, Iterable

from .errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (``10.0.0.0/8, ::1``); a clear error otherwise."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"WORKBENCH_TRUSTED_PROXIES: {item[:60]!r} is not an address or "
                              "network") from None
    return tuple(out)


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class TrustedProxies:
    """WSGI middleware: from a trusted peer, ``REMOTE_ADDR`` becomes the nearest untrusted
    address of ``X-Forwarded-For`` (read right to left) and ``wsgi.url_scheme`` the last
    ``X-Forwarded-Proto``; the peer's own address is kept in ``workbench.proxy``."""

    def __init__(self, app: Callable, networks: tuple[Network, ...]):
        self.app, self.networks = app, networks

    def trusted(self, addr) -> bool:
        return addr is not None and any(addr in net for net in self.networks)

    def client(self, peer: str, forwarded: str) -> str:
        """The client's address for a request from ``peer`` with this X-Forwarded-For."""
        client = peer
        if not self.trusted(_address(peer)):
            return client
        for hop in reversed(forwarded.split(",")):
            addr = _address(hop)
            if addr is None:
                break  # garbage from the client's side: stop at the last good hop
            client = str(addr)
            if not self.trusted(addr):
                break
        return client

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        peer = environ.get("REMOTE_ADDR", "")
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded and self.trusted(_address(peer)):
            environ["workbench.proxy"] = peer
            environ["REMOTE_ADDR"] = self.client(peer, forwarded)
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").rpartition(",")[2].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
