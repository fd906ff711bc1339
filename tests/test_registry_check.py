"""The docker_registry connectivity check against Debian's docker-registry."""
from __future__ import annotations

import pytest

from tests.fixtures._net import free_port
from tests.fixtures.docker_peers import running_registry
from workbench.checks import CHECKS
from workbench.checks.registry import base_urls, check_registry, parse_challenge

pytestmark = pytest.mark.docker


def test_registered_for_docker_registry():
    assert CHECKS["docker_registry"] is check_registry


def test_good_credentials_authenticate(private_registry):
    reg = private_registry
    cond = check_registry({"registry": reg.host, "username": reg.username,
                           "password": reg.password}, 5)
    assert (cond.type, cond.status, cond.reason) == ("Reachable", "True", "Authenticated")
    assert reg.password not in cond.message


def test_wrong_password_is_authentication_failed(private_registry):
    reg = private_registry
    wrong = reg.password + "-wrong"
    cond = check_registry({"registry": f"http://{reg.host}", "username": reg.username,
                           "password": wrong}, 5)
    assert (cond.status, cond.reason) == ("False", "AuthenticationFailed")
    assert wrong not in cond.message and reg.username in cond.message


def test_nothing_listening_is_unreachable():
    cond = check_registry({"registry": f"127.0.0.1:{free_port()}", "username": "u",
                           "password": "pw-never-shown"}, 2)
    assert (cond.status, cond.reason) == ("False", "Unreachable")
    assert "pw-never-shown" not in cond.message


def test_scheme_choice_and_challenge_parsing():
    assert base_urls("registry.example:5000") == ["https://registry.example:5000"]
    assert base_urls("127.0.0.1:5000") == ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
    assert base_urls("localhost:5000/ns") == ["https://localhost:5000", "http://localhost:5000"]
    assert base_urls("http://reg.internal:80/") == ["http://reg.internal:80"]
    assert base_urls("docker.io") == base_urls("https://index.docker.io/v1/") \
        == ["https://registry-1.docker.io"]
    assert parse_challenge('Bearer realm="https://auth.example/token",service="reg.example"') \
        == ("bearer", {"realm": "https://auth.example/token", "service": "reg.example"})


def test_bearer_token_flow(token_registry):
    reg = token_registry
    good = check_registry({"registry": reg.host, "username": reg.username,
                           "password": reg.password}, 5)
    assert (good.status, good.reason) == ("True", "Authenticated")
    bad = check_registry({"registry": reg.host, "username": reg.username,
                          "password": "nope-" + reg.password}, 5)
    assert (bad.status, bad.reason) == ("False", "AuthenticationFailed")
    assert "token service" in bad.message and reg.password not in bad.message


def test_registry_without_auth_cannot_test_the_credential(docker_client, busybox_image):
    with running_registry(docker_client, busybox_image, lambda *_: "  {}\n",
                          expect=200) as reg:
        cond = check_registry({"registry": reg.host, "username": "u", "password": "p-secret"}, 5)
    assert (cond.status, cond.reason) == ("Unknown", "NotTestable")
