"""What the OpenAPI document says beyond the routes: bodies, 201s, path parameter types.

Each schema states the constraint the server enforces (``tests/test_schemathesis.py`` holds
the two to each other), taken from the same patterns and lists where they exist."""
from __future__ import annotations

import re

from ..accounts import INSTANCE_ROLES, ROLES, USERNAME
from ..sources import KINDS, NAME as SOURCE_NAME
from .inputs import INT64_MAX

CREATED = {"api.create_credential", "api.add_version", "api.create_user", "api.create_token",
           "api.store_run", "api.add_source"}  # answer 201
TEXT = {"type": "string"}
OBJECT = {"type": "object"}
_ROLE = {"type": "string", "enum": list(INSTANCE_ROLES)}  # on the instance ("none": grants only)
_SCOPE_ROLE = {"type": "string", "enum": list(ROLES)}
MAY_CREATE = {"api.grant_member"}  # 201 when new, 200 when changed
NO_CONTENT = {"api.revoke_member"}  # answer 204
# Request bodies beyond ``{"type": "object"}``: endpoint → schema.
BODIES = {
    "api.update_credential": {"type": "object", "properties": {
        "name": TEXT, "description": TEXT, "type": TEXT, "values": OBJECT}},
    "api.add_version": {"type": "object", "required": ["values"], "properties": {
        "values": OBJECT}},
    "api.prune_versions": {"type": "object", "required": ["keep"], "properties": {
        "keep": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}}},
    "api.resolve": {"type": "object", "required": ["refs"], "properties": {
        "refs": {"type": "array", "minItems": 1, "maxItems": 100, "items": TEXT},
        "context": OBJECT}},
    "api.create_user": {"type": "object", "required": ["username", "password"], "properties": {
        "username": {"type": "string", "pattern": USERNAME.pattern},
        "password": {"type": "string", "minLength": 10, "writeOnly": True}, "role": _ROLE}},
    "api.update_user": {"type": "object", "required": ["role"], "properties": {"role": _ROLE}},
    "api.create_token": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "kind": {"type": "string", "enum": ["personal", "runner"]}, "user": TEXT,
        "workspace": TEXT}},
    "api.grant_member": {"type": "object", "required": ["role"],
                         "properties": {"role": _SCOPE_ROLE}},
    "api.add_source": {"type": "object", "required": ["name"], "additionalProperties": False,
                       "properties": {"name": {"type": "string", "pattern": SOURCE_NAME.pattern},
                                      "kind": {"type": "string", "enum": list(KINDS)},
                                      "url": TEXT, "branch": TEXT, "path_glob": TEXT,
                                      "credential_id": TEXT}},
}
_ARGUMENT = re.compile(r"<(?:([^:>(]+)(?:\([^)]*\))?:)?([^>]+)>")


def path_params(rule: str) -> list[dict]:
    """``<int:id>`` is an integer that fits 64 bits (``inputs.Int64Converter``)."""
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
             if converter == "int" else TEXT}
            for converter, name in _ARGUMENT.findall(rule)]
