"""Credentials through the REST API: every type, immutability, write-only values, versions."""
import base64
import json

import pytest

from tests.fixtures.vault import add_scopes

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u1
  user: {token: kube-token-canary-7731}
contexts:
- name: ctx
  context: {cluster: c1, user: u1}
current-context: ctx
"""
SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUtc3NoLWNhbmFyeS0x"
           "\n-----END OPENSSH PRIVATE KEY-----\n")
EVERY_TYPE = {
    "username_password": ({"username": "alice", "password": "pw-canary-1111"}, "pw-canary-1111"),
    "secret_text": ({"secret": "st-canary-2222"}, "st-canary-2222"),
    "kubeconfig": ({"kubeconfig": KUBECONFIG}, "kube-token-canary-7731"),
    "docker_registry": ({"registry": "127.0.0.1:5000", "username": "bob",
                         "password": "reg-canary-3333"}, "reg-canary-3333"),
    "ssh_private_key": ({"username": "git", "private_key": SSH_KEY, "passphrase": "pp-canary-44"},
                        "bmUtc3NoLWNhbmFyeS0x"),
    "access_key": ({"access_key_id": "AKIAEXAMPLE", "secret_access_key": "ak-canary-5555"},
                   "ak-canary-5555"),
    "generic": ({"values": {"API_URL": "https://x", "API_KEY": "gen-canary-6666"}},
                "gen-canary-6666"),
    "secret_file": ({"filename": "creds.json",
                     "content": base64.b64encode(b'{"k": "file-canary-7777"}').decode()},
                    "file-canary-7777"),
}


@pytest.mark.parametrize("type_name", sorted(EVERY_TYPE))
def test_every_type_is_stored_and_never_returned(api_as, vault, type_name):
    editor, runner = api_as("editor"), api_as("runner")
    values, canary = EVERY_TYPE[type_name]
    r = editor.post("/credentials", {"id": f"{type_name.replace('_', '-')}-id", "type": type_name,
                                     "name": "Mine", "values": values})
    assert r.status_code == 201, r.get_json()
    cid = r.get_json()["id"]
    for resp in (r, editor.get(f"/credentials/{cid}"), editor.get("/credentials"),
                 editor.get(f"/credentials/{cid}/versions"), api_as("admin").get("/audit")):
        assert canary not in resp.get_data(as_text=True)
    got = runner.post("/resolve", {"refs": [cid]}).get_json()["credentials"][0]
    assert got["version"] == 1 and got["type"] == type_name
    assert canary in json.dumps(got["values"]) or canary in base64.b64decode(
        got["values"].get("content", "")).decode()


def test_id_is_immutable_but_name_and_description_change(api_as):
    editor = api_as("editor")
    editor.post("/credentials", {"id": "dockerhub-id", "type": "secret_text",
                                 "values": {"secret": "abcdefgh"}})
    r = editor.patch("/credentials/dockerhub-id", {"id": "dockerhub-2"})
    assert r.status_code == 422
    assert r.get_json()["error"]["code"] == "immutable"
    assert "cannot be changed" in r.get_json()["error"]["message"]
    refused = api_as("admin").get("/audit?action=credential.update&outcome=denied").get_json()
    assert [e["details"] for e in refused["items"]] == [{"field": "id"}]
    r = editor.patch("/credentials/dockerhub-id", {"name": "Docker Hub", "description": "push"})
    assert r.status_code == 200 and r.get_json()["name"] == "Docker Hub"
    assert editor.get("/credentials/dockerhub-2").status_code == 404
    assert editor.get("/credentials/dockerhub-id").get_json()["version"] == 1  # rename ≠ version


def test_versions_and_pinned_resolve(api_as):
    editor, runner = api_as("editor"), api_as("runner")
    editor.post("/credentials", {"id": "api-token", "type": "secret_text",
                                 "values": {"secret": "version-one"}})
    r = editor.post("/credentials/api-token/versions", {"values": {"secret": "version-two"}})
    assert r.status_code == 201 and r.get_json()["version"] == 2
    hist = editor.get("/credentials/api-token/versions").get_json()["items"]
    assert [h["version"] for h in hist] == [2, 1] and "version-" not in json.dumps(hist)
    res = runner.post("/resolve", {"refs": ["api-token", "api-token@1"]}).get_json()
    assert [c["values"]["secret"] for c in res["credentials"]] == ["version-two", "version-one"]
    assert editor.post("/credentials/api-token/versions/prune", {"keep": 1}).get_json() == \
        {"pruned": [1]}
    r = runner.post("/resolve", {"refs": ["api-token@1"]})
    assert r.status_code == 404 and r.get_json()["error"]["details"]["missing"] == ["api-token@1"]


def test_partial_update_keeps_other_fields(api_as):
    editor, runner = api_as("editor"), api_as("runner")
    editor.post("/credentials", {"id": "git", "type": "username_password",
                                 "values": {"username": "alice", "password": "first-pass"}})
    editor.patch("/credentials/git", {"values": {"password": "second-pass"}})
    v = runner.post("/resolve", {"refs": ["git"]}).get_json()["credentials"][0]["values"]
    assert v["username"] == "alice" and v["password"] == "second-pass"


def test_changing_the_target_requires_the_secret_again(api_as):
    editor = api_as("editor")
    editor.post("/credentials", {"id": "git", "type": "username_password", "values": {
        "username": "a", "password": "pass-1234", "target": "https://git.example/x.git"}})
    r = editor.patch("/credentials/git", {"values": {"target": "https://evil.example/"}})
    assert r.status_code == 422 and r.get_json()["error"]["details"]["field"] == "password"
    r = editor.patch("/credentials/git", {"values": {"target": "https://evil.example/",
                                                     "password": "pass-1234"}})
    assert r.status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"id": "Bad_ID", "type": "secret_text", "values": {"secret": "xxxxxx"}}, "id"),
    ({"id": "-x", "type": "secret_text", "values": {"secret": "xxxxxx"}}, "id"),
    ({"id": "x" * 64, "type": "secret_text", "values": {"secret": "xxxxxx"}}, "id"),
    ({"id": "ok", "type": "nope", "values": {}}, "type"),
    ({"id": "ok", "type": "username_password", "values": {"username": "a"}}, "password"),
    ({"id": "ok", "type": "secret_text", "values": {"secret": "x", "extra": "y"}}, "extra"),
    ({"id": "ok", "type": "kubeconfig", "values": {"kubeconfig": "a: [1, secret-in-yaml"}},
     "kubeconfig"),
    ({"id": "ok", "type": "kubeconfig", "values": {"kubeconfig": "clusters: []"}}, "kubeconfig"),
    ({"id": "ok", "type": "secret_file", "values": {"filename": "../etc/passwd",
                                                      "content": "eA=="}}, "filename"),
    ({"id": "ok", "type": "generic", "values": {"values": {"1BAD": "v"}}}, "values"),
    ({"id": "ok", "type": "ssh_private_key", "values": {"username": "u",
                                                          "private_key": "not a key"}},
     "private_key"),
])
def test_bad_input_is_refused_clearly_and_nothing_is_stored(api_as, body, field):
    editor = api_as("editor")
    r = editor.post("/credentials", body)
    assert r.status_code == 422, r.get_json()
    err = r.get_json()["error"]
    assert err["details"]["field"] == field
    assert "secret-in-yaml" not in err["message"]
    assert editor.get("/credentials").get_json()["total"] == 0


def test_kubeconfig_with_exec_plugin_is_stored_but_flagged(api_as):
    kc = KUBECONFIG.replace("user: {token: kube-token-canary-7731}",
                            "user: {exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}}")
    r = api_as("editor").post("/credentials", {"id": "eks", "type": "kubeconfig",
                                               "values": {"kubeconfig": kc}})
    assert r.status_code == 201
    assert r.get_json()["status"] == "Warning"
    assert "exec plugin" in r.get_json()["status_message"]


def test_duplicate_id_conflicts(api_as):
    editor = api_as("editor")
    body = {"id": "dup", "type": "secret_text", "values": {"secret": "abcdef"}}
    assert editor.post("/credentials", body).status_code == 201
    assert editor.post("/credentials", body).status_code == 409


def test_oversized_body_is_413(api_as):
    r = api_as("editor").post("/credentials", {"id": "big", "type": "secret_text",
                                               "values": {"secret": "x" * 3_000_000}})
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_large"


def test_list_search_filter_sort_paginate(api_as):
    editor = api_as("editor")
    for i in range(12):
        editor.post("/credentials", {"id": f"cred-{i:02d}", "type": "secret_text" if i % 2
                                     else "access_key", "name": f"Name {i}",
                                     "values": {"secret": "secret-value"} if i % 2 else
                                     {"access_key_id": "AK", "secret_access_key": "sak-value"}})
    page = editor.get("/credentials?limit=5").get_json()
    assert page["total"] == 12 and [i["id"] for i in page["items"]][0] == "cred-11"
    assert len(page["items"]) == 5
    assert editor.get("/credentials?type=access_key").get_json()["total"] == 6
    assert [i["id"] for i in editor.get("/credentials?q=name 1").get_json()["items"]] == \
        ["cred-11", "cred-10", "cred-01"]
    asc = editor.get("/credentials?sort=id&limit=2").get_json()["items"]
    assert [i["id"] for i in asc] == ["cred-00", "cred-01"]
    assert editor.get("/credentials?sort=password").status_code == 422


def test_workspaces_are_separate(api_as, vault):
    add_scopes(vault, "team-a")
    editor = api_as("editor")
    editor.post("/credentials?workspace=team-a", {"id": "x", "type": "secret_text",
                                                  "values": {"secret": "aaaaaa"}})
    assert editor.get("/credentials?workspace=team-a").get_json()["total"] == 1
    assert editor.get("/credentials").get_json()["total"] == 0


def test_openapi_describes_every_route(client, app):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    rules = {r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1")}
    import re
    paths = {re.sub(r"\{([^}]+)\}", r"<\1>", p) for p in spec["paths"]}
    normalized = {re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"<\1>", r) for r in rules}
    assert normalized == paths
    types = {o["properties"]["type"]["const"]
             for o in spec["components"]["schemas"]["NewCredential"]["oneOf"]}
    assert len(types) == 8
    from workbench.api import openapi
    assert set(openapi.QUERY) <= set(app.view_functions)  # no entry for a renamed endpoint
    sync = spec["paths"]["/api/v1/pipeline-sources/{source_id}/sync"]["post"]
    assert "wait" in [p["name"] for p in sync["parameters"]] and "202" in sync["responses"]
    listing = spec["paths"]["/api/v1/credentials"]["get"]
    assert {"q", "sort", "limit", "offset"} <= {p["name"] for p in listing["parameters"]}


@pytest.mark.parametrize("ref", ["Bad_ID", "x@0", "x@", "@1", "x y"])
def test_malformed_references_are_refused_before_any_lookup(api_as, ref):
    r = api_as("runner").post("/resolve", {"refs": [ref]})
    assert r.status_code == 422 and r.get_json()["error"]["details"]["field"] == "refs"
