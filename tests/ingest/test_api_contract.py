"""API contract test from the OpenAPI spec (schemathesis): for generated requests to
every operation — valid and invalid data — the live API never answers 5xx, and every
answer has a documented status code, content type and headers, and a body matching its
schema. Invalid data must be refused with a 4xx.

(The schema is loaded from the running server inside the test: schemathesis' pytest
fixture integration does not run on pytest 9.)
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


def test_api_conforms_to_its_openapi_spec(ingest):
    schema = schemathesis.openapi.from_url(ingest.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10
    for operation in operations:
        # /v1/health takes no input at all: no invalid request can be made of it
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.path != "/v1/health" else [])
        for mode in modes:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def run(case):
                case.call_and_validate(checks=CHECKS)

            run()
    assert httpx.get(ingest.url + "/v1/health").json()["status"] == "ok"


def test_spec_documents_every_route_and_error_body(ingest):
    spec = httpx.get(ingest.url + "/openapi.json").json()
    assert set(spec["paths"]) == {"/v1/health", "/v1/uploads", "/v1/objects/{key}", "/v1/uploads/{upload_id}/complete",
                                  "/v1/uploads/{upload_id}", "/v1/reports/{submission_id}", "/v1/miners/{miner_id}/ledger",
                                  "/v1/xgen/uploads", "/v1/xgen/uploads/{upload_id}/complete", "/v1/xgen/{request_id}"}
    upload = spec["paths"]["/v1/uploads"]["post"]["responses"]
    assert {"201", "401", "409", "413", "422", "429"} <= set(upload)
    assert upload["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
