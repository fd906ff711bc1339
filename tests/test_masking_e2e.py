"""Every masked form through the real path: ``workbench run`` and ``workbench exec`` against a
local vault, the forms printed by real tools or written in two halves, on stdout and stderr."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from urllib.parse import quote

import pytest

from tests.test_e2e_pipelines import local_vault, recorded_runs

# Re-emits its input line by line, each line in two writes with a pause between them: first
# all on stdout, then all again on stderr.
SPLIT = textwrap.dedent("""\
    import os, sys, time
    data = sys.stdin.buffer.read()
    for fd in (1, 2):
        for line in data.splitlines(keepends=True):
            half = len(line) // 2
            os.write(fd, line[:half]); time.sleep(0.003); os.write(fd, line[half:])
    """)
# The real tools print the value: shells' xtrace, printf %q, xxd, od.
TOOLS = ('{ bash -xc \': "$TOKEN"\'; dash -xc \': "$TOKEN"\'; busybox sh -xc \': "$TOKEN"\'; '
         'bash -c \'printf "%q\\n" "$TOKEN"\'; printf %s "$TOKEN" | xxd -p; '
         'printf %s "$TOKEN" | od -An -tx1; '
         'echo $MULTI; bash -xc \': "$CTL"\'; '
         'bash -c \'printf "%q\\n" "$CTL"\'; } 2>&1 | {py} split.py')
ONE_FORM = re.compile(rb"^([a-z0-9-]+): (.*)$")


def nasty() -> str:
    return f"it's \"q\" $HOME `x` a\\b&+c<d>e é {secrets.token_hex(8)}"


def forms_of(value: str, multi: str, quoted: str, ctl: str) -> dict[str, bytes]:
    """Each form, computed the way the tool or library that prints it computes it."""
    v = value.encode()
    after = value[value.index("&+") + 3:]  # PowerShell colours the character after &+
    out = {
        "trimmed": quoted.strip('"'), "ps-pre": value[:value.index("&+") + 2], "ps-post": after,
        # Go's %q of "ctl\a\v\x1b\x7f-…" (strconv.Quote: \a, \v, \x1b, \x7f)
        "go-q": "ctl\\a\\v\\x1b\\x7f-" + ctl.split("-", 1)[1],
        "xml": value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace('"', "&quot;").replace("'", "&apos;"),
        "html": html.escape(value), "sql": value.replace("'", "''"),
        "csv": value.replace('"', '""'), "cmdline": value.replace('"', '\\"'),
        "cmdline2": value.replace("\\", "\\\\").replace('"', '\\"'),
        "json-upper": json.dumps(value)[1:-1].replace("\\u00e9", "\\u00E9"),
        "url-double": quote(quote(value, safe=""), safe=""),
        "hex": v.hex(), "hex-upper": v.hex().upper(),
        "ml-crlf": multi.replace("\n", "\r\n"), "ml-spaces": " ".join(multi.split()),
    }
    forms = {k: s.encode() for k, s in out.items()}
    for k in range(3):  # the value at the end of a base64 blob
        forms[f"blob-end-{k}"] = base64.b64encode(os.urandom(k) + v)
    return forms


def setup_vault(tmp_path):
    master, wb = local_vault(tmp_path)
    value, multi = nasty(), f"line-one-{secrets.token_hex(6)}\n  second line {secrets.token_hex(6)}"
    quoted, ctl = f'"quoted-{secrets.token_hex(8)}"', f"ctl\a\v\x1b\x7f-{secrets.token_hex(8)}"
    for cid, secret in (("nasty", value), ("multi", multi), ("short", "abc12"),
                        ("quoted", quoted), ("ctl", ctl)):
        res = wb("cred", "add", cid, "--type", "secret_text", "--values-stdin",
                 stdin=json.dumps({"secret": secret}))
        assert res.returncode == 0, res.stderr
    forms = forms_of(value, multi, quoted, ctl)
    (tmp_path / "split.py").write_text(SPLIT)
    (tmp_path / "forms.txt").write_bytes(b"".join(k.encode() + b": " + f + b"\n"
                                                  for k, f in forms.items()))
    return wb, {"TOKEN": value, "MULTI": multi, "QUOTED": quoted, "CTL": ctl}, forms


def tool_lines(values: dict[str, str]) -> list[bytes]:
    """What the tools print unmasked (run here the same way): none of it may reach the log."""
    script = TOOLS.replace(" | {py} split.py", "")
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True,
                         env={**values, "PATH": os.environ["PATH"]}).stdout
    # (od's address column is not the value's; a last dump line under 8 characters may stay)
    return [line for line in out.splitlines()
            if len(re.sub(rb"^[0-7]{7}", b"", line).strip()) >= 8]


def assert_masked(log: bytes, values: dict[str, str], forms: dict[str, bytes]) -> None:
    for label, form in forms.items():
        shown = [m.group(2) for m in map(ONE_FORM.match, log.splitlines())
                 if m and m.group(1) == label.encode()]
        assert len(shown) == 2, (label, shown)  # once from stdout, once from stderr
        for s in shown:
            # (a blob keeps up to 3 leading characters: the bytes before the value)
            assert b"****" in s and form not in s and len(s.replace(b"****", b"")) <= 3, (
                label, s)
    for line in tool_lines(values):
        assert line not in log, line
    for value in values.values():
        assert value.encode() not in log
        # nor a piece of it between quotes (shell quoting cuts a value there); pieces of 8
        # bytes or more: "it" of "it's …" is also what a base64 blob may keep of its own
        # bytes before the value, which made this test fail at random
        for piece in value.split("'"):
            assert len(piece) < 8 or piece.encode() not in log, piece


def test_every_form_through_workbench_run_and_exec(tmp_path):
    wb, values, forms = setup_vault(tmp_path)
    step = f"cat forms.txt | {sys.executable} split.py; " + TOOLS.replace("{py}", sys.executable)
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "forms", "steps": [
        {"name": "print", "run": step, "credentials": [
            {"id": "nasty", "env": "TOKEN"}, {"id": "multi", "env": "MULTI"},
            {"id": "quoted", "env": "QUOTED"}, {"id": "ctl", "env": "CTL"}]}]}))
    res = wb("run", "p.yaml")
    assert res.returncode == 0, res.stderr
    assert_masked(res.stdout.encode(), values, forms)
    assert "+ : '****'" in res.stdout  # bash's xtrace, value masked inside its quotes
    (run,) = recorded_runs(tmp_path)
    assert_masked(run["steps"][0]["log"].encode(), values, forms)

    res = wb("exec", "--cred", "nasty:env=TOKEN", "--cred", "multi:env=MULTI", "--cred",
             "quoted:env=QUOTED", "--cred", "ctl:env=CTL", "--", "sh", "-c", step)
    assert res.returncode == 0, res.stderr
    assert_masked(res.stdout.encode(), values, forms)


def test_values_registered_during_a_step_are_masked_then_and_later(tmp_path):
    wb, *_ = setup_vault(tmp_path)
    said, filed = f"said-{secrets.token_hex(8)}", f"filed-{secrets.token_hex(8)}"
    py = sys.executable
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "addmask", "steps": [
        {"name": "register", "environment": {"SAID": said, "FILED": filed}, "run":
            # (tracing off before the file write: its trace line would come before it)
            f'set -x; echo "::add-mask::$SAID"; echo "now: $SAID" | {py} split.py; set +x; '
            f'printf "%s\\n" "$FILED" >> "$WORKBENCH_MASK"; set -x; '
            f'echo "file: $FILED" | {py} split.py'},
        {"name": "later", "environment": {"SAID": said, "FILED": filed}, "run":
            f'echo "later: $SAID $FILED" | {py} split.py'}]}))
    res = wb("run", "p.yaml")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert said not in out and filed not in out, out
    def lines(text):
        return len(re.findall(f"^{re.escape(text)}$", out, re.M))
    assert lines("now: ****") == 2 and lines("file: ****") == 2
    assert lines("later: **** ****") == 2
    assert "::add-mask::****" in out  # the command line itself, and its xtrace, hide the value
    res = wb("exec", "--", "sh", "-c", f'echo "::add-mask::{said}"; echo "x {said}" | {py} split.py')
    assert res.returncode == 0 and said not in res.stdout and res.stdout.count("x ****") == 2


JWT = ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
       "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")


@pytest.mark.parametrize("switch", [None, "jwt"])
def test_token_shapes_are_detected_unless_switched_off(tmp_path, switch):
    wb, *_ = setup_vault(tmp_path)
    tokens = {"gitlab": "glpat-" + secrets.token_hex(10), "github": "ghp_" + "a1B2c3D4" * 4 + "zz99",
              "slack": "xoxb-123456-" + secrets.token_hex(6), "aws": "AKIAIOSFODNN7EXAMPLE",
              "jwt": JWT, "url": f"https://h.example/x?a=1&token={secrets.token_hex(6)}",
              "userinfo": f"https://me:{secrets.token_hex(6)}@h.example/"}
    (tmp_path / "tokens.txt").write_text("".join(f"{k}: {v}\n" for k, v in tokens.items()))
    pipeline = {"name": "shapes", "steps": [
        {"name": "print", "run": f"cat tokens.txt | {sys.executable} split.py"}]}
    if switch:
        pipeline["masking"] = {"detectors": {switch: False}}
    (tmp_path / "p.yaml").write_text(json.dumps(pipeline))
    res = wb("run", "p.yaml")
    assert res.returncode == 0, res.stderr
    for name, token in tokens.items():
        secret = token.rsplit("=", 1)[-1].split(":")[-1].split("@")[0]
        assert (secret in res.stdout) == (name == switch), (name, res.stdout)
        assert res.stdout.count(f"{name}: ") == 2


def test_short_values_are_refused_unless_the_binding_says_mask_false(tmp_path):
    wb, *_ = setup_vault(tmp_path)
    step = {"name": "s", "run": 'echo "v=$SHORT"'}
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "short", "steps": [
        dict(step, credentials=[{"id": "short", "env": "SHORT"}])]}))
    res = wb("run", "p.yaml")
    assert res.returncode == 2 and "shorter than 8 bytes to SHORT" in res.stderr
    assert "abc12" not in res.stderr + res.stdout and "mask: false" in res.stderr
    res = wb("exec", "--cred", "short:env=SHORT", "--", "true")
    assert res.returncode == 2 and "abc12" not in res.stderr
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "short", "steps": [
        dict(step, credentials=[{"id": "short", "env": "SHORT", "mask": False}])]}))
    res = wb("run", "p.yaml")
    assert res.returncode == 0 and "v=abc12" in res.stdout  # unmasked, as asked
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "short", "masking": {"min_length": 5},
                                                 "steps": [dict(step, credentials=[
                                                     {"id": "short", "env": "SHORT"}])]}))
    res = wb("run", "p.yaml")
    assert res.returncode == 0 and "v=****" in res.stdout


def test_kubeconfig_structure_stays_visible(tmp_path):
    master, wb = local_vault(tmp_path)
    token = f"k8s-{secrets.token_hex(12)}"
    kubeconfig = ("apiVersion: v1\nkind: Config\nusers:\n- name: kubernetes-admin\n  user:\n"
                  f"    token: {token}\n\n   \n")
    res = wb("cred", "add", "kube", "--type", "secret_text", "--values-stdin",
             stdin=json.dumps({"secret": kubeconfig}))
    assert res.returncode == 0, res.stderr
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "k", "steps": [{
        "name": "s", "credentials": [{"id": "kube", "env": "KC"}],
        "run": f'printf "apiVersion: v1\\nusers:\\n  user:\\n- name: kubernetes-admin\\n   \\n"; '
               f'echo "t=$(echo "$KC" | grep token:)"'}]}))
    res = wb("run", "p.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("apiVersion: v1\nusers:\n  user:\n- name: kubernetes-admin\n   \n")
    assert token not in res.stdout and "t=    token: ****" in res.stdout
