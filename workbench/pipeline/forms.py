"""Derived forms: every way a step may print a secret value, as byte patterns for the masker."""
from __future__ import annotations

import base64
import json
import re
from typing import Iterable

from ..credtypes import MIN_MASKABLE, masked_part
from . import encoders

# Characters a URL encoder may leave alone: Python's quote (safe=""), quote (safe="/"), and
# JavaScript's encodeURIComponent, which also keeps !~*'().
_URL_SAFE_SETS = ("", "/", "-_.!~*'()")
# what urllib's quote never encodes
_ALWAYS_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
# Where the secret's bits start inside base64(k padding bytes + secret): characters before this
# index mix in bits of the unknown bytes that precede the secret in a larger blob.
_B64_FIRST_FULL_CHAR = (0, 2, 3)
_URLSAFE = bytes.maketrans(b"+/", b"-_")
# Longer values are masked as overlapping segments this long: the masker holds back only the
# longest pattern, so this bounds its lag and memory, and a printed piece of a long value is
# masked too.  Consecutive segments overlap by half, so their matches merge into one ****.
SEGMENT = 4096
# How command-line encoders wrap base64: GNU `base64` at 76 columns, `openssl base64` (and PEM)
# at 64.  Each line of the wrapped form is a pattern; a last line shorter than this is not (it
# holds at most 5 bytes of the value, and short patterns would mask innocent output).  The same
# floor applies to the lines of hex and od dumps.
WRAP_WIDTHS = (76, 64)
MIN_WRAPPED_LINE = 8
# A line of a multi-line value is a pattern of its own only from this length, and only when it
# is not document structure (below): a YAML key, a PEM armour line, a few plain words, a URL
# without credentials (the detectors mask userinfo and credential parameters in any URL).
MIN_LINE_PART = 8
_KEY_VALUE = re.compile(rb"^(?:-\s+)?[\"']?[\w.\-/]+[\"']?\s*[:=]\s*(.*)$")
_STRUCTURE = re.compile(rb"[A-Za-z][a-z]*(?:[ .,_-]+[A-Za-z][a-z]*)*[.:]?"
                        rb"|-----(?:BEGIN|END) [A-Z0-9 ]+-----"
                        rb"|[a-z][a-z0-9+.-]*://[^\s@?#]+")  # a URL without userinfo or query


def too_short(value: bytes) -> bool:
    """True when ``value`` is too short to mask without masking innocent output."""
    # the same rule as CredentialType.short_values, so every value the vault does not flag
    # is masked
    return len(masked_part(to_bytes(value))) < MIN_MASKABLE


def derived_forms(value: bytes) -> set[bytes]:
    """The value, its informative lines and whitespace variants, each with its encoded forms."""
    # `echo "$TOKEN" > file` stores one newline more: it is not part of what gets printed
    value = masked_part(to_bytes(value))
    if len(value) < MIN_MASKABLE:
        return set()
    forms: set[bytes] = set()
    for base in {value, value.strip()} | line_parts(value):
        if len(base) < MIN_MASKABLE:
            continue
        if len(base) <= SEGMENT:
            forms.update(_encode(base, whole=True))
            continue
        for piece in _cut_segments(base):
            forms.update(_encode(piece, whole=False))
        # the end of base64(value) as a whole: its last character and padding are not in any
        # segment's fragments
        for encoded in (base64.b64encode(base), base64.urlsafe_b64encode(base)):
            forms.update((encoded[-SEGMENT:], encoded.rstrip(b"=")[-SEGMENT:]))
    for variant in _whitespace_variants(value):
        forms.update(_cut_segments(variant) if len(variant) > SEGMENT else (variant,))
    forms.update(_wrapped_base64(value))
    if len(value) <= SEGMENT:
        forms.update(line for line in encoders.dump_lines(value)
                     if len(line) >= MIN_WRAPPED_LINE)
    return {f for f in forms if len(f) >= MIN_MASKABLE}


def line_parts(value: bytes) -> set[bytes]:
    """The lines of a multi-line value that are worth a pattern: for ``key: value`` lines the
    value; never whitespace, YAML keys, PEM armour, plain words or anything under 8 bytes."""
    if b"\n" not in value and b"\r" not in value:
        return set()
    parts = set()
    for line in value.splitlines():
        part = line.strip()
        keyed = _KEY_VALUE.match(part)
        if keyed:
            part = keyed.group(1).strip().strip(b"\"'")
        if len(part) >= MIN_LINE_PART and not _STRUCTURE.fullmatch(part):
            parts.add(part)
    return parts


def _whitespace_variants(value: bytes) -> set[bytes]:
    """A multi-line value as terminals and shells reprint it: CRLF line ends (a pty), and every
    run of whitespace as one space (``echo $VALUE`` unquoted)."""
    lines = value.splitlines()
    if len(lines) < 2:
        return set()
    return {b"\r\n".join(lines), b" ".join(value.split())} - {value}


def _wrapped_base64(value: bytes) -> set[bytes]:
    """The lines of base64(value), and of base64(value + newline) as ``echo "$X" | base64``
    makes it, wrapped the way command-line tools wrap them."""
    lines: set[bytes] = set()
    for raw in (value, value + b"\n"):
        encoded = base64.b64encode(raw)
        for width in WRAP_WIDTHS:
            if len(encoded) > width:
                lines.update(encoded[i:i + width] for i in range(0, len(encoded), width))
    return {line for line in lines if len(line) >= MIN_WRAPPED_LINE}


def patterns_for(secrets: Iterable[bytes]) -> list[bytes]:
    """Every pattern to mask for ``secrets``: the deduplicated union of their derived forms."""
    out: set[bytes] = set()
    for secret in secrets:
        out.update(derived_forms(secret))
    return sorted(out)


def to_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _cut_segments(raw: bytes) -> list[bytes]:
    """Pieces of SEGMENT bytes, overlapping by half, covering ``raw``; cut between characters."""
    starts = [*range(0, len(raw) - SEGMENT, SEGMENT // 2), len(raw) - SEGMENT]
    return [raw[_align_to_char(raw, a):_align_to_char(raw, a + SEGMENT)] for a in starts]


def _align_to_char(raw: bytes, i: int) -> int:
    """``i`` moved back past UTF-8 continuation bytes, so text segments decode on their own."""
    for _ in range(3):
        if 0 < i < len(raw) and raw[i] & 0xC0 == 0x80:
            i -= 1
    return i


def _encode(raw: bytes, *, whole: bool) -> set[bytes]:
    forms = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    forms.update(_base64_forms(raw, whole=whole))
    # percent-encoding as quote(raw, safe) and quote_plus(raw, safe) write it, in upper- and
    # lower-case hex (one table lookup per byte instead of urllib's call per byte)
    text = raw.decode("latin-1")
    for upper, lower, plus_upper, plus_lower in _PERCENT_TABLES:
        forms.update(text.translate(t).encode("ascii")
                     for t in (upper, lower, plus_upper, plus_lower))
    # double URL encoding (a URL-encoded value put in another URL): `%` becomes `%25`
    upper, lower = _PERCENT_TABLES[0][:2]
    for single in (text.translate(upper), text.translate(lower)):
        forms.add(single.replace("%", "%25").encode("ascii"))
    forms.update(f.encode("utf-8", "surrogateescape") for f in _text_forms(raw))
    return forms


def _base64_forms(raw: bytes, *, whole: bool) -> set[bytes]:
    b64: set[bytes] = set()
    if whole:
        encoded = base64.b64encode(raw)
        b64.update((encoded, encoded.rstrip(b"=")))
    for k, first in enumerate(_B64_FIRST_FULL_CHAR):
        # Only the characters every blob holding the secret at this offset (mod 3) shares.
        last = (8 * k + 8 * len(raw)) // 6
        shifted = base64.b64encode(b"\0" * k + raw)
        b64.add(shifted[first:last])
        if whole and (k + len(raw)) % 3:
            # the value at the END of a blob: its last character (the value's bits padded with
            # zeros) and the padding are the value's too, e.g. the `Q==` of `...Q==`
            b64.update((shifted[first:], shifted[first:].rstrip(b"=")))
    return b64 | {f.translate(_URLSAFE) for f in b64}


def _percent_tables(safe: str) -> tuple[dict[int, str], ...]:
    """str.translate tables of a latin-1 decoded value: percent-encoding with upper- and
    lower-case hex, and the same with a space as ``+`` (quote_plus)."""
    keep = set(_ALWAYS_SAFE + safe.encode("ascii"))
    upper = {b: f"%{b:02X}" for b in range(256) if b not in keep}
    lower = {b: f"%{b:02x}" for b in range(256) if b not in keep}
    return upper, lower, {**upper, 0x20: "+"}, {**lower, 0x20: "+"}


_PERCENT_TABLES = tuple(_percent_tables(safe) for safe in _URL_SAFE_SETS)


def _text_forms(raw: bytes) -> set[str]:
    """Escaped forms of a value that is text: JSON, Go, shells, markup, quoting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    loose = raw.decode("utf-8", "surrogateescape")
    forms = {encoders.go_quoted(loose, ascii_only=False), encoders.go_quoted(loose, ascii_only=True)}
    if text is None:
        return forms
    for ascii_only in (True, False):
        escaped = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
        html_safe = (escaped.replace("<", "\\u003c").replace(">", "\\u003e")
                     .replace("&", "\\u0026"))  # how Go's encoding/json writes them
        for form in (escaped, html_safe, encoders.upper_hex_json(escaped)):
            forms.update((form, form.replace("/", "\\/")))
    forms.update(encoders.shell_forms(text))
    forms.update(encoders.markup_forms(text))
    forms.update(encoders.quoting_forms(text))
    return forms
