"""YAML bombs (issue 16, item 2): every YAML the server reads is refused, quickly, with a 4xx."""
import signal

import pytest

from workbench import kubeconfig
from workbench.errors import PipelineError
from workbench.pipeline.parse import parse_pipeline

# 1.3 KB; yaml.safe_load expands it to 2**30 merged keys (a worker pinned, gigabytes of memory)
MERGE_BOMB = "a0: &a0 {k: v}\n" + "".join(
    f"a{i}: &a{i}\n  <<: [*a{i - 1}, *a{i - 1}]\n  k{i}: v\n" for i in range(1, 31))
# billion laughs: nine aliases of nine aliases ... of nine strings
LAUGHS = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_BLOCK = "- " * 100_000 + "x\n"
BOMBS = {"chained-merge": (MERGE_BOMB, "aliases"), "billion-laughs": (LAUGHS, "aliases"),
         "100k-deep-flow": (DEEP, "nesting deeper"),
         "100k-deep-block": (DEEP_BLOCK, "nesting deeper"),
         "inline-merge": ("a:\n  <<: {x: 1}\n", "merge keys"),
         "5000-digit-int": ("name: " + "7" * 5000 + "\n", "cannot be read")}


@pytest.fixture(autouse=True)
def no_hang():
    """Before the fix a bomb never returned: fail the test after a minute instead of hanging."""
    def stop(*_):
        raise TimeoutError("the YAML was still being expanded after 60 s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_the_merge_bomb_is_the_small_one_of_the_issue():
    assert 1000 < len(MERGE_BOMB) < 1400


@pytest.mark.parametrize("bomb", BOMBS)
def test_kubeconfig_bomb_via_the_api_is_a_422_and_stores_nothing(api_as, bomb):
    text, words = BOMBS[bomb]
    editor = api_as("editor")
    r = editor.post("/credentials", {"id": "kube", "type": "kubeconfig",
                                     "values": {"kubeconfig": text}})
    assert r.status_code == 422, r.get_data(as_text=True)[:300]
    err = r.get_json()["error"]
    assert err["details"]["field"] == "kubeconfig" and words in err["message"]
    assert len(err["message"]) < 200  # the message names the problem, never the document
    assert editor.get("/credentials/kube").status_code == 404


@pytest.mark.parametrize("bomb", BOMBS)
def test_pipeline_bomb_is_a_clear_error(bomb):
    text, words = BOMBS[bomb]
    with pytest.raises(PipelineError, match=words) as info:
        parse_pipeline(text, filename="ci/bomb.yaml")
    assert info.value.message.startswith("ci/bomb.yaml")


@pytest.mark.parametrize("bomb", BOMBS)
def test_kubeconfig_masking_never_expands_a_bomb(bomb):
    assert kubeconfig.secrets(BOMBS[bomb][0]) == []


def test_ordinary_kubeconfig_still_parses():
    doc = kubeconfig.parse(
        "apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: 'https://k:6443'}\n"
        "users:\n- name: u\n  user:\n    exec:\n      command: aws\n      env:\n"
        "      - {name: AWS_PROFILE, value: ci}\ncontexts:\n- name: x\n"
        "  context: {cluster: c, user: u}\ncurrent-context: x\n")
    assert doc["users"][0]["user"]["exec"]["env"][0]["value"] == "ci"
