"""Connectivity tests through the API: the stored target, the recorded status, the audit."""
import uuid


def _status(api, cid):
    return api.get(f"/credentials/{cid}").get_json()


def test_git_credential_verified_against_its_stored_target(api_as, git_http_server):
    editor = api_as("editor")
    url = git_http_server.create_repo(f"verify-{uuid.uuid4().hex[:8]}", {"README": "hi"})
    editor.post("/credentials", {"id": "git-good", "type": "username_password", "values": {
        "username": git_http_server.username, "password": git_http_server.password,
        "target": url}})
    editor.post("/credentials", {"id": "git-bad", "type": "username_password", "values": {
        "username": git_http_server.username, "password": "wrong-password-123", "target": url}})
    assert _status(editor, "git-good")["status"] == "Not tested"
    good = editor.post("/credentials/git-good/verify").get_json()
    assert good["status"] == "No issues found", good
    reach = next(c for c in good["conditions"] if c["type"] == "Reachable")
    assert reach["status"] == "True" and reach["last_transition"]
    bad = editor.post("/credentials/git-bad/verify").get_json()
    assert bad["status"] == "Issues found"
    assert "wrong-password-123" not in str(bad)
    # a request cannot choose another target: unknown parameters are ignored, the stored one wins
    again = editor.post("/credentials/git-good/verify?target=http://127.0.0.1:9/x.git",
                        json={"target": "http://127.0.0.1:9/x.git"}).get_json()
    assert again["status"] == "No issues found", again
    events = api_as("admin").get("/audit?action=credential.verify").get_json()["items"]
    assert {e["target"] for e in events} == {"git-good", "git-bad"}


def test_kubeconfig_verified_and_unreachable_reported(api_as, kube_api):
    editor = api_as("editor")
    editor.post("/credentials", {"id": "kube", "type": "kubeconfig",
                                 "values": {"kubeconfig": kube_api.kubeconfig(auth="token")}})
    got = editor.post("/credentials/kube/verify").get_json()
    assert got["status"] == "No issues found", got  # the conditions say what was found
    dead = kube_api.kubeconfig(auth="token").replace(kube_api.server, "https://127.0.0.1:9")
    editor.post("/credentials", {"id": "kube-dead", "type": "kubeconfig",
                                 "values": {"kubeconfig": dead}})
    out = editor.post("/credentials/kube-dead/verify").get_json()
    reach = next(c for c in out["conditions"] if c["type"] == "Reachable")
    assert reach["status"] in ("False", "Unknown") and reach["reason"] == "Unreachable"


def test_new_version_makes_the_last_test_stale(api_as, git_http_server):
    editor = api_as("editor")
    url = git_http_server.create_repo(f"stale-{uuid.uuid4().hex[:8]}", {"README": "x"})
    editor.post("/credentials", {"id": "g", "type": "username_password", "values": {
        "username": git_http_server.username, "password": git_http_server.password,
        "target": url}})
    editor.post("/credentials/g/verify")
    out = editor.patch("/credentials/g", {"values": {"password": "changed-pass-1"}}).get_json()
    assert out["status"] == "Not tested"


def test_short_values_are_flagged_on_save(api_as):
    out = api_as("editor").post("/credentials", {"id": "pin", "type": "secret_text",
                                                 "values": {"secret": "123"}}).get_json()
    assert out["status"] == "Warning" and "too short to mask" in out["status_message"]
