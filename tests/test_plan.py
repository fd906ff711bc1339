"""Planning: every credential type and binding form, the env allowlist, and the refusals."""
import base64
import json
import textwrap

import pytest

from tests.fixtures.pipelines import DictResolver, canary
from workbench.errors import PipelineError
from workbench.pipeline.parse import parse_pipeline
from workbench.pipeline.plan import SAFE_PATH, plan

KUBE_TOKEN = canary("kubetoken")
KUBECONFIG = textwrap.dedent(f"""\
    apiVersion: v1
    kind: Config
    clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:6443"}}}}]
    users: [{{name: u, user: {{token: {KUBE_TOKEN}}}}}]
    contexts: [{{name: ctx, context: {{cluster: c, user: u}}}}]
    current-context: ctx
    """)
SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + canary("sshkeyline") * 2 +
           "\n-----END OPENSSH PRIVATE KEY-----\n")


def one_step(creds: str, extra: str = "") -> str:
    return ("steps:\n  - name: s\n    run: 'true'\n" + textwrap.indent(extra, "    ") +
            "    credentials:\n" + textwrap.indent(textwrap.dedent(creds), "      "))


def planned(resolver, text, **kw):
    steps = plan(parse_pipeline(text, filename="ci/p.yaml"), resolver, context={"run": "r1"},
                 workdir="/work/dir", **kw)
    return steps[0] if len(steps) == 1 else steps


@pytest.fixture
def vault():
    r = DictResolver()
    r.add("git", "username_password", {"username": "bot", "password": canary("gitpw")})
    r.add("tok", "secret_text", {"secret": canary("tok1")})
    r.add("tok", "secret_text", {"secret": canary("tok2")})
    r.add("kube", "kubeconfig", {"kubeconfig": KUBECONFIG})
    r.add("reg", "docker_registry", {"registry": "127.0.0.1:5000", "username": "pusher",
                                     "password": canary("regpw")})
    r.add("deploy-key", "ssh_private_key", {"username": "git", "private_key": SSH_KEY})
    r.add("aws", "access_key", {"access_key_id": "AKIAEXAMPLE",
                                "secret_access_key": canary("awssecret")})
    r.add("misc", "generic", {"values": {"API_URL": "https://api.example", "API_KEY": canary()}})
    r.add("cert", "secret_file", {"filename": "client.pem", "content": canary("pem").encode()})
    return r


def values(r, cid, version=None):
    versions = r.store[cid]
    return versions[(version or len(versions)) - 1][1]


def test_username_password_bindings(vault):
    pw = values(vault, "git")["password"]
    s = planned(vault, one_step("- git\n"))
    assert s.env["GIT_USR"] == "bot" and s.env["GIT_PSW"] == pw
    s = planned(vault, one_step("- {id: git, env: CREDS}\n"))
    assert s.env["CREDS"] == f"bot:{pw}"
    s = planned(vault, one_step("- {id: git, env: {username: U, password: P}}\n"))
    assert (s.env["U"], s.env["P"]) == ("bot", pw) and s.uses == (("git", 1),)
    assert s.files == () and s.executor == "local"


def test_secret_text_versions_env_and_file(vault):
    s = planned(vault, one_step("- tok\n"))
    assert s.env["TOK"] == values(vault, "tok")["secret"] and s.uses == (("tok", 2),)
    s = planned(vault, one_step("- {id: tok@1, file: TOKEN_FILE}\n"))
    (f,) = s.files
    assert f.env == "TOKEN_FILE" and f.filename == "secret"
    assert f.content == values(vault, "tok", 1)["secret"].encode()
    assert "TOKEN_FILE" not in s.env and s.uses == (("tok", 1),)


def test_kubeconfig_default_is_a_file(vault):
    s = planned(vault, one_step("- kube\n"))
    (f,) = s.files
    assert (f.env, f.filename, f.expose_dir) == ("KUBECONFIG", "kubeconfig", False)
    assert f.content == KUBECONFIG.encode()
    assert KUBE_TOKEN.encode() in s.secrets
    s = planned(vault, one_step("- {id: kube, env: KUBE_YAML}\n"))
    assert s.env["KUBE_YAML"] == KUBECONFIG


def test_docker_registry_file_exposes_a_dir(vault):
    v = values(vault, "reg")
    s = planned(vault, one_step("- reg\n"))
    (f,) = s.files
    assert f.env == "DOCKER_CONFIG" and f.expose_dir and f.filename == "config.json"
    auth = json.loads(f.content)["auths"]["127.0.0.1:5000"]["auth"]
    assert base64.b64decode(auth).decode() == f"pusher:{v['password']}"
    s = planned(vault, one_step("- {id: reg, env: {username: RU, password: RP}}\n"))
    assert s.env["RP"] == v["password"]


def test_ssh_key_default_binds_file_and_username(vault):
    s = planned(vault, one_step("- deploy-key\n"))
    assert s.env["DEPLOY_KEY_USR"] == "git"
    (f,) = s.files
    assert f.env == "DEPLOY_KEY_KEY" and f.content == SSH_KEY.encode()


def test_access_key_default_is_aws(vault):
    s = planned(vault, one_step("- aws\n"))
    assert s.env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"
    assert s.env["AWS_SECRET_ACCESS_KEY"] == values(vault, "aws")["secret_access_key"]


def test_generic_expands_each_key_or_binds_chosen_ones(vault):
    v = values(vault, "misc")["values"]
    s = planned(vault, one_step("- misc\n"))
    assert s.env["API_URL"] == v["API_URL"] and s.env["API_KEY"] == v["API_KEY"]
    s = planned(vault, one_step("- {id: misc, env: {API_KEY: KEY}}\n"))
    assert s.env["KEY"] == v["API_KEY"] and "API_URL" not in s.env
    s = planned(vault, one_step("- {id: misc, file: VALUES}\n"))
    assert s.files[0].filename == "values.env" and v["API_KEY"].encode() in s.files[0].content


def test_secret_file_keeps_or_overrides_its_name(vault):
    s = planned(vault, one_step("- cert\n"))
    (f,) = s.files
    assert (f.env, f.filename) == ("CERT", "client.pem")
    s = planned(vault, one_step("- {id: cert, file: TLS, filename: tls.pem}\n"))
    assert (s.files[0].env, s.files[0].filename) == ("TLS", "tls.pem")


def test_env_is_an_allowlist_not_a_copy(vault, monkeypatch):
    environ = {"WORKBENCH_MASTER_KEY": "mk", "WORKBENCH_RUNNER_TOKEN": "rt", "PATH": "/evil",
               "LD_PRELOAD": "/evil.so", "LANG": "C.UTF-8", "TZ": "UTC", "AWS_PROFILE": "x"}
    s = planned(vault, one_step("- tok\n", "environment: {LEVEL: debug}\n"), environ=environ)
    assert s.env == {"PATH": SAFE_PATH, "HOME": "/work/dir", "LANG": "C.UTF-8", "TZ": "UTC",
                     "CI": "true", "WORKBENCH_PIPELINE": "p", "WORKBENCH_STEP": "s",
                     "WORKBENCH_RUN": "r1", "LEVEL": "debug", "TOK": s.env["TOK"]}
    monkeypatch.setenv("WORKBENCH_MASTER_KEY", "from-os-environ")
    s = planned(vault, one_step("- tok\n"))
    assert "WORKBENCH_MASTER_KEY" not in s.env


def test_secrets_cover_every_credential_of_the_run(vault):
    text = ("steps:\n  - {name: a, run: x, credentials: [git]}\n"
            "  - {name: b, run: y, credentials: [aws]}\n")
    a, b = planned(vault, text)
    assert a.secrets == b.secrets
    assert values(vault, "aws")["secret_access_key"].encode() in a.secrets
    assert "AWS_SECRET_ACCESS_KEY" not in a.env and "GIT_PSW" not in b.env
    pw = values(vault, "git")["password"]
    assert f"bot:{pw}".encode() in a.secrets


def test_all_refs_resolved_in_one_call_with_context(vault):
    text = ("steps:\n  - {name: a, run: x, credentials: [git, tok@1]}\n"
            "  - {name: b, run: y, credentials: [git]}\n")
    planned(vault, text)
    ((refs, context),) = vault.calls
    assert [str(r) for r in refs] == ["git", "tok@1"]
    assert context == {"run": "r1", "pipeline": "p"}


def test_unknown_id_refused_before_anything_names_file_line_step(vault):
    text = ("steps:\n  - {name: a, run: x, credentials: [git]}\n"
            "  - name: b\n    run: y\n    credentials:\n      - nope\n")
    with pytest.raises(PipelineError) as info:
        planned(vault, text)
    err = info.value
    assert str(err).startswith("ci/p.yaml:6: step b: unknown credential 'nope'")
    assert err.details["missing"] == ["nope"]


def test_unknown_version_refused(vault):
    with pytest.raises(PipelineError, match=r"ci/p.yaml:5: step s: credential 'tok' has no "
                                            r"version 7"):
        planned(vault, one_step("- tok@7\n"))


@pytest.mark.parametrize("binding,field", [
    ("{id: git, file: F}", "file"),            # username_password has no file form
    ("{id: kube, env: {token: T}}", "token"),  # kubeconfig has no bindable fields
    ("{id: deploy-key, env: KEY}", "env"),      # an ssh key has no single value
    ("{id: aws, env: {secret: S}}", "secret"),
    ("{id: misc, env: {NOPE: N}}", "NOPE"),
])
def test_binding_that_does_not_fit_the_type(vault, binding, field):
    with pytest.raises(PipelineError) as info:
        planned(vault, one_step(f"- {binding}\n"))
    err = info.value
    assert err.details["line"] == 5 and err.details["file"] == "ci/p.yaml"
    assert "step s: credential" in err.message


@pytest.mark.parametrize("cred_id,type_name,values_", [
    ("path", "secret_text", {"secret": "abcdefgh"}),        # default env PATH
    ("ld-preload", "secret_text", {"secret": "abcdefgh"}),  # default env LD_PRELOAD
    ("home", "secret_file", {"filename": "x", "content": b"abcdefgh"}),  # default file HOME
    ("evil", "generic", {"values": {"BASH_ENV": "/tmp/x", "OK": "fine"}}),  # expanded keys
])
def test_hijacking_names_from_default_bindings_refused(cred_id, type_name, values_):
    r = DictResolver()
    r.add(cred_id, type_name, values_)
    with pytest.raises(PipelineError, match="may not be set"):
        planned(r, one_step(f"- {cred_id}\n"))


def test_generic_keys_colliding_with_other_bindings_refused(vault):
    r = vault
    r.add("more", "generic", {"values": {"API_KEY": "other-value"}})
    with pytest.raises(PipelineError, match="API_KEY is bound twice"):
        planned(r, one_step("- misc\n- more\n"))


def test_image_steps_use_docker_and_pull_auth(vault):
    text = ("steps:\n  - name: s\n    image: 127.0.0.1:5000/busybox:1\n"
            "    image_pull_credential: reg\n    run: 'true'\n")
    s = planned(vault, text)
    assert s.executor == "docker" and s.image == "127.0.0.1:5000/busybox:1"
    assert s.pull_auth.registry == "127.0.0.1:5000" and s.pull_auth.username == "pusher"
    assert s.pull_auth.password == values(vault, "reg")["password"]
    assert "PATH" not in s.env and "HOME" not in s.env and s.uses == (("reg", 1),)
    assert s.pull_auth.password.encode() in s.secrets


def test_pull_credential_must_be_docker_registry(vault):
    text = "steps:\n  - {name: s, image: 'busybox:1', image_pull_credential: git, run: x}\n"
    with pytest.raises(PipelineError, match="must be docker_registry"):
        planned(vault, text)


def test_pull_credential_never_sent_to_another_registry(vault):
    text = ("steps:\n  - {name: s, image: 'evil.example:5000/busybox:1', "
            "image_pull_credential: reg, run: x}\n")
    with pytest.raises(PipelineError, match="not on registry"):
        planned(vault, text)
