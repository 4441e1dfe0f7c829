"""schemathesis over the bridge server's OpenAPI: a real server on loopback, with and without the bearer token.

Every operation the schema describes gets generated requests (schemathesis' positive mode; its negative
mode has nothing to generate here, as every parameter is an unconstrained string; the example count is
bounded for CI; random paths, methods and headers are fuzzed in test_server.py). The server must never
answer 5xx. With the token, the documented responses must also conform to the schema (status codes and
bodies).
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from edgekit.cloud_bridge.server import ServerConfig
from edgekit.cloud_bridge.serving import BackgroundServer

TOKEN = "schemathesis-token-0123456789"
EXAMPLES = 40


@pytest.fixture(scope="module")
def live_server(bridge_model):
    with BackgroundServer(bridge_model, ServerConfig(token=TOKEN)) as running:
        yield running


def _operations(server):
    schema = schemathesis.openapi.from_url(server.http_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/health", "/v1/sessions", "/v1/sessions/{session_id}", "/metrics"}
    return operations


def _fuzz(operation, headers: dict, checks) -> int:
    """Run EXAMPLES generated requests against one operation (schemathesis' strategies driven by hypothesis,
    without its pytest plugin, which does not load on pytest 9); returns the number of calls made."""
    calls = []

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def probe(case):
        response = case.call(headers=headers, timeout=10)
        calls.append(response.status_code)
        case.validate_response(response, checks=checks)
        if not headers and case.path != "/v1/health":
            assert response.status_code in (401, 404, 405, 422), (case.method, case.formatted_path,
                                                                  response.status_code)

    probe()
    return len(calls)


def test_no_server_errors_without_a_token(live_server):
    for operation in _operations(live_server):
        assert _fuzz(operation, {}, [not_a_server_error]) > 0


def test_no_server_errors_with_the_token(live_server):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for operation in _operations(live_server):
        assert _fuzz(operation, auth, [not_a_server_error, status_code_conformance, response_schema_conformance]) > 0
