"""The worker's optional sandbox (PAYTIDE_WORKFLOW_SANDBOX): a payment runs the same with it on.

Every other integration test runs the default worker (no sandbox); the workflow tests and the
replays run the SDK's own sandbox. This is the one real-stack payment through the sandboxed
worker configuration operators can switch on."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from paytide.settings import Settings
from tests.integration.stack import running_stack
from worker.assemble import SANDBOXED_RUNNER, workflow_runner

pytestmark = pytest.mark.integration


def test_the_setting_picks_the_runner() -> None:
    """Off by default: no sandbox; on: the sandbox with every module passed through."""
    assert isinstance(workflow_runner(Settings()), UnsandboxedWorkflowRunner)
    assert workflow_runner(Settings(workflow_sandbox=True)) is SANDBOXED_RUNNER


async def test_a_payment_succeeds_on_a_sandboxed_worker(
    dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    """With the sandbox on, a sandbox-gateway payment is charged once and succeeds."""
    async with running_stack(dev_env.client, sqlite_url, workflow_sandbox=True) as stack:
        created = await stack.pay()
        assert created.status_code == 201, created.text
        payment = await stack.wait_final(created.json()["id"])
        assert payment["status"] == "succeeded"
        assert await stack.charges_for(payment["id"]) == 1
        assert stack.ledger_statuses(payment["id"])[:3] == ["received", "risk_check", "charging"]
