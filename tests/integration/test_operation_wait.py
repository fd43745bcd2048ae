"""Cancel, capture and review answer within the API's wait: a workflow that needs longer (it is
still waiting for the gateway) gets the request and finishes it; the client gets 202."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.integration.stack import Stack, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    # The sandbox holds pm_sandbox_slow charges for 2 s; the API waits 0.5 s for any answer.
    async with running_stack(dev_env.client, database_url, initiate_wait=0.5) as stack:
        yield stack


async def test_cancel_during_a_slow_charge_is_202_and_then_canceled(stack: Stack) -> None:
    """A cancel that must wait for the gateway answers 202 + Location; the payment then cancels."""
    created = await stack.pay(payment_method="pm_sandbox_slow")
    assert created.status_code == 202, created.text
    payment_id = created.json()["id"]

    canceled = await stack.api.post(f"/payments/{payment_id}/cancel", json={"reason": "test"})

    assert canceled.status_code == 202, canceled.text
    assert canceled.headers["Location"] == f"/payments/{payment_id}"
    assert canceled.json()["id"] == payment_id
    final = await stack.wait_final(payment_id)
    assert final["status"] == "canceled"
    assert "canceled" in stack.ledger_statuses(payment_id)
