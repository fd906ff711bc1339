"""Streaming multi-pattern masker: hides secret values and their encoded forms in step output."""
from __future__ import annotations

import base64
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
    return {f for f in forms if len(f) >= MIN_MASKABLE}


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
    """Masks a byte stream fed in arbitrary pieces; holds back ``longest pattern - 1`` bytes."""

    REPLACEMENT = b"****"
    # The automaton looks for the first PREFIX bytes of each pattern and each hit is verified in
    # full: a small automaton stays in cache (and fits a DFA), which is what makes it fast.
    PREFIX = 8
    DFA_MAX_PREFIX_BYTES = 256 * 1024  # above this a DFA's memory outgrows its speed-up

    def __init__(self, secrets: Iterable[bytes], *, chunk_size: int = 65536):
        patterns = patterns_for(secrets)
        self._step = max(1, chunk_size)
        self._lock = threading.Lock()
        self._buf = bytearray()  # bytes not yet emitted: the held-back tail plus new input
        self._carry = 0  # leading bytes of _buf inside a match that began before the last emit
        self._masking = False  # whether the last emitted byte was masked (collapses ****s)
        self._ac = None
        self._hold = 0
        self._min_ready = 1
        if patterns:
            groups: dict[bytes, list[bytes]] = {}
            for p in patterns:
                groups.setdefault(p[:self.PREFIX], []).append(p)
            prefixes = list(groups)
            # longest first: of the patterns starting at one place, the longest that matches
            # covers all the others
            self._full = [sorted(groups[p], key=len, reverse=True) for p in prefixes]
            impl = (ahocorasick_rs.Implementation.DFA
                    if sum(map(len, prefixes)) <= self.DFA_MAX_PREFIX_BYTES else None)
            self._ac = ahocorasick_rs.BytesAhoCorasick(prefixes, implementation=impl)
            longest = max(map(len, patterns))
            self._hold = longest - 1
            # Scan only once about a pattern's length is new, so byte-by-byte feeding does not
            # rescan the held-back tail for every byte.
            self._min_ready = min(self._step, longest)

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of output; return the bytes that are now safe to emit."""
        if self._ac is None:
            return bytes(data)
        out: list[bytes] = []
        with self._lock, memoryview(data) as view:
            # Invariant: len(_buf) < hold + min_ready between iterations, so the buffer never
            # grows past hold + chunk_size however large ``data`` is.
            i = 0
            while i < len(view):
                take = min(len(view) - i, self._hold + self._step - len(self._buf))
                self._buf += view[i:i + take]
                i += take
                ready = len(self._buf) - self._hold
                if ready >= self._min_ready:
                    self._emit(ready, out)
        return b"".join(out)

    def flush(self) -> bytes:
        """End of stream: return the held-back tail, masked, and start afresh."""
        if self._ac is None:
            return b""
        out: list[bytes] = []
        with self._lock:
            if self._buf:
                self._emit(len(self._buf), out)
            self._carry, self._masking = 0, False
        return b"".join(out)

    def _emit(self, n: int, out: list[bytes]) -> None:
        """Emit the first ``n`` bytes of the buffer, masked; the rest is the held-back tail."""
        buf = self._buf
        spans = [(0, self._carry)] if self._carry else []
        # A pattern starting before n lies wholly inside the buffer (it is at most hold + 1
        # long); one starting later is found again in the next call, so only these count now.
        for idx, start, _ in self._ac.find_matches_as_indexes(buf, overlapping=True):
            if start < n:
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
            pos = min(end, n)
        if pos < n:
            out.append(buf[pos:n])
            self._masking = False
        self._carry = max(0, end - n)
        del buf[:n]


def mask(data: bytes, secrets: Iterable[bytes]) -> bytes:
    """Mask a whole byte string at once."""
    masker = Masker(secrets)
    return masker.feed(data) + masker.flush()
