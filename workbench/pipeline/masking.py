"""Streaming multi-pattern masker: hides secret values and their encoded forms in step output."""
from __future__ import annotations

import bisect
import threading
from typing import Iterable

from . import detectors as detection, matchers
from .forms import derived_forms, patterns_for, to_bytes, too_short  # noqa: F401 - the API


class Masker:
    """Masks a byte stream fed in arbitrary pieces, holding back only what may start a secret."""

    REPLACEMENT = b"****"
    # The matcher looks for the first PREFIX bytes of each pattern and each hit is verified in
    # full: fewer, shorter keys make a smaller, faster matcher that is quicker to build.
    PREFIX = 8

    def __init__(self, secrets: Iterable[bytes], *, chunk_size: int = 65536,
                 detectors: Iterable[detection.Detector] | None = None,
                 engine: str | None = None):
        self._secrets = list(secrets)
        self._pattern_set = set(patterns_for(self._secrets))
        self._engine = engine  # None: the fastest in matchers.available()
        self.engine = ""
        self._detectors = detection.DETECTORS if detectors is None else tuple(detectors)
        self._step = max(1, chunk_size)
        self._lock = threading.Lock()
        self._buf = bytearray()  # bytes not yet emitted: the held-back tail plus new input
        self._fresh = 0  # bytes at the end of _buf not scanned yet
        self._carry = 0  # leading bytes of _buf inside a match that began before the last emit
        self._masking = False  # whether the last emitted byte was masked (collapses ****s)
        self._build()

    def _build(self) -> None:
        """The matcher over the patterns' prefixes and the detectors' triggers."""
        groups: dict[bytes, tuple[list[bytes], list[int]]] = {}
        for p in self._pattern_set:
            groups.setdefault(p[:self.PREFIX], ([], []))[0].append(p)
        for i, det in enumerate(self._detectors):
            for trigger in det.triggers:
                groups.setdefault(trigger, ([], []))[1].append(i)
        # for _tail_start: the sorted patterns (a bisect) and every prefix of every trigger
        self._patterns = sorted(self._pattern_set)
        self._trigger_prefixes = {t[:k] for d in self._detectors for t in d.triggers
                                  for k in range(1, len(t) + 1)}
        self._find = None
        if not groups:
            return
        keys = list(groups)
        self._longest_key = max(map(len, keys))
        # longest first: of the patterns starting at one place, the longest that matches
        # covers all the others
        self._full = [sorted(groups[k][0], key=len, reverse=True) for k in keys]
        self._rules = [groups[k][1] for k in keys]
        # how far back a pattern or a detector's match may begin and still reach past the end
        self._reach = max([len(full[0]) for full in self._full if full] +
                          [self._detectors[i].max_len for rules in self._rules for i in rules])
        self.engine, self._find = matchers.build(keys, self._engine)

    def add(self, secret: bytes) -> None:
        """Mask ``secret`` (and its forms) from now on, including in bytes not yet emitted."""
        with self._lock:
            if secret not in self._secrets:
                self._secrets.append(bytes(secret))
                self._pattern_set.update(derived_forms(secret))
                self._build()

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of output; return the bytes that are now safe to emit."""
        if self._find is None or not data:
            return bytes(data)
        out: list[bytes] = []
        with self._lock:
            if not self._buf and len(data) <= self._step:
                # the usual write: nothing held back, so scan the input where it is (no copy)
                # and keep only its undecided tail
                self._scan(data if type(data) is bytes else bytes(data), out, final=False)
                return out[0] if len(out) == 1 else b"".join(out)
            with memoryview(data) as view:
                i = 0
                while i < len(view):
                    take = min(len(view) - i, self._step - self._fresh)
                    self._buf += view[i:i + take]
                    self._fresh += take
                    i += take
                    # Rescanning the held-back tail costs its length: wait for a quarter of
                    # that in new bytes, so feeding byte by byte stays linear.
                    held = len(self._buf) - self._fresh
                    if self._fresh >= max(1, min(self._step, held // 4)):
                        self._scan(self._buf, out, final=False)
        return b"".join(out)

    def flush(self) -> bytes:
        """End of stream: return the held-back tail, masked, and start afresh."""
        if self._find is None:
            return b""
        out: list[bytes] = []
        with self._lock:
            if self._buf:
                self._scan(self._buf, out, final=True)
            self._carry, self._masking = 0, False
        return b"".join(out)

    def _scan(self, buf: bytes | bytearray, out: list[bytes], *, final: bool) -> None:
        """Emit ``buf`` (the held-back tail and new input), masked, up to where a secret may
        begin that it does not end; keep the rest in ``_buf``."""
        hits = self._find(buf)
        cut = len(buf) if final else self._tail_start(buf, hits)
        spans = [(0, self._carry)] if self._carry else []
        # Every pattern starting before cut ends inside the buffer (else cut would be at or
        # before it), and so does every detector's line; one starting later is found again in
        # the next scan.
        triggered: dict[int, list[int]] = {}  # detector index → where its triggers are
        full, rules = self._full, self._rules
        for idx, start, _ in hits:
            if start >= cut:
                continue
            for pattern in full[idx]:
                if buf.startswith(pattern, start):
                    spans.append((start, start + len(pattern)))
                    break
            for det in rules[idx]:
                triggered.setdefault(det, []).append(start)
        for det, starts in triggered.items():
            spans.extend(self._detectors[det].spans(buf, starts))
        if not spans and cut == len(buf) and type(buf) is bytes:
            out.append(buf)  # nothing to mask or hold back: the input itself
            self._masking = False
        elif spans or cut:
            self._emit(buf, spans, cut, out)
        if buf is self._buf:
            del buf[:cut]
        else:
            self._buf = bytearray(buf[cut:])
        self._fresh = 0

    def _emit(self, buf, spans: list[tuple[int, int]], cut: int, out: list[bytes]) -> None:
        """Append ``buf[:cut]`` with every span replaced, touching spans collapsed into one
        ``****``; what a span covers past ``cut`` is carried into the next scan."""
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

    def _tail_start(self, buf: bytes | bytearray, hits: list[tuple[int, int, int]]) -> int:
        """Where the earliest pattern starts that the buffer holds only the beginning of."""
        size = len(buf)
        cut = size
        # the last bytes, too few for the automaton to have seen a key start there: a
        # pattern's first PREFIX bytes (a bisect of the sorted patterns) or a detector's
        # trigger (a set of their prefixes)
        for k in range(min(self._longest_key - 1, size), 0, -1):
            suffix = bytes(buf[size - k:])
            if suffix in self._trigger_prefixes:
                cut = size - k
                break
            if k < self.PREFIX:
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
