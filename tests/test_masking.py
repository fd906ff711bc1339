"""The masker: every secret, its lines and encoded forms are hidden; short values never mask."""
from __future__ import annotations

import base64
import json
import random
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings, strategies as st

from workbench import credtypes
from workbench.credtypes import MIN_MASKABLE
from workbench.pipeline import forms, masking
from workbench.pipeline.masking import Masker, derived_forms, mask, patterns_for, too_short

STARS = Masker.REPLACEMENT
CANARY = 'c4n4ry/P@ss+w0rd "quoted" \\ é <&> end'
CANARY_B = CANARY.encode()


def assert_hidden(out: bytes, text: bytes, lo: int, hi: int) -> None:
    """``out`` is ``text`` with one **** covering at least ``text[lo:hi]`` and nothing else lost."""
    assert out.count(STARS) == 1, out
    before, after = out.split(STARS)
    assert text.startswith(before) and text.endswith(after), out
    assert len(before) <= lo and len(text) - len(after) >= hi, out


def json_inside(value: str, **kw) -> bytes:
    return json.dumps({"token": value, "n": 1}, **kw).encode()


WHOLE_FORMS = {
    "raw": lambda v: v,
    "b64": base64.b64encode,
    "b64url": base64.urlsafe_b64encode,
    "b64-nopad": lambda v: base64.b64encode(v).rstrip(b"="),
    "b64url-nopad": lambda v: base64.urlsafe_b64encode(v).rstrip(b"="),
    "quote": lambda v: quote(v, safe="").encode(),
    "quote-slash": lambda v: quote(v).encode(),
    "quote_plus": lambda v: quote_plus(v).encode(),
    "quote-lowerhex": lambda v: re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(),
                                       quote(v, safe="")).encode(),
    "json": lambda v: json.dumps(v.decode())[1:-1].encode(),
    "json-utf8": lambda v: json.dumps(v.decode(), ensure_ascii=False)[1:-1].encode(),
    "json-slash": lambda v: json.dumps(v.decode())[1:-1].replace("/", "\\/").encode(),
}


@pytest.mark.parametrize("form", WHOLE_FORMS)
def test_each_encoded_form_of_a_canary_is_masked(form):
    text = b"step says: " + WHOLE_FORMS[form](CANARY_B) + b" (done)\n"
    assert mask(text, [CANARY_B]) == b"step says: **** (done)\n"


@pytest.mark.parametrize("dumps", [
    lambda v: json_inside(v),
    lambda v: json_inside(v, ensure_ascii=False),
    lambda v: json_inside(v).replace(b"/", b"\\/"),
])
def test_secret_inside_a_json_document_is_masked(dumps):
    assert mask(dumps(CANARY), [CANARY_B]) == dumps("X").replace(b'"X"', b'"****"')


def test_basic_auth_header_is_masked_from_the_user_password_pair():
    header = b"Authorization: Basic " + base64.b64encode(b"deploy:s3cr3t-pw") + b"\r\n"
    assert mask(header, [b"deploy:s3cr3t-pw"]) == b"Authorization: Basic ****\r\n"


@pytest.mark.parametrize("offset", range(6))
@pytest.mark.parametrize("urlsafe", [False, True])
def test_secret_embedded_in_a_larger_base64_blob_is_masked_at_every_offset(offset, urlsafe):
    rng = random.Random(offset)
    prefix = bytes(rng.randrange(256) for _ in range(offset))
    suffix = bytes(rng.randrange(256) for _ in range(7))
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = enc(prefix + CANARY_B + suffix)
    # characters whose 6 bits all come from the secret's bytes
    lo, hi = -(-8 * offset // 6), 8 * (offset + len(CANARY_B)) // 6
    text = b"data: " + blob + b"\n"
    assert_hidden(mask(text, [CANARY_B]), text, lo + 6, hi + 6)


def test_each_line_of_a_multiline_secret_is_masked_alone_and_together():
    key = (b"-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n  AQEFAASCBKcwggSjAgEAAoIB  \n"
           b"-----END KEY-----\n")
    lines = [ln.strip() for ln in key.splitlines()]
    text = b"cat key:\n" + key + b"grep:\n" + lines[2] + b"\n" + lines[1] + b" tail\n"
    out = mask(text, [key])
    for line in lines:
        assert line not in out
    # one trailing newline is not part of the value: the next line is not glued to the ****
    assert out == b"cat key:\n****\ngrep:\n****\n**** tail\n"
    # the JSON form of the whole value (newlines as \n) is masked too, but for its last \n
    assert mask(json_inside(key.decode()), [key]) == json_inside("X").replace(b'"X"',
                                                                              b'"****\\n"')


def test_overlapping_secrets_are_masked_as_their_union():
    assert mask(b"x abcdefghi y", [b"abcdef", b"defghi"]) == b"x **** y"
    assert mask(b"x abcdefghi y", [b"defghi", b"abcdef"]) == b"x **** y"
    # one secret inside another, and a short one at the very edge of a long one
    assert mask(b"<longsecretvalue>", [b"longsecretvalue", b"secr"]) == b"<****>"
    assert mask(b"<abcdefgh>", [b"abcdefgh", b"ghij"]) == b"<****>"


def test_adjacent_occurrences_collapse_but_separated_ones_do_not():
    assert mask(b"tokntokntokn", [b"tokn"]) == STARS
    assert mask(b"tokn tokn", [b"tokn"]) == b"**** ****"


def test_innocent_output_around_secrets_is_kept_byte_for_byte():
    text = bytes(range(256)) + b"hunter22" + bytes(range(255, -1, -1))
    assert mask(text, [b"hunter22"]) == bytes(range(256)) + STARS + bytes(range(255, -1, -1))


def test_values_too_short_to_mask_are_flagged_and_never_mask_output():
    for value in (b"", b"a", b"abc", "é".encode()):
        assert too_short(value)
        assert derived_forms(value) == set()
    assert not too_short(b"abcd")
    text = b"abc abc a abcabc"
    assert mask(text, [b"abc", b"a", b""]) == text
    assert patterns_for([b"abc"]) == []


@pytest.mark.parametrize("value", ["abc", "abcd", " ab ", "é", "éé", "\n\n\n", "abc\n", "abcd\n"])
def test_too_short_agrees_with_what_the_vault_flags(value):
    flagged = credtypes.get("secret_text").short_values({"secret": value})
    assert bool(flagged) == too_short(value.encode())
    if not flagged:  # all is masked but one trailing newline
        newline = b"\n" if value.endswith("\n") else b""
        assert mask(b"<" + value.encode() + b">", [value.encode()]) == b"<****" + newline + b">"


def test_no_derived_fragment_is_shorter_than_the_minimum():
    for value in (b"abcd", b"ab\ncd\nefgh", b"\x00\xff\x10\x80", CANARY_B):
        forms = derived_forms(value)
        assert forms and min(map(len, forms)) >= MIN_MASKABLE
    # lines shorter than the minimum are not masked on their own
    assert mask(b"ab\nab\n", [b"ab\ncd\nefgh"]) == b"ab\nab\n"


def test_without_secrets_the_masker_passes_bytes_straight_through():
    m = Masker([], detectors=())
    assert m.feed(b"partial line, no newline") == b"partial line, no newline"
    assert m.flush() == b""
    # only too-short values: nothing to hold back
    assert Masker([b"ab"], detectors=()).feed(b"ab") == b"ab"

@settings(max_examples=200, deadline=None, database=None)
@given(secret=st.binary(min_size=4, max_size=40), prefix=st.binary(max_size=8),
       suffix=st.binary(max_size=8))
def test_random_secret_in_random_base64_blob_loses_every_determined_character(
        secret, prefix, suffix):
    if too_short(secret):
        return
    blob = base64.b64encode(prefix + secret + suffix)
    lo, hi = -(-8 * len(prefix) // 6), 8 * (len(prefix) + len(secret)) // 6
    out = mask(blob, [secret])
    assert blob[lo:hi] not in out
    assert STARS in out



def _big_secret() -> bytes:
    rng = random.Random(3)
    lines = [base64.b64encode(rng.randbytes(48)) for _ in range(400)]
    lines[200] = 'ünïcödé "quoted" <&> path/to+x 😀'.encode()
    return b"-----BEGIN BUNDLE-----\n" + b"\n".join(lines) + b"\n-----END BUNDLE-----"


BIG = _big_secret()


@pytest.mark.parametrize("form", WHOLE_FORMS)
def test_a_26_kb_secret_in_each_form_is_masked_as_one_run(form):
    text = b"before\n" + WHOLE_FORMS[form](BIG) + b"\nafter\n"
    assert mask(text, [BIG]) == b"before\n****\nafter\n"
    m = Masker([BIG])
    pieces = [m.feed(text[i:i + 1000]) for i in range(0, len(text), 1000)]
    assert b"".join(pieces) + m.flush() == b"before\n****\nafter\n"


def test_a_long_secret_does_not_make_the_masker_hold_back_its_size():
    m = Masker([BIG])
    out = m.feed(b"x" * 200_000)
    assert len(out) >= 200_000 - 6 * forms.SEGMENT
    assert max(map(len, patterns_for([BIG]))) <= 6 * forms.SEGMENT


def test_a_printed_piece_of_a_long_secret_is_masked():
    piece = BIG[10_000:17_000]
    out = mask(b"head " + piece + b" tail", [BIG])
    assert STARS in out
    assert all(len(part) < forms.SEGMENT * 3 // 2 + 5 for part in out.split(STARS))


@settings(max_examples=150, deadline=None, database=None)
@given(secret=st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=9, max_size=40),
       form=st.sampled_from(sorted(WHOLE_FORMS)))
def test_segmented_values_are_masked_whole_in_every_form(secret, form):
    # a tiny segment size makes short random values take the long-value path
    value = secret.encode()
    text = b"\x01" + WHOLE_FORMS[form](value) + b"\x01"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(forms, "SEGMENT", 8)
        assert mask(text, [value]) == b"\x01****\x01"
        for k in range(3):
            blob = base64.b64encode(b"\x02" * k + value + b"\x02\x02")
            lo, hi = -(-8 * k // 6), 8 * (k + len(value)) // 6
            assert_hidden(mask(blob, [value]), blob, lo, hi)


@pytest.mark.parametrize("encoder", [["base64"], ["openssl", "base64"]])
@pytest.mark.parametrize("newline", [False, True], ids=["printf", "echo"])
@pytest.mark.parametrize("size", [58, 300, 5000])
def test_base64_wrapped_by_command_line_tools_is_masked_line_by_line(encoder, newline, size):
    import subprocess
    rng = random.Random(size)
    secret = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-_/+=:", k=size)).encode()
    wrapped = subprocess.run(encoder, input=secret + (b"\n" if newline else b""),
                             capture_output=True, check=True).stdout
    lines = wrapped.splitlines()
    assert len(lines) >= 2  # really wrapped, which the whole-value forms cannot match
    out = mask(b"kubectl create secret ...\n" + wrapped + b"done\n", [secret])
    kept = out.splitlines()
    assert kept[0] == b"kubectl create secret ..." and kept[-1] == b"done"
    for line, masked in zip(lines, kept[1:-1]):
        if len(line) >= forms.MIN_WRAPPED_LINE:
            assert masked == STARS, (line, masked)
        else:  # a short last line: at most 5 bytes of the value, left as it is
            assert len(base64.b64decode(line + b"=" * (-len(line) % 4))) <= 5

