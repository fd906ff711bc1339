"""A pipeline's ``masking:`` options and ``mask: false`` bindings: parsed with file and line,
short values refused at planning, detectors switched per pipeline."""
from __future__ import annotations

import textwrap

import pytest

from tests.fixtures.pipelines import DictResolver, canary
from workbench.errors import PipelineError
from workbench.pipeline.parse import parse_pipeline
from workbench.pipeline.plan import plan


def parsed(text: str):
    return parse_pipeline(textwrap.dedent(text), filename="ci/p.yaml")


@pytest.mark.parametrize("masking,problem", [
    ("{min_length: 3}", "min_length must be a whole number from 4 to 64"),
    ("{min_length: eight}", "min_length must be a whole number"),
    ("{detectors: {jwtt: false}}", "did you mean 'jwt'?"),
    ("{detectors: {jwt: 'off'}}", "switched with true or false"),
    ("{colour: red}", "unknown key 'colour'"),
])
def test_bad_masking_options_name_file_and_line(masking, problem):
    with pytest.raises(PipelineError) as err:
        parsed(f"""\
            steps:
              - {{name: a, run: "true"}}
            masking: {masking}
            """)
    assert problem in err.value.message and "ci/p.yaml:3" in err.value.message


def test_masking_defaults_and_switches():
    p = parsed("""\
        masking: {min_length: 12, detectors: {jwt: false, aws: true}}
        steps:
          - {name: a, run: "true", credentials: [{id: tok, env: T, mask: false}]}
        """)
    assert p.masking.min_length == 12 and p.steps[0].credentials[0].mask is False
    assert {d.name for d in p.masking.enabled_detectors()} >= {"aws", "github"}
    assert "jwt" not in {d.name for d in p.masking.enabled_detectors()}
    assert parsed("steps: [{name: a, run: x}]").masking.min_length == 8
    with pytest.raises(PipelineError, match="mask must be true or false"):
        parsed("steps: [{name: a, run: x, credentials: [{id: t, env: T, mask: 'no'}]}]")


def resolver() -> DictResolver:
    r = DictResolver()
    r.add("pin", "secret_text", {"secret": "4821"})
    r.add("mixed", "generic", {"values": {"PORT": "5432", "API_KEY": canary("key")}})
    return r


def test_a_short_value_is_refused_naming_the_variable_not_the_value():
    with pytest.raises(PipelineError) as err:
        plan(parsed("steps: [{name: s, run: x, credentials: [{id: pin, env: PIN}]}]"),
             resolver())
    msg = err.value.message
    assert "step s: credential pin binds a value shorter than 8 bytes to PIN" in msg
    assert "mask: false" in msg and "4821" not in msg and "ci/p.yaml:1" in msg
    with pytest.raises(PipelineError, match="to PIN_FILE"):
        plan(parsed("steps: [{name: s, run: x, credentials: [{id: pin, file: PIN_FILE}]}]"),
             resolver())


def test_mask_false_binds_the_short_value_and_leaves_it_unmasked():
    (step,) = plan(parsed(
        "steps: [{name: s, run: x, credentials: [{id: pin, env: PIN, mask: false}]}]"),
        resolver())
    assert step.env["PIN"] == "4821" and b"4821" not in step.secrets
    # a lower minimum binds it and masks it
    (step,) = plan(parsed("""\
        masking: {min_length: 4}
        steps: [{name: s, run: x, credentials: [{id: pin, env: PIN}]}]
        """), resolver())
    assert b"4821" in step.secrets


def test_only_the_values_a_binding_binds_are_checked():
    (step,) = plan(parsed(
        "steps: [{name: s, run: x, credentials: [{id: mixed, env: {API_KEY: K}}]}]"), resolver())
    assert step.env["K"].startswith("key-")
    with pytest.raises(PipelineError, match="to PORT"):
        plan(parsed("steps: [{name: s, run: x, credentials: [mixed]}]"), resolver())
