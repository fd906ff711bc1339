"""Sign-in throttling behind a reverse proxy, and the per-account back-off."""
import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.test_web import login
from workbench import audit, create_app, signin
from workbench.errors import ConfigError
from workbench.models import AuditEvent
from workbench.proxies import TrustedProxies, parse

PROXY = "127.0.0.1"  # the test client's peer address: the proxy


@pytest.fixture
def proxied(vault):
    """The app behind a trusted reverse proxy at 127.0.0.1."""
    return create_app(dataclasses.replace(vault.settings, trusted_proxies=f"{PROXY}, 10.9.0.0/16"),
                      vault=vault)


def via(client, username, password, client_addr, peer=PROXY, forwarded=None):
    """Sign in through the proxy, which says the request came from ``client_addr``."""
    client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded or client_addr
    try:
        return login(client, username, password, addr=peer)
    finally:
        del client.environ_base["HTTP_X_FORWARDED_FOR"]


def test_behind_a_trusted_proxy_one_guesser_does_not_lock_out_everyone(proxied, users, vault):
    guesser = proxied.test_client()
    for i in range(25):
        via(guesser, f"guess{i}", "wrong-password", "203.0.113.9")
    assert via(guesser, *users["viewer"], "203.0.113.9").status_code == 429
    # Another person behind the same proxy signs in; the audit log names their address.
    assert via(proxied.test_client(), *users["editor"], "198.51.100.7").status_code == 302
    with vault.factory() as s:
        ok = audit.query(s, action="auth.login", outcome="ok", target=users["editor"][0])
        sources = {e.source for e in audit.query(s, action="auth.login", outcome="denied")}
    assert [e.source for e in ok] == ["198.51.100.7"] and sources == {"203.0.113.9"}


def test_forwarded_for_is_believed_only_from_trusted_proxies(proxied, users, vault):
    c = proxied.test_client()
    # a client reaching the server directly cannot pick its address with the header
    assert via(c, *users["admin"], "198.51.100.1", peer="192.0.2.50").status_code == 302
    # behind two trusted proxies (10.9.0.3 forwarded to 127.0.0.1), the nearest untrusted
    # address counts, not the one the client wrote at the left
    assert via(proxied.test_client(), *users["editor"], None,
               forwarded="1.2.3.4, 198.51.100.2, 10.9.0.3").status_code == 302
    with vault.factory() as s:
        sources = [e.source for e in audit.query(s, action="auth.login", outcome="ok")]
    assert sorted(sources) == ["192.0.2.50", "198.51.100.2"]


def test_the_proxy_list_is_checked():
    with pytest.raises(ConfigError, match="not an address"):
        parse("10.0.0.1, proxy.example")
    fix = TrustedProxies(None, parse("10.0.0.1"))
    assert fix.client("10.0.0.1", "garbage, 198.51.100.3") == "198.51.100.3"
    assert fix.client("10.0.0.1", "198.51.100.3, not-an-ip") == "10.0.0.1"


def _age_failures(vault, username: str, seconds: float, but_not: str) -> None:
    """Move the account's sign-in events back in time (instead of sleeping through the
    back-off), except those from ``but_not``."""
    t = AuditEvent.__table__
    with vault.engine.begin() as conn:
        rows = conn.execute(select(t.c.id, t.c.at).where(t.c.target == username,
                                                          t.c.source != but_not)).all()
        for pk, at in rows:  # in Python: SQLite has no datetime arithmetic on these columns
            conn.execute(update(t).where(t.c.id == pk)
                         .values(at=at - timedelta(seconds=seconds)))


def test_an_account_backs_off_exponentially_but_never_locks_its_owner_out(proxied, users,
                                                                           vault):
    name, pw = users["editor"]
    owner = proxied.test_client()
    assert via(owner, name, pw, "198.51.100.20").status_code == 302  # a known browser now
    assert owner.get_cookie(signin.DEVICE_COOKIE, path="/login") is not None
    owner.delete_cookie("session")  # signed out, the known-device cookie stays
    guesser = proxied.test_client()
    # guesses from many addresses: no per-address limit applies
    for i in range(signin.ACCOUNT_FREE):
        assert via(guesser, name, "wrong-password", f"203.0.113.{i + 1}").status_code == 401
    # now the account waits, even for the right password from a new browser: 1 s, then 2 s
    r = via(proxied.test_client(), name, pw, "198.51.100.21")
    assert r.status_code == 429 and "Try again in 1 second." in r.get_data(as_text=True)
    _age_failures(vault, name, 2, but_not="198.51.100.21")
    assert via(guesser, name, "wrong-password", "203.0.113.99").status_code == 401
    r = via(proxied.test_client(), name, pw, "198.51.100.21")
    assert r.status_code == 429 and "Try again in 2 seconds." in r.get_data(as_text=True)
    # refused attempts (those from .21) do not prolong the wait: only checked passwords count
    _age_failures(vault, name, 3, but_not="198.51.100.21")
    assert via(proxied.test_client(), name, pw, "198.51.100.22").status_code == 302
    # many more guesses: the wait grows to MAX_WAIT and no further
    with vault.factory.begin() as s:
        s.add_all(AuditEvent(actor="anonymous", action="auth.login", outcome="denied",
                             target=name, source=f"203.0.115.{i}") for i in range(40))
    r = via(proxied.test_client(), name, pw, "198.51.100.23")
    wait = int(signin.MAX_WAIT.total_seconds())
    assert r.status_code == 429 and f"Try again in {wait} seconds." in r.get_data(as_text=True)
    # the owner's known browser skips the account's wait: never locked out
    assert via(owner, name, pw, "198.51.100.24").status_code == 302
