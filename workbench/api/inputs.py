"""Request input under limits: JSON bodies (depth, lone surrogates) and integers that fit 64 bits.

Each of these used to reach the database or the stack unchecked and come back as a 500: JSON
nested 1,000 deep (``RecursionError``), a lone surrogate (``\\ud800`` cannot be encoded to
store it), an ID or offset past 2**63 (the database driver's ``OverflowError``)."""
from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import IntegerConverter

from ..errors import BadRequest, ValidationError

INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # no API body nests deeper than 4; room for run records and contexts


class BodyError(ValueError):
    """A body that parses as JSON but is refused; a ValueError, as malformed JSON is."""


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError("a string holds a lone surrogate (not UTF-8 text)") from None


def check(doc: Any) -> Any:
    """``doc`` unchanged, or BodyError: nested past MAX_DEPTH, or a string that is not text."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise BodyError(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                value = value.values()
            stack.extend((v, depth + 1) for v in value)
    return doc


def loads(data: str | bytes) -> Any:
    """``json.loads`` under the limits above; ValueError for anything refused."""
    try:
        return check(json.loads(data))
    except RecursionError:
        raise BodyError(f"nested deeper than {MAX_DEPTH} levels") from None


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading request bodies through ``loads``."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)


class Int64Converter(IntegerConverter):
    """``<int:…>`` that matches only what fits a 64-bit column: a larger ID is a 404."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", INT64_MAX)
        super().__init__(map, *args, **kwargs)


def bounded_int(text: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query parameter as an integer within [low, high], or a 400 naming it."""
    if text is None:
        return default
    try:
        value = int(text) if len(text) <= 20 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", field=name)
    return value


def texts(data: dict, *keys: str) -> dict:
    """``data``, or a 422 naming the first of ``keys`` that is present but not text."""
    for key in keys:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValidationError(f"{key} must be text", field=key)
    return data


def install(app) -> None:
    """Use these for every route and body of ``app`` (before its blueprints are registered)."""
    app.url_map.converters["int"] = Int64Converter
    app.json = JSONProvider(app)
