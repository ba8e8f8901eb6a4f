"""schemathesis against ``ailedger serve``'s own OpenAPI document (issue 10, "Load and faults").

The service runs as a separate process over a fresh workspace; schemathesis 4 loads its
``/openapi.json`` and, for every operation, sends requests generated from the schema, valid
ones (positive mode) and invalid ones the service must refuse (negative mode), with a bearer
token holding every scope (made with ``ailedger keys api create --json``). Each response must
not be a 5xx and must conform to the schema: a documented status code, the documented content
type and headers, a body matching the response schema (schemathesis' ``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``
and ``response_schema_conformance`` checks).

schemathesis' own pytest integration (``schema.parametrize()``) does not run under pytest 9
(it sets ``Function._nodeid``, which pytest 9 no longer has), so each operation is driven
here with a plain Hypothesis ``@given`` over ``operation.as_strategy(mode)``; every failing
operation is collected and reported together. Examples per operation are bounded so the module
runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_service_faults import (
    api_key,
    cli_env,
    new_workspace,
    start_service,
)

#: examples per operation and mode: enough to reach the documented answers, quick enough
EXAMPLES = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Target:
    url: str
    token: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A running service over a fresh workspace with a few entries, and a token of every scope."""
    tmp: Path = tmp_path_factory.mktemp("schema")
    env = cli_env()
    workspace = new_workspace(tmp / "ws")
    _, token = api_key(workspace, env, "admin", "append", "read")
    service = start_service(workspace, env, tmp / "serve.log")
    try:
        for n in range(5):  # entries 0-4, so reads by a small index find one
            reply = httpx.post(
                service.url + "/v1/entries",
                json={"decision": n, "secret": "s"},
                params={"sensitive": "secret"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert reply.status_code == 201, reply.text
        yield Target(service.url, token)
    finally:
        service.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_every_response_matches_the_schema(target: Target, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(target.url + "/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {target.token}"}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):  # an operation the schema describes badly
            failures.append(f"invalid operation in the schema: {result.err()}")
            continue
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        try:
            check()
        except Unsatisfiable:  # negative mode: the operation has nothing that can be invalid
            continue
        # schemathesis raises its FailureGroup, a BaseExceptionGroup; collect it, go on
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
        tested += 1
    assert tested >= (5 if mode == GenerationMode.POSITIVE else 1), tested
    assert not failures, "\n\n".join(failures)
