"""SSH private keys: parse (with the passphrase) and authenticate to the stored target host."""
from __future__ import annotations

import io
import re
import socket

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from . import Condition, reachable, register
from .probe import network_failure

_PARAMIKO = ((ed25519.Ed25519PrivateKey, paramiko.Ed25519Key, "ed25519"),
             (rsa.RSAPrivateKey, paramiko.RSAKey, "rsa"),
             (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey, "ecdsa"))
TARGET = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+))"
                    r"(?::(?P<port>\d{1,5}))?$")


class KeyProblem(Exception):
    """The key does not load; ``reason`` is CamelCase, the message never quotes the key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def load_key(pem: str, passphrase: str | None = None) -> tuple[paramiko.PKey, str]:
    """(paramiko key, kind) from an OpenSSH or PEM private key, decrypted with ``passphrase``."""
    data = (pem or "").strip().encode() + b"\n"
    password = passphrase.encode() if passphrase else None
    try:
        try:
            key = serialization.load_ssh_private_key(data, password)
        except ValueError as first:
            if b"OPENSSH PRIVATE KEY" in data:
                raise first
            key = serialization.load_pem_private_key(data, password)
    except TypeError as e:  # cryptography: password given/missing for (un)encrypted key
        if "not encrypted" in str(e):  # a stray passphrase is harmless: ignore it
            return load_key(pem, None)
        raise KeyProblem("PassphraseRequired", "the private key is encrypted and no passphrase "
                         "is stored with it") from None
    except ValueError:
        if password is not None:  # OpenSSH reports a wrong passphrase as a broken checksum
            raise KeyProblem("WrongPassphrase", "the passphrase does not decrypt the private "
                             "key (or the key is damaged)") from None
        raise KeyProblem("KeyDoesNotParse", "the private key does not parse as an OpenSSH or "
                         "PEM key") from None
    except Exception:  # unsupported algorithms and the like
        raise KeyProblem("KeyDoesNotParse", "the private key does not parse as an OpenSSH or "
                         "PEM key") from None
    for crypto_type, pk_type, kind in _PARAMIKO:
        if isinstance(key, crypto_type):
            # paramiko reads OpenSSH text; hand it an unencrypted copy that lives only in memory
            text = key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()).decode()
            return pk_type.from_private_key(io.StringIO(text)), kind
    raise KeyProblem("UnsupportedKeyType", "only ed25519, RSA and ECDSA keys are supported")


def _address(target: str) -> tuple[str, int] | None:
    target = target.strip()
    if target.startswith("ssh://"):
        target = target[6:].rstrip("/").rpartition("@")[2]
    m = TARGET.match(target)
    if not m:
        return None
    port = int(m["port"] or 22)
    return (m["v6"] or m["host"], port) if 0 < port < 65536 else None


@register("ssh_private_key")
def check_ssh_key(values: dict, timeout: float) -> Condition:
    """Public-key authentication as ``username`` at ``target`` (host or host:port)."""
    try:
        key, kind = load_key(values.get("private_key", ""), values.get("passphrase"))
    except KeyProblem as e:
        return reachable("Unknown", "NotTestable", e.message)
    target = (values.get("target") or "").strip()
    if not target:
        return reachable("Unknown", "NoTarget", f"the {kind} key parses; no target host is "
                         "stored, so it was not tried against a server")
    addr = _address(target)
    if addr is None:
        return reachable("Unknown", "NotTestable", "the target is not host or host:port")
    where = f"{addr[0]}:{addr[1]}"
    user = values.get("username", "")
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except OSError as exc:
        return network_failure(exc, where, timeout)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.auth_timeout = timeout
    try:
        # The host key is accepted unverified (no known_hosts on the server): the question is
        # only whether the key opens the account, and the signature is bound to this session.
        transport.start_client(timeout=timeout)
        more = transport.auth_publickey(user, key)
    except paramiko.BadAuthenticationType:
        return reachable("False", "AuthenticationFailed",
                         f"{where} does not accept public keys for user {user!r}")
    except paramiko.AuthenticationException:
        return reachable("False", "AuthenticationFailed",
                         f"{where} rejected the {kind} key for user {user!r}")
    except paramiko.SSHException:
        return reachable("False", "UnexpectedResponse", f"{where} did not complete an SSH "
                         "handshake")
    except OSError as exc:
        return network_failure(exc, where, timeout)
    finally:
        transport.close()
        sock.close()
    extra = f"; the server asks for more ({', '.join(more)})" if more else ""
    return reachable("True", "Authenticated",
                     f"the {kind} key authenticated as {user!r} at {where}{extra}")
