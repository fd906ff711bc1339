"""The API against its own OpenAPI document, fuzzed by schemathesis (issue 16, item 3).

Every operation gets a bounded number of generated requests, valid and invalid by the
document, with an admin's token and with a runner token, against the real app (through the
resolve hot path too).  No answer may be a 5xx, and every answer must match the document:
its status code, content type and (for errors) body schema."""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

# per operation, per mode and per token; WORKBENCH_FUZZ_EXAMPLES=100 for a deeper run
EXAMPLES = int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES") or 8)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# These reach out of the process (git fetch of a generated URL, a connectivity test of a
# generated target): they are fuzzed for their input only, by tests/test_bad_input.py and
# tests/test_sources.py; here they would wait on the network.
OUT_OF_PROCESS = {"sync_source_post", "verify_post"}


def fuzz(app, token: str) -> tuple[int, list[str]]:
    """(requests sent, failures) for every operation of the document."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    sent, failures = 0, []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.definition.raw.get("operationId") in OUT_OF_PROCESS:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            found: list[str] = []

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def call(case):
                nonlocal sent
                sent += 1
                try:
                    case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                           checks=CHECKS)
                except FailureGroup as e:
                    if len(found) < 1:  # one per operation and mode is enough to read
                        found.append(f"{op.label} [{mode.value}]: {str(e)[:1500]}")

            call()
            failures += found
    return sent, failures


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "runner"])
def test_api_answers_as_its_openapi_document_says(app, api_as, role, record_property):
    sent, failures = fuzz(app, api_as(role).token)
    record_property("schemathesis_requests", sent)
    print(f"schemathesis: {sent} requests as {role}")
    assert sent > 200
    assert not failures, "\n\n".join(failures)
