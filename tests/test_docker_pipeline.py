"""A whole pipeline run whose step runs in a container: pull credential, env, file, masking."""
import os
import textwrap

import pytest

from tests.fixtures.pipelines import DictResolver, canary
from workbench.pipeline.parse import parse_pipeline
from workbench.pipeline.runner import run_pipeline
from workbench.pipeline.secretdir import LOCK

pytestmark = pytest.mark.docker


def test_pipeline_run_pulls_injects_masks_and_cleans_up(docker_client, private_registry,
                                                        secret_scratch, monkeypatch):
    reg = private_registry
    vault = DictResolver()
    token, ssh_like, filed = canary("apitoken"), canary("keyfile"), canary("filed")
    vault.add("team-registry", "docker_registry",
              {"registry": reg.host, "username": reg.username, "password": reg.password})
    vault.add("api-token", "secret_text", {"secret": token})
    vault.add("key", "secret_file", {"filename": "key.txt", "content": ssh_like})
    pipeline = parse_pipeline(textwrap.dedent(f"""\
        name: docker-e2e
        steps:
          - name: in-container
            image: {reg.image}
            image_pull_credential: team-registry
            credentials: [{{id: api-token, env: API_TOKEN}}, {{id: key, file: KEY_FILE}}]
            run: |
              echo "token=$API_TOKEN"
              echo "key=$(cat "$KEY_FILE")"
              echo "step=$WORKBENCH_STEP"
              test -z "$HOSTNAME_OF_RUNNER" && echo "no runner env"
              echo "{filed}" >> "$WORKBENCH_MASK"
              echo "filed={filed} at $WORKBENCH_MASK"
        """), filename="docker-e2e.yaml")
    out = bytearray()
    monkeypatch.setenv("HOSTNAME_OF_RUNNER", "leak")
    try:
        result = run_pipeline(pipeline, vault, scratch=secret_scratch, echo=out.extend)
    finally:
        docker_client.images.remove(reg.image, force=True)
    text = bytes(out).decode()
    assert result.status == "success", (result.steps, text)
    assert "token=" in text and "key=" in text
    assert token not in text and ssh_like not in text and reg.password not in text
    assert "step=in-container" in text and "no runner env" in text
    # a value the step registered through the mounted WORKBENCH_MASK file
    assert filed not in text and "filed=**** at /run/workbench-mask/mask" in text
    assert [n for n in os.listdir(secret_scratch) if n != LOCK] == []
    left = docker_client.containers.list(all=True, filters={"label": "workbench.step=in-container"})
    assert left == []
