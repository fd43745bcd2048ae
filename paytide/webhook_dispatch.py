"""Starting detached delivery workflows: from the fan-out activity, the API and the CLI.

The workflow id names the (event, endpoint) pair and the re-drive round, and a duplicate start is
rejected by Temporal, so an activity that fans out twice, or two re-drive requests for the same
dead letter, still make one delivery.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from paytide.settings import Settings
from workflows.delivery_contract import DeliveryInput, DeliverySettings, ReceiptInput


def delivery_settings(settings: Settings) -> DeliverySettings:
    return DeliverySettings(
        window_seconds=settings.webhook_delivery_window,
        initial_interval_seconds=settings.webhook_retry_initial,
        max_interval_seconds=settings.webhook_retry_max_interval,
        attempt_timeout_seconds=settings.webhook_attempt_timeout,
    )


def delivery_workflow_id(event_id: str, endpoint_id: str, round: int) -> str:
    base = f"delivery-{event_id}-{endpoint_id}"
    return base if round == 0 else f"{base}-redrive-{round}"


async def start_delivery(client: Client, task_queue: str, input: DeliveryInput) -> bool:
    """Start the delivery's workflow; False when that workflow exists already."""
    try:
        await client.start_workflow(
            # By name: the workflow module imports the activities that import this one.
            "DeliveryWorkflow",
            input,
            id=delivery_workflow_id(input.event_id, input.endpoint_id, input.round),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"{input.event_type} to {input.endpoint_id}",
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


async def start_receipt(client: Client, task_queue: str, input: ReceiptInput) -> bool:
    try:
        await client.start_workflow(
            "ReceiptWorkflow",
            input,
            id=f"receipt-{input.event_id}",
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"receipt for {input.event_type}",
        )
    except WorkflowAlreadyStartedError:
        return False
    return True
