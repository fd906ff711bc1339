"""Streaming multi-pattern masker: hides secret values and their encoded forms in step output."""
from __future__ import annotations

import base64
import bisect
import json
import re
import threading
from typing import Iterable
from urllib.parse import quote, quote_plus

import ahocorasick_rs

from ..credtypes import MIN_MASKABLE

# Characters a URL encoder may leave alone: Python's quote (safe=""), quote (safe="/"), and
# JavaScript's encodeURIComponent, which also keeps !~*'().
_URL_SAFE_SETS = ("", "/", "-_.!~*'()")
_PERCENT_HEX = re.compile(rb"%[0-9A-F]{2}")
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
# holds at most 5 bytes of the value, and short patterns would mask innocent output).
WRAP_WIDTHS = (76, 64)
MIN_WRAPPED_LINE = 8


def too_short(value: bytes) -> bool:
    """True when ``value`` is too short to mask without masking innocent output."""
    # the same rule as CredentialType.short_values, so every value the vault does not flag
    # is masked
    return len(_to_bytes(value)) < MIN_MASKABLE


def derived_forms(value: bytes) -> set[bytes]:
    """The value and its lines (long ones as segments), each with its encoded forms; none short."""
    value = _to_bytes(value)
    if too_short(value):
        return set()
    bases = {value}
    for line in value.splitlines():
        bases.update((line, line.strip()))
    forms: set[bytes] = set()
    for base in bases:
        if too_short(base):
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
    forms.update(_wrapped_base64(value))
    return {f for f in forms if len(f) >= MIN_MASKABLE}


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


def _to_bytes(value: bytes | str) -> bytes:
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
    b64: set[bytes] = set()
    if whole:
        encoded = base64.b64encode(raw)
        b64.update((encoded, encoded.rstrip(b"=")))
    for k, first in enumerate(_B64_FIRST_FULL_CHAR):
        # Only the characters every blob holding the secret at this offset (mod 3) shares.
        last = (8 * k + 8 * len(raw)) // 6
        b64.add(base64.b64encode(b"\0" * k + raw)[first:last])
    forms = {raw} | b64 | {f.translate(_URLSAFE) for f in b64}
    for safe in _URL_SAFE_SETS:
        for encoded in (quote(raw, safe=safe), quote_plus(raw, safe=safe)):
            upper = encoded.encode("ascii")
            forms.update((upper, _PERCENT_HEX.sub(lambda m: m.group(0).lower(), upper)))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return forms
    for ascii_only in (True, False):
        escaped = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
        html_safe = (escaped.replace("<", "\\u003c").replace(">", "\\u003e")
                     .replace("&", "\\u0026"))  # how Go's encoding/json writes them
        for form in (escaped, html_safe):
            forms.update((form.encode("utf-8"), form.replace("/", "\\/").encode("utf-8")))
    return forms


class Masker:
    """Masks a byte stream fed in arbitrary pieces, holding back only what may start a secret."""

    REPLACEMENT = b"****"
    # The automaton looks for the first PREFIX bytes of each pattern and each hit is verified in
    # full: a small automaton stays in cache (and fits a DFA), which is what makes it fast.
    PREFIX = 8
    DFA_MAX_PREFIX_BYTES = 256 * 1024  # above this a DFA's memory outgrows its speed-up

    def __init__(self, secrets: Iterable[bytes], *, chunk_size: int = 65536):
        self._patterns = patterns_for(secrets)  # sorted, for the bisect in _tail_start
        self._step = max(1, chunk_size)
        self._lock = threading.Lock()
        self._buf = bytearray()  # bytes not yet emitted: the held-back tail plus new input
        self._fresh = 0  # bytes at the end of _buf not scanned yet
        self._carry = 0  # leading bytes of _buf inside a match that began before the last emit
        self._masking = False  # whether the last emitted byte was masked (collapses ****s)
        self._ac = None
        if self._patterns:
            groups: dict[bytes, list[bytes]] = {}
            for p in self._patterns:
                groups.setdefault(p[:self.PREFIX], []).append(p)
            prefixes = list(groups)
            # longest first: of the patterns starting at one place, the longest that matches
            # covers all the others
            self._full = [sorted(groups[p], key=len, reverse=True) for p in prefixes]
            impl = (ahocorasick_rs.Implementation.DFA
                    if sum(map(len, prefixes)) <= self.DFA_MAX_PREFIX_BYTES else None)
            self._ac = ahocorasick_rs.BytesAhoCorasick(prefixes, implementation=impl)

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of output; return the bytes that are now safe to emit."""
        if self._ac is None:
            return bytes(data)
        out: list[bytes] = []
        with self._lock, memoryview(data) as view:
            i = 0
            while i < len(view):
                take = min(len(view) - i, self._step - self._fresh)
                self._buf += view[i:i + take]
                self._fresh += take
                i += take
                # Rescanning the held-back tail costs its length: wait for a quarter of that
                # in new bytes, so feeding byte by byte stays linear.
                held = len(self._buf) - self._fresh
                if self._fresh >= max(1, min(self._step, held // 4)):
                    self._scan(out, final=False)
        return b"".join(out)

    def flush(self) -> bytes:
        """End of stream: return the held-back tail, masked, and start afresh."""
        if self._ac is None:
            return b""
        out: list[bytes] = []
        with self._lock:
            if self._buf:
                self._scan(out, final=True)
            self._carry, self._masking = 0, False
        return b"".join(out)

    def _scan(self, out: list[bytes], *, final: bool) -> None:
        """Emit the buffer, masked, up to where a secret may begin that the buffer does not end."""
        buf = self._buf
        hits = self._ac.find_matches_as_indexes(buf, overlapping=True)
        cut = len(buf) if final else self._tail_start(hits)
        spans = [(0, self._carry)] if self._carry else []
        # Every pattern starting before cut ends inside the buffer (else cut would be at or
        # before it); one starting later is found again in the next scan.
        for idx, start, _ in hits:
            if start < cut:
                for pattern in self._full[idx]:
                    if buf.startswith(pattern, start):
                        spans.append((start, start + len(pattern)))
                        break
        spans.sort()
        pos = end = 0
        for start, stop in spans:
            if start > end or end == 0:  # not touching the previous span: a new ****
                if start > pos:
                    out.append(buf[pos:start])
                    self._masking = False
                if not self._masking:
                    out.append(self.REPLACEMENT)
                    self._masking = True
            end = max(end, stop)
            pos = min(end, cut)
        if pos < cut:
            out.append(buf[pos:cut])
            self._masking = False
        self._carry = max(0, end - cut)
        del buf[:cut]
        self._fresh = 0

    def _tail_start(self, hits: list[tuple[int, int, int]]) -> int:
        """Where the earliest pattern starts that the buffer holds only the beginning of."""
        buf = self._buf
        size = len(buf)
        cut = size
        # the last PREFIX - 1 bytes: too short for the automaton to have seen a pattern start
        for k in range(min(self.PREFIX - 1, size), 0, -1):
            suffix = bytes(buf[size - k:])
            i = bisect.bisect_left(self._patterns, suffix)
            if i < len(self._patterns) and self._patterns[i].startswith(suffix):
                cut = size - k
                break
        # earlier: a prefix the automaton found whose longer patterns run past the end
        for idx, start, _ in hits:
            group = self._full[idx]
            if start < cut and start + len(group[0]) > size:
                rest = bytes(buf[start:])
                if any(len(p) > len(rest) and p.startswith(rest) for p in group):
                    cut = start
        return cut


def mask(data: bytes, secrets: Iterable[bytes]) -> bytes:
    """Mask a whole byte string at once."""
    masker = Masker(secrets)
    return masker.feed(data) + masker.flush()


def scrub(text: str, secrets: Iterable[bytes | str]) -> str:
    """Foreign error text (git's, the engine's) without any secret: every form the masker knows,
    and even values too short to mask in logs, since error text is short and shown to people."""
    raw = [_to_bytes(s) for s in secrets if s]
    out = mask(text.encode("utf-8", "replace"), raw).decode("utf-8", "replace")
    for value in sorted({r.decode("utf-8", "replace") for r in raw}, key=len, reverse=True):
        out = out.replace(value, Masker.REPLACEMENT.decode())
    return out
