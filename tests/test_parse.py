"""Pipeline parsing: the accepted format and every class of refusal, each naming file/line/field."""
import textwrap

import pytest

from workbench.errors import PipelineError
from workbench.pipeline.parse import MAX_BYTES, load_pipeline, parse_pipeline
from workbench.pipeline.resolve import Ref

EXAMPLE = """\
name: build-and-deploy
steps:
  - name: clone
    run: git clone "https://$GIT_USER:$GIT_PASS@git.example/team/app.git"
    credentials:
      - id: github-id
        env: {username: GIT_USER, password: GIT_PASS}
  - name: deploy
    image: local/busybox:1
    image_pull_credential: registry-id
    run: kubectl --kubeconfig "$KUBECONFIG" apply -f k8s/
    timeout: 10m
    environment: {LOG_LEVEL: debug, RETRIES: 3}
    credentials:
      - id: prod-kubeconfig@3
        file: KUBECONFIG
      - id: api-token
        env: API_TOKEN
      - plain-default
"""


def refused(text: str, *, filename="ci/p.yaml") -> PipelineError:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(textwrap.dedent(text), filename=filename)
    err = info.value
    assert err.details["file"] == filename
    assert str(err).startswith(f"{filename}:")
    return err


def step_yaml(body: str) -> str:
    return "steps:\n  - name: s\n    run: echo hi\n" + textwrap.indent(textwrap.dedent(body), "    ")


def test_example_parses_with_lines_refs_and_timeouts():
    p = parse_pipeline(EXAMPLE, filename="ci/deploy.yaml")
    assert p.name == "build-and-deploy" and p.file == "ci/deploy.yaml"
    clone, deploy = p.steps
    assert clone.line == 3 and deploy.line == 8
    assert clone.credentials[0].env == {"username": "GIT_USER", "password": "GIT_PASS"}
    assert clone.credentials[0].line == 6
    assert deploy.image_pull_credential == Ref("registry-id")
    assert deploy.timeout == 600.0
    assert deploy.environment == {"LOG_LEVEL": "debug", "RETRIES": "3"}
    kube, token, plain = deploy.credentials
    assert kube.ref == Ref("prod-kubeconfig", 3) and kube.file == "KUBECONFIG"
    assert token.env == "API_TOKEN" and token.file is None
    assert plain.ref == Ref("plain-default") and plain.env is None and plain.file is None


@pytest.mark.parametrize("value,seconds", [("30s", 30), ("10m", 600), ("1h", 3600), (45, 45),
                                          ("1.5m", 90)])
def test_timeouts(value, seconds):
    p = parse_pipeline(step_yaml(f"timeout: {value}\n"), filename="p.yaml")
    assert p.steps[0].timeout == seconds


def test_name_defaults_to_file_stem():
    assert parse_pipeline("steps: [{name: a, run: 'true'}]", filename="x/nightly.yaml").name \
        == "nightly"


def test_syntax_error_names_line():
    err = refused("steps:\n  - name: a\n    run: [unclosed\n")
    assert err.details["line"] >= 3


def test_oversized_text_refused(tmp_path):
    big = "steps: [{name: a, run: 'true'}]\n#" + "x" * MAX_BYTES
    with pytest.raises(PipelineError, match="larger than"):
        parse_pipeline(big, filename="big.yaml")
    f = tmp_path / "big.yaml"
    f.write_text(big)
    with pytest.raises(PipelineError, match="larger than") as info:
        load_pipeline(f)
    assert info.value.details["file"] == str(f)


def test_billion_laughs_refused():
    err = refused("""\
        a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
        steps: [*b]
        """)
    assert "anchors and aliases" in err.message and err.details["line"] == 1


def test_alias_refused_even_without_anchor_line():
    err = refused("steps:\n  - &s {name: a, run: 'true'}\n  - *s\n")
    assert err.details["line"] == 2


def test_deep_nesting_refused():
    err = refused("steps:\n  - name: a\n    run: x\n    environment: " + "[" * 40 + "]" * 40 + "\n")
    assert "nesting" in err.message


def test_unknown_key_suggests_the_close_one():
    err = refused("""\
        steps:
          - name: a
            run: 'true'
            credentails: [x]
        """)
    assert err.details["line"] == 4 and "did you mean 'credentials'" in err.message
    assert err.field == "steps[0].credentails"


def test_unknown_top_level_key():
    err = refused("stpes: []\n")
    assert "did you mean 'steps'" in err.message and err.field == "stpes"


def test_missing_steps_and_empty_steps():
    assert refused("name: x\n").field == "steps"
    assert refused("steps: []\n").field == "steps"
    assert refused("").details["line"] == 1


def test_step_needs_name_and_run():
    assert refused("steps:\n  - run: 'true'\n").field == "steps[0].name"
    assert refused("steps:\n  - name: a\n").field == "steps[0].run"
    assert refused("steps:\n  - name: a\n    run: '  '\n").field == "steps.a.run"


def test_duplicate_step_names():
    err = refused("steps:\n  - {name: a, run: x}\n  - {name: a, run: y}\n")
    assert err.details["line"] == 3 and "already used on line 2" in err.message


@pytest.mark.parametrize("name", ["-lead", "has space", "a/b", "x" * 64, "ümlaut"])
def test_invalid_step_names(name):
    err = refused(f"steps:\n  - name: '{name}'\n    run: x\n")
    assert err.field == "steps[0].name" and err.details["line"] == 2


@pytest.mark.parametrize("value", ["0", "-5", "5d", "ten", "25h", "true"])
def test_bad_timeouts(value):
    err = refused(step_yaml(f"timeout: {value}\n"))
    assert err.field == "steps.s.timeout" and err.details["line"] == 4


@pytest.mark.parametrize("ref", ["Upper", "-x", "x-", "a b", "x@0", "x@v2", "x@@2", "a" * 64])
def test_bad_credential_ids(ref):
    err = refused(step_yaml(f"credentials:\n  - id: '{ref}'\n    env: X\n"))
    assert err.field == "steps.s.credentials[0].id" and err.details["line"] == 5


def test_pinned_version_and_dotted_id():
    p = parse_pipeline(step_yaml("credentials: [team.api_key-2@12]\n"), filename="p")
    assert p.steps[0].credentials[0].ref == Ref("team.api_key-2", 12)


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "X" * 129])
def test_invalid_env_names(name):
    err = refused(step_yaml(f"credentials:\n  - id: tok\n    env: '{name}'\n"))
    assert "not a valid variable name" in err.message and err.details["line"] == 6


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_FOO",
                                  "DYLD_INSERT_LIBRARIES", "BASH_ENV", "ENV", "SHELLOPTS",
                                  "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "HOME", "SHELL",
                                  "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
                                  "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT", "NODE_OPTIONS",
                                  "RUBYOPT", "GIT_SSH_COMMAND", "GIT_ASKPASS", "SSH_AUTH_SOCK",
                                  "WORKBENCH_MASTER_KEY", "WORKBENCH_RUNNER_TOKEN"])
@pytest.mark.parametrize("form", ["env", "fields", "file", "environment"])
def test_hijacking_names_refused_in_every_binding_form(name, form):
    body = {
        "env": f"credentials:\n  - id: tok\n    env: {name}\n",
        "fields": f"credentials:\n  - id: tok\n    env: {{username: {name}}}\n",
        "file": f"credentials:\n  - id: tok\n    file: {name}\n",
        "environment": f"environment:\n  {name}: x\n",
    }[form]
    err = refused(step_yaml(body))
    assert "may not be set" in err.message
    assert err.details["line"] in (5, 6)


def test_same_name_bound_twice_in_a_step():
    err = refused(step_yaml("""\
        environment: {TOKEN: plain}
        credentials:
          - id: a
            env: {username: USER, password: TOKEN}
        """))
    assert "bound twice" in err.message and "line 4" in err.message
    assert err.details["line"] == 7 and err.field == "steps.s.credentials.a.env.password"
    err = refused(step_yaml("credentials:\n  - {id: a, file: CFG}\n  - {id: b, env: CFG}\n"))
    assert err.details["line"] == 6


def test_same_name_in_two_steps_is_fine():
    text = ("steps:\n  - {name: a, run: x, credentials: [{id: t, env: TOKEN}]}\n"
            "  - {name: b, run: y, credentials: [{id: t, env: TOKEN}]}\n")
    assert len(parse_pipeline(text, filename="p").steps) == 2


@pytest.mark.parametrize("key,value", [("file", "../KUBECONFIG"), ("file", "a/b"),
                                       ("filename", "../../etc/passwd"), ("filename", "a/b"),
                                       ("filename", ".hidden")])
def test_file_names_with_path_parts_refused(key, value):
    extra = "    file: CFG\n" if key == "filename" else ""
    err = refused(step_yaml(f"credentials:\n  - id: kube\n{extra}    {key}: '{value}'\n"))
    assert err.field == f"steps.s.credentials.kube.{key}"


def test_filename_needs_file_and_pull_credential_needs_image():
    assert refused(step_yaml("credentials:\n  - {id: k, filename: cfg}\n")).field \
        == "steps.s.credentials.k.filename"
    assert refused(step_yaml("image_pull_credential: reg\n")).field \
        == "steps.s.image_pull_credential"


def test_wrong_shapes():
    assert refused("steps: {a: 1}\n").field == "steps"
    assert refused(step_yaml("credentials: tok\n")).field == "steps.s.credentials"
    assert refused(step_yaml("environment: [A]\n")).field == "steps.s.environment"
    assert refused(step_yaml("environment: {A: {b: c}}\n")).field == "steps.s.environment.A"
    assert refused("steps:\n  - name: a\n    run: [x]\n").field == "steps.a.run"
    assert refused(step_yaml("image: 'bad image'\n")).field == "steps.s.image"


def test_duplicate_keys_refused():
    err = refused("steps:\n  - name: a\n    run: x\n    run: y\n")
    assert "appears twice" in err.message and err.details["line"] == 4


def test_unsafe_tags_refused():
    err = refused("steps:\n  - name: a\n    run: !!python/object/apply:os.system ['id']\n")
    assert err.details["line"] == 3


def test_error_messages_do_not_echo_long_values():
    secret = "S3CR3T" * 50
    err = refused(step_yaml(f"credentials:\n  - id: '{secret}'\n"))
    assert secret not in str(err)
