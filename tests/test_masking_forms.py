"""The forms other CI systems mask, produced by the real tools: shells' xtrace and printf %q,
xxd and od, plus the escapes of markup, quoting, Go, JSON and URLs; the token detectors; and
what must NOT become a pattern (kubeconfig structure, whitespace)."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from urllib.parse import quote

import pytest

from workbench.pipeline import detectors
from workbench.pipeline.maskcommands import MaskCommands
from workbench.pipeline.masking import Masker, mask, patterns_for

STARS = Masker.REPLACEMENT
# a value with every character shells, markup and escapes treat specially
NASTY = "it's \"q\" $HOME `x` a\\b&c<d>e!f;g|h*?[i]{j}~k#l,m^n é 12345"
CONTROL = "ctl\a\b\t\v\f\x1b\x7f-end é 98765"
SHELLS = [["bash"], ["dash"], ["busybox", "sh"]]


def run_shell(shell: list[str], script: str, value: str) -> bytes:
    res = subprocess.run([*shell, "-c", script], env={"V": value, "PATH": os.environ["PATH"]},
                         capture_output=True, check=True)
    return res.stdout + res.stderr


def all_masked(out: bytes, value: str, masked: bytes) -> None:
    assert value.encode() not in masked
    assert STARS in masked, (out, masked)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
@pytest.mark.parametrize("value", [NASTY, CONTROL, "plain'quote-1234"], ids=["nasty", "control",
                                                                             "quote"])
def test_xtrace_of_each_real_shell_is_masked(shell, value):
    if not shutil.which(shell[0]):
        pytest.skip(f"{shell[0]} not installed (scripts/services installs busybox-static)")
    out = run_shell(shell, 'set -x; X=$V; echo "token=$V" >/dev/null; : "$V"', value)
    masked = mask(out, [value.encode()])
    # every line the trace printed loses the value and keeps the command around it
    for line in masked.splitlines():
        assert STARS in line or not line.startswith(b"+"), masked
    assert b"X=" in masked and b"token=" in masked
    assert value.split("'")[0].encode() not in masked.replace(STARS, b"")


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
@pytest.mark.parametrize("value", [NASTY, CONTROL, "#~lead:~x=~y 12345"])
def test_bash_printf_q_is_masked(value, locale):
    out = subprocess.run(["bash", "-c", 'printf "[%q]\\n" "$V"'], capture_output=True,
                         check=True, env={"V": value, "LC_ALL": locale}).stdout
    # the $'...' form is masked inside its quotes
    assert mask(out, [value.encode()]) in (b"[****]\n", b"[$'****']\n"), out


def test_xxd_and_od_dumps_of_a_value_are_masked_line_by_line():
    value = ("dump-secret-" + "0123456789abcdef" * 3 + " é").encode()
    for cmd in (["xxd", "-p"], ["od", "-An", "-tx1"], ["od", "-tx1"]):
        out = subprocess.run(cmd, input=value, capture_output=True, check=True).stdout
        masked = mask(out, [value])
        lines = masked.splitlines()
        assert len(lines) >= 3, (cmd, out)
        for line in lines:
            body = line.split(b" ", 1)[-1] if cmd == ["od", "-tx1"] else line
            # an address column is kept; a last line of under 8 characters may stay
            assert STARS in line or len(body.strip()) < 8 or body.strip().isdigit(), (cmd, out)


@pytest.mark.parametrize("name,form", [
    ("xml-apos", lambda v: v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
     .replace('"', "&quot;").replace("'", "&apos;")),
    ("html.escape", lambda v: html.escape(v)),
    ("go-html", lambda v: html.escape(v).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")),
    ("sql-doubling", lambda v: v.replace("'", "''")),
    ("csv-doubling", lambda v: v.replace('"', '""')),
    ("cmdline-quote", lambda v: v.replace('"', '\\"')),
    ("cmdline-both", lambda v: v.replace("\\", "\\\\").replace('"', '\\"')),
    ("json-upper-hex", lambda v: json.dumps(v)[1:-1].replace("\\u00e9", "\\u00E9")),
    ("double-url", lambda v: quote(quote(v, safe=""), safe="")),
    ("double-url-lower", lambda v: re.sub("%25[0-9A-F]{2}", lambda m: m.group(0).lower(),
                                          quote(quote(v, safe=""), safe=""))),
    ("hex", lambda v: v.encode().hex()),
    ("HEX", lambda v: v.encode().hex().upper()),
])
def test_escaped_forms_are_masked(name, form):
    text = f"<<{form(NASTY)}>>".encode()
    assert mask(text, [NASTY.encode()]) == b"<<****>>"


def test_go_quoted_forms_are_masked():
    # what fmt.Sprintf("%q") and ("%+q") print for CONTROL (checked against Go's strconv rules)
    go_q = '"ctl\\a\\b\\t\\v\\f\\x1b\\x7f-end é 98765"'
    go_plus_q = '"ctl\\a\\b\\t\\v\\f\\x1b\\x7f-end \\u00e9 98765"'
    for printed in (go_q, go_plus_q):
        assert mask(printed.encode(), [CONTROL.encode()]) == b'"****"'
    raw = b"bin\xff\xfe-value-0042"
    assert mask(b'"bin\\xff\\xfe-value-0042"', [raw]) == b'"****"'


def test_value_with_surrounding_quotes_and_powershell_sections():
    quoted = '"quoted-secret-value"'
    assert mask(b"x=quoted-secret-value;", [quoted.encode()]) == b"x=****;"
    amp = "first-part&+second-part"
    # PowerShell colours the character after &+: the sections before and after print apart
    out = mask(b"first-part&+ \x1b[32ms\x1b[0mecond-part", [amp.encode()])
    assert b"first-part" not in out and b"econd-part" not in out


@pytest.mark.parametrize("k", range(3))
def test_value_at_the_end_of_a_base64_blob_loses_its_last_character(k):
    value = b"end-of-blob-secret!"  # 19 bytes: the blob ends in padding for every k
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        blob = enc(os.urandom(k) + value)
        out = mask(b"data: " + blob + b"\n", [value])
        first = -(-8 * k // 6)
        assert out == b"data: " + blob[:first] + STARS + b"\n", (blob, out)


def test_a_multiline_value_reprinted_with_other_whitespace_is_masked():
    value = b"line-one-secret\n  line two secret\nline-three-secret"
    # echo $X (unquoted): every whitespace run becomes one space; a pty: CRLF line ends
    out = subprocess.run(["bash", "-c", "echo $V"], capture_output=True,
                         env={"V": value.decode()}).stdout
    assert mask(out, [value]) == b"****\n"
    assert mask(value.replace(b"\n", b"\r\n"), [value]) == STARS


def test_kubeconfig_structure_never_becomes_a_pattern():
    kubeconfig = (b"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
                  b"    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=\n"
                  b"    server: https://10.1.2.3:6443\n  name: kubernetes\ncontexts:\n"
                  b"- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n"
                  b"  name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\n"
                  b"users:\n- name: kubernetes-admin\n  user:\n"
                  b"    token: k8s-t0ken-0123456789abcdef\n   \n\t\n")
    innocent = (b"apiVersion: v1\nkind: Config\nusers:\n  user:\nclusters:\ncontexts:\n"
                b"- name: kubernetes-admin\n  name: kubernetes\n    \n\t\n"
                b"kind: Pod\nmetadata:\n  name: web\nserver https://10.1.2.3:6443 is up\n")
    assert mask(innocent, [kubeconfig], detectors=()) == innocent
    pats = patterns_for([kubeconfig])
    assert not any(p.strip() == b"" for p in pats)
    # the informative lines are still masked on their own, without their keys
    assert mask(b"token: k8s-t0ken-0123456789abcdef\n", [kubeconfig]) == b"token: ****\n"


def test_short_forms_and_trailing_newline():
    # one trailing newline is not part of the value: the next line is not glued on
    assert mask(b"TOKEN-0123456\nnext line\n", [b"TOKEN-0123456\n"]) == b"****\nnext line\n"
    assert min(map(len, patterns_for([b"abcd\n"]))) >= 4


TOKENS = {
    "gitlab": b"glpat-AbCdEfGhIjKlMnOpQrSt",
    "github": b"ghp_" + b"A1b2C3d4E5" * 3 + b"x1y2z3",
    "github_pat": b"github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "slack": b"xoxb-1234567890-abcdefghij",
    "aws": b"AKIAIOSFODNN7EXAMPLE",
    "jwt": b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.mark.parametrize("name", TOKENS)
def test_token_shapes_are_masked_without_a_registered_value(name):
    text = b"config: " + TOKENS[name] + b" (loaded)\n"
    assert mask(text, []) == b"config: **** (loaded)\n"
    # and fed in pieces: the line is held back until it ends
    m = Masker([])
    out = b"".join(m.feed(text[i:i + 3]) for i in range(0, len(text), 3)) + m.flush()
    assert out == b"config: **** (loaded)\n"


def test_url_parameters_userinfo_and_aws_secret_keys_keep_their_names():
    text = (b"GET https://api.example.com/v1?user=bob&token=s3cr3t-tok&x=1\n"
            b"git clone https://deploy:hunter2-pw@git.example.com/app.git\n"
            b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
            b'{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}\n'
            b"see https://docs.example.com:8443/path?page=2 and user@example.com\n")
    assert mask(text, []) == (
        b"GET https://api.example.com/v1?user=bob&token=****&x=1\n"
        b"git clone https://deploy:****@git.example.com/app.git\n"
        b"aws_secret_access_key = ****\n"
        b'{"SecretAccessKey": "****"}\n'
        b"see https://docs.example.com:8443/path?page=2 and user@example.com\n")


def test_each_detector_can_be_switched_off():
    text = b"jwt " + TOKENS["jwt"] + b" gh " + TOKENS["github"] + b"\n"
    assert mask(text, [], detectors=detectors.enabled({"jwt": False})) == (
        b"jwt " + TOKENS["jwt"] + b" gh ****\n")
    assert set(detectors.NAMES) == {"gitlab", "github", "slack", "aws", "jwt", "url_params",
                                    "url_userinfo"}


def test_add_mask_commands_register_values_and_hide_themselves():
    text = (b"start\n::add-mask::runtime-secret-1\nuse runtime-secret-1 now\n"
            b"+ echo '::add-mask::runtime-secret-1'\n  ::add-mask::cnVudGltZQ==xx\n")
    for size in (1, 2, 7, 64):
        mc = MaskCommands(Masker([], detectors=()))
        out = b"".join(mc.feed(text[i:i + size]) for i in range(0, len(text), size)) + mc.flush()
        assert out == (b"start\n::add-mask::****\nuse **** now\n+ echo '::add-mask::****\n"
                       b"  ::add-mask::****\n"), size


def test_mask_file_lines_register_values(tmp_path):
    path = tmp_path / "mask"
    path.write_bytes(b"")
    seen = []
    mc = MaskCommands(Masker([], detectors=()), mask_file=str(path), on_add=seen.append)
    assert mc.feed(b"before file-secret-2\n") == b"before file-secret-2\n"
    path.write_bytes(b"file-secret-2\npartial")
    assert mc.feed(b"after file-secret-2\n") == b"after ****\n"
    assert seen == [b"file-secret-2"]
