"""The barrier: AES-256-GCM envelope encryption with numbered master keys.

Every credential version gets its own random data key.  The payload is sealed with the data key
and the data key is wrapped with the master key of the active *term*; both ciphertexts carry the
term number and are bound (associated data) to the row they belong to, so a ciphertext copied to
another row, another version or another type does not decrypt.  There is one error type:
``CryptoError``; its messages never contain key material or plaintext.
"""
from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CryptoError

KEY_BYTES = 32
_NONCE = 12
_MAGIC = b"WB1"
_HEADER = struct.Struct(">3sI")  # magic, key term
_CHECK_PLAINTEXT = b"workbench master key check"


def generate_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """Parse a base64 master key; the error says what is wrong without echoing it."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode() + b"==")
    except (ValueError, TypeError):
        raise CryptoError("master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"master key must be {KEY_BYTES} bytes (base64), got {len(key)}")
    return key


def binding(workspace: str, cred_id: str, version: int, type_name: str) -> bytes:
    """Associated data that ties a ciphertext to its row."""
    return f"workbench/v1|{workspace}|{cred_id}|{version}|{type_name}".encode()


def _seal(key: bytes, term: int, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    header = _HEADER.pack(_MAGIC, term)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    header, nonce, body = blob[:_HEADER.size], blob[_HEADER.size:_HEADER.size + _NONCE], \
        blob[_HEADER.size + _NONCE:]
    try:
        return AESGCM(key).decrypt(nonce, body, header + aad)
    except InvalidTag:
        raise CryptoError("ciphertext does not decrypt (wrong key, or data moved or altered)") \
            from None


def term_of(blob: bytes) -> int:
    """The master-key term a wrapped data key was sealed under."""
    if len(blob) < _HEADER.size + _NONCE + 16:
        raise CryptoError("ciphertext is truncated")
    magic, term = _HEADER.unpack(blob[:_HEADER.size])
    if magic != _MAGIC:
        raise CryptoError("ciphertext has an unknown format")
    return term


@dataclass(frozen=True)
class Sealed:
    term: int
    wrapped_key: bytes
    ciphertext: bytes


class Barrier:
    """Seals and opens payloads.  ``keys`` maps term → 32-byte master key; ``active`` is the
    term new data is sealed under.  Keys are given to the constructor and never leave it."""

    def __init__(self, keys: dict[int, bytes], active: int):
        if active not in keys:
            raise CryptoError(f"no master key for active term {active}")
        for term, key in keys.items():
            if len(key) != KEY_BYTES:
                raise CryptoError(f"master key of term {term} has the wrong length")
        self._keys = dict(keys)
        self.active = active

    @property
    def terms(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def _key(self, term: int) -> bytes:
        try:
            return self._keys[term]
        except KeyError:
            raise CryptoError(f"no master key for term {term}") from None

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        dek = generate_key()
        ciphertext = _seal(dek, 0, plaintext, aad)
        term = self.active  # read once: a live barrier may switch terms meanwhile
        wrapped = _seal(self._key(term), term, dek, aad + b"|dek")
        return Sealed(term, wrapped, ciphertext)

    def open(self, wrapped_key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        dek = _open(self._key(term_of(wrapped_key)), wrapped_key, aad + b"|dek")
        if term_of(ciphertext) != 0:
            raise CryptoError("payload ciphertext has an unexpected header")
        return _open(dek, ciphertext, aad)

    def rewrap(self, wrapped_key: bytes, aad: bytes, to_term: int) -> bytes:
        """Re-wrap a data key under another term's master key (key rotation)."""
        dek = _open(self._key(term_of(wrapped_key)), wrapped_key, aad + b"|dek")
        return _seal(self._key(to_term), to_term, dek, aad + b"|dek")

    @staticmethod
    def make_check(key: bytes, term: int) -> bytes:
        """A small ciphertext that proves, at start-up, that a key is the right one for a term."""
        return _seal(key, term, _CHECK_PLAINTEXT, b"keycheck")

    @staticmethod
    def verify_check(key: bytes, blob: bytes) -> bool:
        try:
            return _open(key, blob, b"keycheck") == _CHECK_PLAINTEXT
        except CryptoError:
            return False
