"""Static validation on every save: a ``Valid`` condition and, given dates, ``Expiring``."""
from __future__ import annotations

import base64
import binascii
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .. import credtypes, kubeconfig
from ..errors import ValidationError
from . import Condition
from .expiry import cert_expiry, expiring, jwt_expiry
from .ssh import KeyProblem, load_key

Finding = tuple[str, str]  # (reason, message)


def _b64(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def _public(obj) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _kube_user(name: str, user: dict, errors: list[Finding],
               dates: list[tuple[str, datetime]]) -> None:
    cert = key = None
    if user.get("client-certificate-data"):
        try:
            pem = _b64(user["client-certificate-data"])
            dates.append((f"the client certificate of user {name!r}", cert_expiry(pem)))
            cert = x509.load_pem_x509_certificate(pem)
        except (ValueError, binascii.Error):
            errors.append(("CertificateDoesNotParse", f"the client-certificate-data of user "
                           f"{name!r} is not a base64 PEM certificate"))
    if user.get("client-key-data"):
        try:
            key = serialization.load_pem_private_key(_b64(user["client-key-data"]), None)
        except (ValueError, TypeError, binascii.Error):
            errors.append(("KeyDoesNotParse", f"the client-key-data of user {name!r} is not a "
                           "base64 PEM private key without a passphrase"))
        except Exception:  # unsupported key algorithms
            errors.append(("KeyDoesNotParse", f"the client-key-data of user {name!r} is not a "
                           "supported private key"))
    if cert is not None and key is not None and _public(cert.public_key()) != _public(
            key.public_key()):
        errors.append(("KeyMismatch", f"the client key of user {name!r} does not belong to its "
                       "client certificate"))
    if isinstance(user.get("token"), str):
        when = jwt_expiry(user["token"])
        if when:
            dates.append((f"the token of user {name!r}", when))


def _kube(text: str, errors: list[Finding], dates: list[tuple[str, datetime]]) -> None:
    doc = kubeconfig.parse(text)
    for entry in doc.get("users") or []:
        _kube_user(str(entry.get("name")), entry.get("user") or {}, errors, dates)
    for entry in doc.get("clusters") or []:
        data = (entry.get("cluster") or {}).get("certificate-authority-data")
        if data:
            try:
                cert_expiry(_b64(data))
            except (ValueError, binascii.Error):
                errors.append(("CertificateDoesNotParse", "the certificate-authority-data of "
                               f"cluster {entry.get('name')!r} is not a base64 PEM certificate"))


def validate(type_name: str, values: dict) -> list[Condition]:
    """``Valid`` (False with the first error; warnings keep it True) and ``Expiring``."""
    try:
        ctype = credtypes.get(type_name)
        clean, problems = ctype.validate(values)
    except ValidationError as e:
        return [Condition("Valid", "False", "Invalid", e.message)]
    errors: list[Finding] = [(p.reason, p.message) for p in problems if p.severity == "error"]
    warnings: list[Finding] = [(p.reason, p.message) for p in problems if p.severity != "error"]
    dates: list[tuple[str, datetime]] = []
    if type_name == "ssh_private_key":
        try:
            load_key(clean["private_key"], clean.get("passphrase"))
        except KeyProblem as e:
            errors.append((e.reason, e.message))
    elif type_name == "kubeconfig":
        _kube(clean["kubeconfig"], errors, dates)
    elif type_name == "secret_text":
        when = jwt_expiry(clean["secret"])
        if when:
            dates.append(("the token", when))
    out: list[Condition] = []
    expiry = None
    if dates:
        label, when = min(dates, key=lambda d: d[1])
        expiry = expiring(label, when)
    if expiry is not None and expiry.reason == "Expired":
        out.append(Condition("Valid", "False", "Expired", expiry.message))
    elif errors:
        out.append(Condition("Valid", "False", errors[0][0], errors[0][1]))
    elif warnings:
        out.append(Condition("Valid", "True", warnings[0][0],
                             "; ".join(dict.fromkeys(m for _, m in warnings))))
    else:
        label = ctype.label.lower()  # "key/value pairs" are, "a kubeconfig" is
        out.append(Condition("Valid", "True", "WellFormed",
                             f"the {label} {'are' if label.endswith('s') else 'is'} well-formed"))
    if expiry is not None:
        out.append(expiry)
    return out
