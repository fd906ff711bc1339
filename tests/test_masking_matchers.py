"""The masker's matchers: every engine finds the same matches, so the masker masks the same."""
from __future__ import annotations

import random
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from workbench.pipeline import matchers
from workbench.pipeline.masking import Masker, mask

ENGINES = matchers.available()
STARS = Masker.REPLACEMENT


def test_this_platform_has_the_fast_matcher(monkeypatch):
    # requirements.txt installs hyperscan on Linux x86_64, where the benchmark runs
    import platform
    monkeypatch.delenv("WORKBENCH_MASK_MATCHER", raising=False)
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert ENGINES == ("hyperscan", "ahocorasick")
    assert Masker([b"hunter2-secret"]).engine == ENGINES[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_overlapping_occurrence_is_found_in_the_order_they_end(engine):
    keys = [b"abc", b"bcd", b"abcd", b"cdcd", b"dcdc", b"\xff\xfe", b"a"]
    text = b"xabcdcdcdc\xff\xfe abc a"
    name, find = matchers.build(keys, engine)
    assert name == engine
    hits = find(text)
    expected = sorted(((i, s, s + len(k)) for i, k in enumerate(keys)
                       for s in range(len(text)) if text.startswith(k, s)),
                      key=lambda h: (h[2], h[0]))
    assert sorted(hits, key=lambda h: (h[2], h[0])) == expected
    assert [h[2] for h in hits] == sorted(h[2] for h in hits)
    assert find(bytearray(text)) == hits


def test_a_key_holding_a_nul_byte_falls_back_and_is_still_found():
    # hyperscan's binding would cut the key at the NUL: the masker must not lose the secret
    name, find = matchers.build([b"ab\0cd", b"zzzz"])
    assert name == "ahocorasick"
    assert find(b"xab\0cd") == [(0, 1, 6)]
    assert mask(b"key=\0\1binary\0secret;", [b"\0\1binary\0secret"]) == b"key=****;"


def test_an_unknown_matcher_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown matcher"):
        matchers.build([b"abcd"], "grep")
    monkeypatch.setenv("WORKBENCH_MASK_MATCHER", "ahocorasick")
    assert Masker([b"hunter2-secret"]).engine == "ahocorasick"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_longest_form_split_anywhere_is_masked_without_detectors(engine):
    # A group's longest pattern (here the double URL encoding, 4x the value) bounds how far
    # back a pattern may begin and still run past the end of what was fed: it was taken from
    # the wrong end of the group and this form leaked when cut in its middle.
    value = b"abcdefgh" + b" !" * 20 + b"tail-secret"
    double = quote(quote(value, safe=""), safe="").encode()
    text = b"x" * 10 + double + b" end\n"
    for cut in range(len(text) + 1):
        m = Masker([value], detectors=(), engine=engine)
        out = m.feed(text[:cut]) + m.feed(text[cut:]) + m.flush()
        assert out == b"x" * 10 + STARS + b" end\n", cut


SECRET_ALPHABET = b"ab%2 \"'\\&<>=\n\0\xc3\xa9"


@pytest.mark.skipif(len(ENGINES) < 2, reason="one matcher on this platform")
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(secrets=st.lists(st.binary(min_size=4, max_size=24).filter(lambda b: b"\0" not in b),
                        min_size=1, max_size=4),
       seed=st.integers(0, 2**32), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_every_engine_masks_the_same_output_split_anyway(secrets, seed, cuts):
    rng = random.Random(seed)
    pieces = []
    for _ in range(12):  # secrets in their forms, among noise and token shapes
        pieces.append(bytes(rng.choice(SECRET_ALPHABET) for _ in range(rng.randrange(8))))
        s = rng.choice(secrets)
        pieces.append(rng.choice([s, s.hex().encode(), quote(s, safe="").encode(),
                                  b"https://u:" + s + b"@h/", b"ghp_" + b"A" * 36]))
    text = b"".join(pieces)
    outs = set()
    for engine in ENGINES:
        m = Masker(secrets, engine=engine, chunk_size=rng.choice([7, 64, 65536]))
        bounds = [0, *sorted(c % (len(text) + 1) for c in cuts), len(text)]
        outs.add(b"".join(m.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + m.flush())
    assert len(outs) == 1
    assert outs.pop() == mask(text, secrets, engine="ahocorasick")
