"""The live API against its own OpenAPI document: schemathesis generates valid and invalid
requests for every operation and checks that none gets a 5xx and every answer fits the spec."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.integration.stack import Stack, running_stack

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)
# Enough to reach every branch of the validators in a few minutes on a 2-core machine; the seed
# makes a failure reproducible with the command the test prints.
MAX_EXAMPLES = 25
SEED = 20261129
RUN_TIMEOUT_SECONDS = 420


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(dev_env.client, database_url) as stack:
        yield stack


async def test_openapi_json_describes_the_live_api(stack: Stack) -> None:
    """GET /openapi.json answers an OpenAPI 3.1 document naming every payment operation."""
    response = await stack.api.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"] == "3.1.0"
    assert {"post", "get"} <= set(spec["paths"]["/payments"])
    create = spec["paths"]["/payments"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreatePayment"
    }
    assert spec["components"]["schemas"]["CreatePayment"]["additionalProperties"] is False
    assert create["security"] == [{"apiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


async def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_spec(
    stack: Stack, tmp_path: Path
) -> None:
    """Every operation, fuzzed with valid and invalid input: no 5xx, every answer in the spec."""
    api = stack.settings.effective_api_url
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{api}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: with two, both threads may parse hypothesis's lambda sources at once, and
        # CPython 3.11.7's ast keeps its recursion depth in global state (fixed in 3.11.8,
        # gh-106905), so schemathesis crashed with "AST constructor recursion depth mismatch".
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--report-dir",
        str(tmp_path),
        "--no-color",
        "--header",
        f"Authorization: {stack.auth_headers['Authorization']}",
        # /readyz rightly answers 503 whenever a check misses its 3 s bound, which a loaded CI
        # machine makes happen at random (seen once: `{"ready":false}` mid-run); "no 5xx" cannot
        # hold for it. Its answers are tested where they are deterministic
        # (tests/integration/test_auth_http.py::test_readyz_*).
        "--exclude-path",
        "/readyz",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=RUN_TIMEOUT_SECONDS)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    print(text)
    assert process.returncode == 0, f"schemathesis failed ({' '.join(command)}):\n{text[-6000:]}"
    assert "No issues found" in text or "passed" in text, text[-2000:]
