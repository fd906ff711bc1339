"""Streaming multi-pattern masker: hides secret values and their encoded forms in step output."""
from __future__ import annotations

import bisect
import threading
from typing import Iterable

import ahocorasick_rs

from . import detectors as detection
from .forms import derived_forms, patterns_for, to_bytes, too_short  # noqa: F401 - the API


class Masker:
    """Masks a byte stream fed in arbitrary pieces, holding back only what may start a secret."""

    REPLACEMENT = b"****"
    # The automaton looks for the first PREFIX bytes of each pattern and each hit is verified in
    # full: a small automaton stays in cache (and fits a DFA), which is what makes it fast.
    PREFIX = 8
    DFA_MAX_PREFIX_BYTES = 256 * 1024  # above this a DFA's memory outgrows its speed-up

    def __init__(self, secrets: Iterable[bytes], *, chunk_size: int = 65536,
                 detectors: Iterable[detection.Detector] | None = None):
        self._secrets = list(secrets)
        self._detectors = detection.DETECTORS if detectors is None else tuple(detectors)
        self._step = max(1, chunk_size)
        self._lock = threading.Lock()
        self._buf = bytearray()  # bytes not yet emitted: the held-back tail plus new input
        self._fresh = 0  # bytes at the end of _buf not scanned yet
        self._carry = 0  # leading bytes of _buf inside a match that began before the last emit
        self._masking = False  # whether the last emitted byte was masked (collapses ****s)
        self._build()

    def _build(self) -> None:
        """The automaton over the patterns' prefixes and the detectors' triggers."""
        groups: dict[bytes, tuple[list[bytes], list[int]]] = {}
        for p in patterns_for(self._secrets):
            groups.setdefault(p[:self.PREFIX], ([], []))[0].append(p)
        for i, det in enumerate(self._detectors):
            for trigger in det.triggers:
                groups.setdefault(trigger, ([], []))[1].append(i)
        # sorted, for the bisect in _tail_start: every pattern and trigger
        self._patterns = sorted({p for full, _ in groups.values() for p in full} |
                                {t for d in self._detectors for t in d.triggers})
        self._ac = None
        if not groups:
            return
        keys = list(groups)
        self._longest_key = max(map(len, keys))
        # how far back a pattern or a detector's match may begin and still reach past the end
        self._reach = max([len(p) for full, _ in groups.values() for p in full[:1]] +
                          [self._detectors[i].max_len for _, rules in groups.values()
                           for i in rules])
        # longest first: of the patterns starting at one place, the longest that matches
        # covers all the others
        self._full = [sorted(groups[k][0], key=len, reverse=True) for k in keys]
        self._rules = [groups[k][1] for k in keys]
        impl = (ahocorasick_rs.Implementation.DFA
                if sum(map(len, keys)) <= self.DFA_MAX_PREFIX_BYTES else None)
        self._ac = ahocorasick_rs.BytesAhoCorasick(keys, implementation=impl)

    def add(self, secret: bytes) -> None:
        """Mask ``secret`` (and its forms) from now on, including in bytes not yet emitted."""
        with self._lock:
            if secret not in self._secrets:
                self._secrets.append(bytes(secret))
                self._build()

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
        # before it), and so does every detector's line; one starting later is found again in
        # the next scan.
        triggered: dict[int, list[int]] = {}  # detector index → where its triggers are
        for idx, start, _ in hits:
            if start < cut:
                for pattern in self._full[idx]:
                    if buf.startswith(pattern, start):
                        spans.append((start, start + len(pattern)))
                        break
                for det in self._rules[idx]:
                    triggered.setdefault(det, []).append(start)
        for det, starts in triggered.items():
            spans.extend(self._detectors[det].spans(buf, starts, cut))
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
        # the last bytes, too few for the automaton to have seen a key (a pattern's first
        # PREFIX bytes, or a detector's trigger) start there
        for k in range(min(self._longest_key - 1, size), 0, -1):
            suffix = bytes(buf[size - k:])
            i = bisect.bisect_left(self._patterns, suffix)
            if i < len(self._patterns) and self._patterns[i].startswith(suffix):
                cut = size - k
                break
        # earlier: a prefix the automaton found whose longer patterns run past the end, or a
        # detector's trigger on a line that has not ended (up to the detector's longest match);
        # hits come in the order they end, so only the last ones within reach can qualify
        for idx, start, stop in reversed(hits):
            if stop < size - self._reach:
                break
            if start >= cut:
                continue
            group = self._full[idx]
            if group and start + len(group[0]) > size:
                rest = bytes(buf[start:])
                if any(len(p) > len(rest) and p.startswith(rest) for p in group):
                    cut = start
                    continue
            for det in self._rules[idx]:
                if size - start < self._detectors[det].max_len and _line_open(buf, start):
                    cut = start
                    break
        return cut


def _line_open(buf: bytearray, start: int) -> bool:
    """Whether no line end follows ``start``: a detector's match may still grow."""
    return buf.find(b"\n", start) < 0 and buf.find(b"\r", start) < 0


def mask(data: bytes, secrets: Iterable[bytes], **kw) -> bytes:
    """Mask a whole byte string at once."""
    masker = Masker(secrets, **kw)
    return masker.feed(data) + masker.flush()


def scrub(text: str, secrets: Iterable[bytes | str]) -> str:
    """Foreign error text (git's, the engine's) without any secret: every form the masker knows,
    and even values too short to mask in logs, since error text is short and shown to people."""
    raw = [to_bytes(s) for s in secrets if s]
    out = mask(text.encode("utf-8", "replace"), raw).decode("utf-8", "replace")
    for value in sorted({r.decode("utf-8", "replace") for r in raw}, key=len, reverse=True):
        out = out.replace(value, Masker.REPLACEMENT.decode())
    return out
