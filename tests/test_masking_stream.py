"""The streaming masker: output split any way, at any chunk boundary, equals the one-shot mask."""
from __future__ import annotations

import base64
import random
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from workbench.pipeline.masking import Masker, mask, patterns_for, too_short

STARS = Masker.REPLACEMENT


def reference(text: bytes, secrets) -> bytes:
    """Naive model: mark every occurrence of every pattern, collapse marked runs into one ****."""
    marked = bytearray(len(text))
    for p in patterns_for(secrets):
        i = text.find(p)
        while i != -1:
            marked[i:i + len(p)] = b"\1" * len(p)
            i = text.find(p, i + 1)
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and marked[j] == marked[i]:
            j += 1
        out.append(STARS if marked[i] else text[i:j])
        i = j
    return b"".join(out)


def fed(text: bytes, secrets, cuts, chunk_size: int = 65536) -> bytes:
    """Feed ``text`` split at ``cuts`` and collect everything the masker emits."""
    m = Masker(secrets, chunk_size=chunk_size, detectors=())
    bounds = [0, *sorted(cuts), len(text)]
    return b"".join(m.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])) + m.flush()


def test_output_that_cannot_start_a_secret_is_emitted_at_once():
    # (detectors off: "x" may begin a Slack token, which holds a line back until it ends)
    m = Masker([b"hunter2-secret"], detectors=())
    assert m.feed(b"Deploying to prod...\n") == b"Deploying to prod...\n"
    assert [m.feed(bytes([c])) for c in b"#;\n"] == [b"#", b";", b"\n"]
    assert m.feed(b"x" * 100_000) == b"x" * 100_000
    assert m.flush() == b""


def test_a_partial_secret_is_held_back_until_it_is_decided():
    m = Masker([b"hunter2-secret"])
    assert m.feed(b"token: hunter2-se") == b"token: "
    assert m.feed(b"cret done\n") == b"**** done\n"
    assert m.feed(b"almost hunter2-s") == b"almost "
    assert m.feed(b"x\n") == b"hunter2-sx\n"  # not the secret after all: released whole
    assert m.feed(b"ends with hunt") == b"ends with "
    assert m.flush() == b"hunt"


SPLIT_TEXT = (b"a abcdefghi b " + base64.b64encode(b"pre" + b"topsecret!" + b"post")
              + b" c " + quote(b"topsecret!/x", safe="").encode() + b" d abcdabcd e topsecret!")
SPLIT_SECRETS = [b"abcdef", b"defghi", b"topsecret!", b"topsecret!/x", b"abcd"]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 8, 64, 65536])
def test_split_across_two_feeds_at_every_point_equals_one_shot(chunk_size):
    expected = reference(SPLIT_TEXT, SPLIT_SECRETS)
    assert mask(SPLIT_TEXT, SPLIT_SECRETS, detectors=()) == expected
    for cut in range(len(SPLIT_TEXT) + 1):
        assert fed(SPLIT_TEXT, SPLIT_SECRETS, [cut], chunk_size) == expected, cut


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 65536])
def test_byte_by_byte_feeding_equals_one_shot(chunk_size):
    cuts = range(1, len(SPLIT_TEXT))
    assert fed(SPLIT_TEXT, SPLIT_SECRETS, cuts, chunk_size) == reference(SPLIT_TEXT,
                                                                         SPLIT_SECRETS)


def test_secret_straddling_every_emit_boundary_never_escapes():
    # chunk sizes below, at and above the secret's length put the emit boundary at every
    # offset inside it; each feed's output alone must not reveal any of its characters in order
    secret = b"Z9q!Z9q!Z9"  # self-overlapping, so matches overlap each other too
    for chunk_size in range(1, 14):
        for start in range(0, 14):
            text = b"." * start + secret + b"q!Z9" + b"-" * 20  # 2nd match overlaps
            m = Masker([secret], chunk_size=chunk_size, detectors=())
            pieces = [m.feed(text[i:i + 1]) for i in range(len(text))] + [m.flush()]
            out = b"".join(pieces)
            assert out == reference(text, [secret]) == b"." * start + STARS + b"-" * 20
            assert not any(b"Z" in p or b"9" in p for p in pieces)


def test_secret_at_chunk_boundaries_of_a_multi_megabyte_stream():
    chunk = 65536
    secret = b"ghp_" + b"k" * 36
    rng = random.Random(7)
    line = b"2026-11-22T03:00:00Z INFO build step output, nothing to see here\n"
    filler = (line * (chunk // len(line) + 1))
    parts, expected = [], []
    for n in range(1, 80):  # about 5 MB, one secret across each boundary at a different offset
        shift = rng.randrange(-len(secret), 1)
        gap = filler[:chunk - len(secret) + shift] if n == 1 else filler[:chunk - len(secret)]
        parts += [gap, secret]
        expected += [gap, STARS]
    text, want = b"".join(parts), b"".join(expected)
    assert len(text) > 5_000_000
    writes = [4096, 65536, 1_000_003]
    for size in writes:
        assert fed(text, [secret], range(size, len(text), size)) == want


def test_flush_resets_the_masker_for_another_stream():
    m = Masker([b"s3cret"])
    assert m.feed(b"one s3c") + m.flush() == b"one s3c"
    assert m.feed(b"ret two s3cret") + m.flush() == b"ret two ****"


ALPHABET = b"ab=/+\n%"


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(secrets=st.lists(st.binary(min_size=1, max_size=9).map(
           lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)), min_size=0, max_size=4),
       noise=st.lists(st.binary(max_size=6).map(
           lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)), max_size=12),
       data=st.data())
def test_random_secrets_and_random_splits_never_leak_and_equal_one_shot(secrets, noise, data):
    # text interleaves random noise with secrets and their derived forms
    forms = sorted(patterns_for(secrets))
    parts = []
    for chunk in noise:
        parts.append(chunk)
        if forms:
            parts.append(data.draw(st.sampled_from(forms)))
    text = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8))
    chunk_size = data.draw(st.sampled_from([1, 2, 3, 16, 65536]))
    one_shot = mask(text, secrets, detectors=())
    assert one_shot == reference(text, secrets)
    assert fed(text, secrets, cuts, chunk_size) == one_shot
    for s in secrets:
        if not too_short(s):
            assert s not in one_shot


def test_scrub_hides_every_form_and_even_short_values_in_error_text():
    from workbench.pipeline.masking import scrub
    import base64
    pair = "ci-bot:pw-canary-123"
    text = (f"denied for {pair}; header Basic {base64.b64encode(pair.encode()).decode()}; "
            "pin abc")
    out = scrub(text, ["pw-canary-123", pair, "abc"])
    for leaked in ("pw-canary-123", base64.b64encode(pair.encode()).decode(), "abc"):
        assert leaked not in out
    assert out.startswith("denied for ****")
