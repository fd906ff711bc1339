"""Multi-literal matchers: find every occurrence of many short keys in a buffer, overlapping."""
from __future__ import annotations

import os
from operator import itemgetter
from typing import Callable

import ahocorasick_rs

try:  # a wheel exists for Linux on x86_64 only (see requirements.txt)
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    hyperscan = None

# A match: (key index, start, stop), in the order the matches end.
Find = Callable[[bytes], list[tuple[int, int, int]]]
# Above this many key bytes an Aho-Corasick DFA's memory outgrows its speed-up.
DFA_MAX_KEY_BYTES = 256 * 1024
ENGINES = ("hyperscan", "ahocorasick")


def available() -> tuple[str, ...]:
    """The engines this platform has, fastest first."""
    return tuple(e for e in ENGINES if e != "hyperscan" or hyperscan is not None)


def build(keys: list[bytes], engine: str | None = None) -> tuple[str, Find]:
    """The fastest available matcher for ``keys`` (or the named one, else the one named by
    ``WORKBENCH_MASK_MATCHER``): its name and its find."""
    engine = engine or os.environ.get("WORKBENCH_MASK_MATCHER") or None
    if engine not in (None, *ENGINES):
        raise ValueError(f"unknown matcher {engine!r}: one of {', '.join(ENGINES)}")
    if engine in (None, "hyperscan") and hyperscan is not None and _hyperscan_can(keys):
        try:
            return "hyperscan", _hyperscan(keys)
        except hyperscan.error:  # e.g. a CPU without the instructions it needs
            if engine == "hyperscan":
                raise
    elif engine == "hyperscan":
        raise ValueError("hyperscan is not available for these keys on this platform")
    return "ahocorasick", _ahocorasick(keys)


def _ahocorasick(keys: list[bytes]) -> Find:
    impl = (ahocorasick_rs.Implementation.DFA
            if sum(map(len, keys)) <= DFA_MAX_KEY_BYTES else None)
    ac = ahocorasick_rs.BytesAhoCorasick(keys, implementation=impl)
    return lambda buf: ac.find_matches_as_indexes(buf, overlapping=True)


def _hyperscan_can(keys: list[bytes]) -> bool:
    # the binding passes literals as C strings: a NUL byte would cut the key short
    return all(b"\0" not in k for k in keys)


def _hyperscan(keys: list[bytes]) -> Find:
    """Hyperscan's literal matcher (SIMD filters, not a state table): several times faster
    than a DFA of thousands of keys, whose table does not fit in the CPU's cache."""
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=keys, ids=list(range(len(keys))), elements=len(keys), literal=True)
    lengths = [len(k) for k in keys]

    def find(buf) -> list[tuple[int, int, int]]:
        hits: list[tuple[int, int, int]] = []
        add = hits.append
        db.scan(buf, match_event_handler=lambda i, _s, stop, _f, _c: add(
            (i, stop - lengths[i], stop)))
        hits.sort(key=itemgetter(2))  # already in order of their ends: this only checks
        return hits

    return find
