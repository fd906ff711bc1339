"""Sign-in throttling, counted from the audit log (so it holds across workers and instances).

Three limits: failures per username and address, failures per address (password spraying),
and per account, whatever the address: after ``ACCOUNT_FREE`` failures since the account's
last sign-in, each attempt must wait twice as long as the one before, up to ``MAX_WAIT``.  A
wait, never a lock: the owner can always sign in once it is over, and a browser that has signed
in to the account before (a signed *known-device* cookie) skips the account's wait altogether,
so someone guessing passwords from many addresses slows themselves, not the owner."""
from __future__ import annotations

from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select

from .db import aware, utcnow
from .models import AuditEvent

MAX_FAILURES = 5  # per username and address
MAX_ADDRESS_FAILURES = 20  # per address, whatever the username (password spraying)
ACCOUNT_FREE = 10  # failures of one account (from anywhere) before it must wait
MAX_WAIT = timedelta(minutes=5)
WINDOW = timedelta(minutes=15)
DEVICE_COOKIE, DEVICE_DAYS = "wb_device", 90
REFUSED = "rate_limited"  # the audit detail of an attempt refused before its password was checked


def _failures(username: str | None = None, source: str | None = None):
    q = select(func.count(), func.max(AuditEvent.at)).select_from(AuditEvent).where(
        AuditEvent.action == "auth.login", AuditEvent.outcome == "denied",
        AuditEvent.at >= utcnow() - WINDOW)
    if source is not None:
        q = q.where(AuditEvent.source == source[:100])
    if username is not None:
        q = q.where(AuditEvent.target == username[:200])
    return q


def count_failures(s, source: str, username: str | None = None) -> int:
    """Failed sign-ins from this address (for this username) in the last 15 minutes."""
    return s.execute(_failures(username, source)).one()[0] or 0


def account_wait(s, username: str) -> timedelta:
    """How long this account must still wait before its password is checked again.  Only
    checked passwords count (an attempt refused while waiting does not prolong the wait),
    since the account's last successful sign-in."""
    last_ok = s.scalar(select(func.max(AuditEvent.at)).where(
        AuditEvent.action == "auth.login", AuditEvent.outcome == "ok",
        AuditEvent.target == username[:200]))
    q = _failures(username).where(
        func.coalesce(AuditEvent.details["reason"].as_string(), "") != REFUSED)
    if last_ok is not None:
        q = q.where(AuditEvent.at > last_ok)
    count, last = s.execute(q).one()
    if not count or count < ACCOUNT_FREE:
        return timedelta(0)
    wait = min(timedelta(seconds=2 ** (count - ACCOUNT_FREE)), MAX_WAIT)
    return max(timedelta(0), aware(last) + wait - utcnow())


def limited(s, username: str, source: str, known_device: bool = False) -> str | None:
    """Why this attempt is refused before its password is checked, or None."""
    if count_failures(s, source, username) >= MAX_FAILURES or \
            count_failures(s, source) >= MAX_ADDRESS_FAILURES:
        return "Too many failed sign-in attempts. Wait 15 minutes and try again."
    wait = timedelta(0) if known_device else account_wait(s, username)
    if wait:
        seconds = int(wait.total_seconds()) + 1
        return (f"Too many failed sign-in attempts for this account. Try again in {seconds} "
                f"second{'s' if seconds != 1 else ''}.")
    return None


def _devices(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="workbench known device")


def device_token(secret: str, username: str) -> str:
    """The known-device cookie's value after ``username`` signed in on this browser."""
    return _devices(secret).dumps(username)


def is_known_device(secret: str, cookie: str | None, username: str) -> bool:
    if not cookie:
        return False
    try:
        return _devices(secret).loads(cookie, max_age=DEVICE_DAYS * 86400) == username
    except BadSignature:
        return False
