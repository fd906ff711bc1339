"""People's passwords: the policy, the argon2id hasher, and changing and resetting them."""
from __future__ import annotations

import functools
import secrets
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from . import audit
from .audit import Actor
from .errors import ValidationError
from .models import User

MIN_LENGTH = 10
MAX_LENGTH = 256  # argon2 hashes any length; this only bounds the work of a silly request
# argon2id with RFC 9106's second recommended profile ("low memory"): 3 passes over 64 MiB,
# 4 lanes, a 16-byte salt and a 32-byte hash (docs/security.md).  Named here rather than
# left to the library's defaults, so an upgrade of argon2-cffi cannot change them unnoticed.
hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32,
                        salt_len=16)


@functools.cache
def common() -> frozenset[str]:
    """The breached-password list shipped in ``workbench/data`` (lower case)."""
    text = resources.files("workbench").joinpath("data/common-passwords.txt").read_text()
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def check(password: object, username: str = "") -> str:
    """The password if the policy accepts it; else a ValidationError naming the rule."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise ValidationError(f"password must be at least {MIN_LENGTH} characters",
                              field="password")
    if len(password) > MAX_LENGTH:
        raise ValidationError(f"password must be at most {MAX_LENGTH} characters",
                              field="password")
    folded = password.lower()
    if folded in common() or (username and folded == username.lower()):
        raise ValidationError("this password is too common (it appears in lists of breached "
                              "passwords); choose another", field="password")
    return password


def hash_password(password: str) -> str:
    return hasher.hash(password)


def verify(user: User | None, password: str, dummy: str) -> bool:
    """Whether ``password`` is the user's (``dummy`` is verified for no user, for even timing);
    an old-parameter hash is upgraded on success."""
    try:
        hasher.verify(user.password_hash if user else dummy, password or "")
    except (VerificationError, InvalidHashError):
        return False
    if user is not None and hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return user is not None


def generate() -> str:
    """A one-time password for ``init`` and admin resets (120 random bits)."""
    return secrets.token_urlsafe(15)


def _set(user: User, password: str, *, must_change: bool) -> None:
    user.password_hash = hash_password(check(password, user.username))
    user.must_change_password = must_change
    # every other session of the user ends (a session's cookie carries the epoch)
    user.session_epoch = (user.session_epoch or 0) + 1


def change_own(s: Session, actor: Actor, user: User, current: str, new: str) -> User:
    """A user changes their own password; the current one is asked for again."""
    if not verify(user, current, user.password_hash):
        raise audit.refused(ValidationError("the current password is wrong",
                                            field="current_password"),
                            actor, "user.password", target=user.username)
    if current == new:
        raise ValidationError("the new password must differ from the current one",
                              field="password")
    _set(user, new, must_change=False)
    audit.record(s, actor, "user.password", target=user.username)
    return user


def reset(s: Session, actor: Actor, user: User, new: str) -> User:
    """An admin sets someone's password: they must change it at their next sign-in."""
    _set(user, new, must_change=True)
    audit.record(s, actor, "user.password_reset", target=user.username)
    return user
