"""Text encoders: how shells, markup, programming languages and dump tools print a value."""
from __future__ import annotations

import html
import re

# bash's printf %q puts a backslash before these anywhere, and before # and ~ at the start
_SH_SPECIAL = frozenset(" \t\n!\"$&'()*,;<>?[\\]^`{|}")
_ANSI_C = {"\\": "\\\\", "'": "\\'", "\a": "\\a", "\b": "\\b", "\x1b": "\\E", "\f": "\\f",
           "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_GO = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
       "\r": "\\r", "\t": "\\t", "\v": "\\v"}
_LOWER_U = re.compile(r"\\u([0-9a-f]{4})")
XXD_WIDTH = 60  # hex characters per line of `xxd -p`
OD_BYTES = 16   # bytes per line of `od`


def shell_forms(text: str) -> set[str]:
    """The value as shells quote it when they print it: bash xtrace (``'\\''``), busybox ash
    and dash (``'"'"'``), and bash's ``printf %q`` (backslashes, or ``$'...'`` for control
    characters); for quoted forms, the part between the outer quotes."""
    forms = {text.replace("'", "'\\''"), text.replace("'", "'\"'\"'")}
    control = any(c < " " or c == "\x7f" for c in text)
    if control or not text.isascii():
        forms.add(_ansi_c(text, octal_non_ascii=False))
        forms.add(_ansi_c(text, octal_non_ascii=True))  # printf %q in the C locale
    if not control:
        forms.add(_backslashed(text))
    return forms


def _backslashed(text: str) -> str:
    out = text.translate(_SH_TABLE)
    if out[:1] in ("#", "~"):
        out = "\\" + out
    return out.replace(":~", ":\\~").replace("=~", "=\\~")


def _ansi_c(text: str, *, octal_non_ascii: bool) -> str:
    out = []
    for c in text:
        if c in _ANSI_C:
            out.append(_ANSI_C[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\{ord(c):03o}")
        elif octal_non_ascii and not c.isascii():
            out.extend(f"\\{b:03o}" for b in c.encode("utf-8", "surrogateescape"))
        else:
            out.append(c)
    return "".join(out)


def markup_forms(text: str) -> set[str]:
    """XML/HTML escaping as libraries write it: ``&amp; &lt; &gt;`` and each spelling of the
    quotes (``&quot; &#34;``, ``&#39; &#x27; &apos;``), or the quotes left alone."""
    if not any(c in text for c in "&<>\"'"):
        return set()
    base = html.escape(text, quote=False)
    return {base.replace('"', dq).replace("'", sq)
            for dq in ('"', "&quot;", "&#34;") for sq in ("'", "&#39;", "&#x27;", "&apos;")}


def quoting_forms(text: str) -> set[str]:
    """GitHub's value encoders: quote doubling (SQL, CSV, PowerShell, expressions), command-line
    escaping of ``"`` and ``\\``, surrounding quotes trimmed, and PowerShell's ``&`` sections."""
    forms = {text.replace("'", "''"), text.replace('"', '""'), text.replace('"', '\\"'),
             text.replace("\\", "\\\\").replace('"', '\\"')}
    trimmed = text.strip("\"'")
    if trimmed != text:
        forms.add(trimmed)
    if "&" in text:
        # PowerShell colours a value around `&`, printing the sections apart; GitHub masks the
        # section before (through `&+`, or the last `&`) and after it, from 6 characters
        cut = text.find("&+")
        pre = text[:cut + 2] if cut >= 0 else text[:text.rfind("&") + 1]
        post = text[cut + 3:] if cut >= 0 else text[text.rfind("&") + 1:]
        forms.update(s for s in (pre, post) if len(s) >= 6)
    return forms


def go_quoted(text: str, *, ascii_only: bool) -> str:
    """The inside of Go's ``%q`` (``strconv.Quote``), or ``%+q`` when ``ascii_only``; bytes that
    are not UTF-8 arrive as surrogate escapes and come out as ``\\xNN``."""
    if text.isascii():  # the common case, as one table lookup per character
        return text.translate(_GO_ASCII)
    out = []
    for c in text:
        n = ord(c)
        if c in _GO:
            out.append(_GO[c])
        elif n < 0x20 or n == 0x7f or 0xDC80 <= n <= 0xDCFF:
            out.append(f"\\x{n & 0xFF:02x}")
        elif (ascii_only and n > 0x7e) or not c.isprintable():
            out.append(f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}")
        else:
            out.append(c)
    return "".join(out)


def upper_hex_json(escaped: str) -> str:
    """A JSON string's ``\\u00e4`` escapes in upper-case hex, as .NET and Java write them."""
    return _LOWER_U.sub(lambda m: "\\u" + m.group(1).upper(), escaped)


def dump_lines(raw: bytes) -> set[bytes]:
    """The lines of ``xxd -p`` (60 hex characters each) and of ``od -t x1`` (16 bytes) for
    ``raw`` printed on its own, without the address column.  ``od``'s default octal words and
    ``od -c`` are left out, to keep the automaton small (see docs/masking.md)."""
    hexed = raw.hex().encode()
    lines = {hexed[i:i + XXD_WIDTH] for i in range(0, len(hexed), XXD_WIDTH)}
    for i in range(0, len(raw), OD_BYTES):
        lines.add(raw[i:i + OD_BYTES].hex(" ").encode())
    return lines


_SH_TABLE = {ord(c): "\\" + c for c in _SH_SPECIAL}
_GO_ASCII = {**{n: f"\\x{n:02x}" for n in [*range(0x20), 0x7f]},
             **{ord(c): e for c, e in _GO.items()}}
