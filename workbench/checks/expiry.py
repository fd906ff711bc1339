"""When a credential stops working: JWT ``exp`` claims and X.509 ``notAfter`` dates."""
from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timedelta, timezone

from cryptography import x509

from . import Condition

SOON = timedelta(days=14)
JWT = re.compile(r"^[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*$")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` of a JWT, read without verifying the signature; None when not a JWT."""
    token = (token or "").strip()
    if len(token) > 16384 or not JWT.match(token):
        return None
    head, body, _sig = token.split(".")
    try:
        header, payload = json.loads(_b64url(head)), json.loads(_b64url(body))
        exp = payload.get("exp") if isinstance(header, dict) and "alg" in header else None
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            return None
        return datetime.fromtimestamp(exp, timezone.utc)
    except (ValueError, binascii.Error, AttributeError, OverflowError, OSError):
        return None


def cert_expiry(pem: bytes) -> datetime:
    """The earliest ``notAfter`` among the PEM certificates (a client cert plus its chain)."""
    certs = x509.load_pem_x509_certificates(pem)  # ValueError when none parse
    return min(c.not_valid_after_utc for c in certs)


def expiring(label: str, when: datetime, now: datetime | None = None) -> Condition:
    """``Expiring``: True under 14 days left (reason ExpiresSoon) or once past (Expired)."""
    now = now or datetime.now(timezone.utc)
    left = when - now
    day = when.strftime("%Y-%m-%d %H:%M UTC")
    if left <= timedelta(0):
        return Condition("Expiring", "True", "Expired", f"{label} expired on {day}")
    days = round(left / timedelta(days=1))  # a cert made "for 3 days" reads "in 3 days"
    span = f"in {days} day{'s' if days != 1 else ''}" if left >= timedelta(days=1) else \
        "within a day"
    if left < SOON:
        return Condition("Expiring", "True", "ExpiresSoon", f"{label} expires {span} ({day})")
    return Condition("Expiring", "False", "NotExpiringSoon", f"{label} expires {span} ({day})")
