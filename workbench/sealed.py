"""Named server secrets kept in the database, sealed by the master key: the session-signing
secret and the per-source push-hook secrets are the same on every app instance that shares the
database, and no instance folder holds one."""
from __future__ import annotations

import secrets

from sqlalchemy import LargeBinary, String, Integer, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from . import keyterms
from .crypto import Barrier
from .db import Base

SESSION = "session"


class SealedValue(Base):
    """One secret: its data key wrapped by the master key of ``key_term``."""

    __tablename__ = "sealed_values"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    key_term: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


def _aad(name: str) -> bytes:
    return f"workbench/v1|sealed|{name}".encode()


def read(s: Session, barrier: Barrier, name: str) -> str | None:
    """The secret's value, or None if there is none."""
    row = s.get(SealedValue, name)
    if row is None:
        return None
    return barrier.open(row.wrapped_key, row.ciphertext, _aad(name)).decode()


def put(s: Session, barrier: Barrier, name: str, value: str | None = None) -> str:
    """Store (or replace) a secret; a fresh random one when no value is given."""
    value = value or secrets.token_urlsafe(32)
    sealed = keyterms.writable(s, barrier).seal(value.encode(), _aad(name))
    row = s.get(SealedValue, name)
    if row is None:
        row = SealedValue(name=name)
        s.add(row)
    row.key_term, row.wrapped_key, row.ciphertext = sealed.term, sealed.wrapped_key, \
        sealed.ciphertext
    s.flush()
    return value


def ensure(factory: sessionmaker[Session], barrier: Barrier, name: str) -> str:
    """The secret, created once: two instances starting together both end with the first one
    committed (the loser's insert fails on the primary key and it reads the winner's)."""
    with factory() as s:
        value = read(s, barrier, name)
        if value is not None:
            return value
    try:
        with factory.begin() as s:
            return put(s, barrier, name)
    except IntegrityError:
        with factory() as s:
            return read(s, barrier, name)


def drop(s: Session, name: str) -> None:
    row = s.get(SealedValue, name)
    if row is not None:
        s.delete(row)


def rewrap(s: Session, barrier: Barrier, term: int) -> int:
    """Move every secret to ``term``'s master key (part of ``keys rotate``)."""
    rows = s.execute(select(SealedValue.name, SealedValue.wrapped_key)
                     .where(SealedValue.key_term != term)).all()
    for name, wrapped in rows:
        s.execute(update(SealedValue).where(SealedValue.name == name).values(
            key_term=term, wrapped_key=barrier.rewrap(wrapped, _aad(name), term)))
    return len(rows)
