"""`paytide temporal setup` against a real dev server that knows none of paytide's attributes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.testing import WorkflowEnvironment

from paytide.binaries import temporal_cli
from paytide.search_attributes import SEARCH_ATTRIBUTE_NAMES


@pytest.fixture
async def bare_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_cli()), dev_server_log_level="error"
    )
    try:
        yield env
    finally:
        await env.shutdown()


def setup_command(env: WorkflowEnvironment) -> subprocess.CompletedProcess[str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    variables["PAYTIDE_TEMPORAL_ADDRESS"] = env.client.service_client.config.target_host
    return subprocess.run(
        [sys.executable, "-m", "paytide", "temporal", "setup"],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_setup_registers_every_attribute_once(bare_server: WorkflowEnvironment) -> None:
    """The first run adds all seven attributes; the second finds them and adds nothing."""
    first = setup_command(bare_server)
    assert first.returncode == 0, first.stderr
    assert "done: 7 added" in first.stdout
    listed = await bare_server.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=bare_server.client.namespace)
    )
    assert set(SEARCH_ATTRIBUTE_NAMES) <= set(listed.custom_attributes)

    second = setup_command(bare_server)
    assert second.returncode == 0, second.stderr
    assert "done: nothing to add" in second.stdout


async def test_setup_refuses_an_attribute_of_another_type(bare_server: WorkflowEnvironment) -> None:
    """PaymentStatus registered as Int: setup stops with an explanation, not a traceback."""
    await bare_server.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=bare_server.client.namespace,
            search_attributes={"PaymentStatus": IndexedValueType.INDEXED_VALUE_TYPE_INT},
        )
    )
    result = setup_command(bare_server)
    assert result.returncode == 2
    assert "PaymentStatus exists as INDEXED_VALUE_TYPE_INT" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
