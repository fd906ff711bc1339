"""Per-step OIDC identity tokens: ES256 JWTs signed with a key held sealed in the vault.

A step that declares ``id_token: {aud: …}`` receives, with its credentials, a JWT whose
subject names the workspace, source, pipeline, ref and step of the run, so that a cloud can
trust that exact step and nothing else.  The private key is sealed by the barrier like a
credential version; its public half is published as a JWK (``/.well-known/jwks.json``).
Rotation retires the signing key (still published until its tokens have expired) and starts
a new one; retired keys are then removed."""
from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import datetime, timedelta

from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import DateTime, LargeBinary, String, Text, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import audit
from .audit import Actor
from .crypto import Barrier
from .db import Base, aware, utcnow
from .errors import CryptoError

ALG = "ES256"
DEFAULT_TTL = 600  # seconds, for a step without a timeout
MAX_TTL = 3600  # a token never outlives its step's timeout, nor an hour
KEEP_RETIRED = timedelta(seconds=MAX_TTL)  # a retired key is published until its tokens expire
log = logging.getLogger(__name__)
_cache: dict[str, ECKey] = {}  # kid → the opened private key, per process
_lock = threading.Lock()


class SigningKey(Base):
    """One signing key: its public JWK, and its private key (PEM) sealed by the barrier."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_jwk: Mapped[str] = mapped_column(Text)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _aad(kid: str) -> bytes:
    return f"signing-key|{kid}".encode()


def new_key(s: Session, barrier: Barrier) -> SigningKey:
    """Generate a P-256 key, seal its private half, publish its public half."""
    kid = uuid.uuid4().hex
    key = ECKey.generate_key("P-256", private=True, parameters={"kid": kid})
    sealed = barrier.seal(key.as_pem(private=True), _aad(kid))
    row = SigningKey(kid=kid, public_jwk=json.dumps(
        {**key.as_dict(private=False), "use": "sig", "alg": ALG}, sort_keys=True),
        wrapped_key=sealed.wrapped_key, ciphertext=sealed.ciphertext, created_at=utcnow())
    s.add(row)
    s.flush()
    return row


def signer(s: Session, barrier: Barrier) -> ECKey:
    """The newest active key, opened (cached per process); a new one if there is none, or if
    it no longer opens (the master key was replaced without rotating it)."""
    row = s.scalar(select(SigningKey).where(SigningKey.retired_at.is_(None))
                   .order_by(SigningKey.created_at.desc()).limit(1))
    if row is not None and row.kid in _cache:
        return _cache[row.kid]
    with _lock:
        if row is not None:
            try:
                pem = barrier.open(row.wrapped_key, row.ciphertext, _aad(row.kid))
                key = ECKey.import_key(pem, parameters={"kid": row.kid})
            except CryptoError:
                log.warning("signing key %s does not open under the master key; replacing it",
                            row.kid)
                row.retired_at = utcnow()
                row = None
        if row is None:
            row = new_key(s, barrier)
            key = ECKey.import_key(barrier.open(row.wrapped_key, row.ciphertext,
                                                _aad(row.kid)), parameters={"kid": row.kid})
        _cache[row.kid] = key
        return key


def issue(s: Session, barrier: Barrier, *, issuer: str, workspace: str, source: str,
          pipeline: str, ref: str, step: str, audience: str, run_id: str, sha: str | None,
          event: str, timeout: float | None) -> str:
    """A signed identity token for one step of one run."""
    key = signer(s, barrier)
    now = int(utcnow().timestamp())
    ttl = int(min(timeout or DEFAULT_TTL, MAX_TTL))
    claims = {"iss": issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl,
              "jti": uuid.uuid4().hex,
              "sub": f"workspace:{workspace}:source:{source}:pipeline:{pipeline}:ref:{ref}"
                     f":step:{step}",
              "run_id": run_id, "sha": sha or "", "ref": ref, "event": event,
              "workspace": workspace, "pipeline": pipeline, "step": step}
    return jwt.encode({"alg": ALG, "kid": key.kid, "typ": "JWT"}, claims, key)


def jwks(s: Session) -> dict:
    """The published keys: the active one and those retired within KEEP_RETIRED."""
    rows = s.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
    return {"keys": [json.loads(r.public_jwk) for r in rows]}


def discovery(issuer: str) -> dict:
    return {"issuer": issuer, "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": [ALG],
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "run_id",
                                 "sha", "ref", "event", "workspace", "pipeline", "step"]}


def rotate(s: Session, barrier: Barrier, actor: Actor, *,
           keep_retired: timedelta = KEEP_RETIRED) -> dict:
    """Retire the active key(s), start a new one, and remove keys retired before
    ``keep_retired`` ago (their tokens have expired): a verifier then refuses their tokens."""
    now = utcnow()
    retired = [r.kid for r in s.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None)))]
    for row in s.scalars(select(SigningKey).where(SigningKey.kid.in_(retired))):
        row.retired_at = now
    s.flush()
    cutoff = now - keep_retired
    gone = [r.kid for r in s.scalars(select(SigningKey).where(SigningKey.retired_at.is_not(None)))
            if aware(r.retired_at) <= cutoff]
    if gone:
        s.execute(delete(SigningKey).where(SigningKey.kid.in_(gone)))
    row = new_key(s, barrier)
    out = {"kid": row.kid, "retired": retired, "removed": gone}
    audit.record(s, actor, "keys.rotate_signing", target=row.kid, details=out)
    return out
