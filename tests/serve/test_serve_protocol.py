"""The API's schema holds: schemathesis fuzzes every operation of the server's own
`/openapi.json` (valid and invalid bodies, bounded examples) against the real server and finds
no 5xx, no undocumented status and no response that breaks the documented schema."""

from __future__ import annotations

import pytest

from .conftest import NAME, auth

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

EXAMPLES = 40  # per operation and mode: bounded, so the run takes seconds


def served_model(case):
    """`case` naming the served model (a random `model` is a 404 before anything else is
    looked at, which would leave the rest of the body untested)."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = NAME
    return case


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schema_fuzz_finds_no_server_error_and_no_schema_violation(server, mode):
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize"} <= paths
    fuzzed = set()
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(case=operation.as_strategy(generation_mode=GenerationMode(mode)).map(served_model))
        def fuzz(case):
            case.call_and_validate(base_url=server.base, headers=auth(), checks=checks)

        try:
            fuzz()
        except Unsatisfiable:  # nothing invalid to send (an operation without inputs)
            assert mode == "negative" and operation.method.upper() == "GET", operation.path
            continue
        fuzzed.add(operation.path)
    posts = {"/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"}
    assert posts <= fuzzed
