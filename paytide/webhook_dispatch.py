"""Starting detached delivery workflows: from the fan-out activity, the API and the CLI.

The workflow id names the (event, endpoint) pair and the re-drive round, and a duplicate start is
rejected by Temporal, so an activity that fans out twice, or two re-drive requests for the same
dead letter, still make one delivery.
"""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from ledger import webhook_deliveries as deliveries
from ledger.engine import SessionFactory, transaction
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


class NotRedrivable(Exception):
    """The delivery is unknown to this merchant, or not a dead letter; ``status`` says which."""

    def __init__(self, delivery_id: str, status: str | None) -> None:
        super().__init__(delivery_id, status)
        self.delivery_id = delivery_id
        self.status = status


async def redrive(
    client: Client,
    settings: Settings,
    sessions: SessionFactory,
    delivery_id: str,
    *,
    merchant_id: str | None = None,
) -> deliveries.DeliveryView:
    """Put one dead letter back on the road: a new round with a fresh retry window. Raises
    NotRedrivable; a Temporal error leaves it a dead letter and propagates."""

    def claim() -> tuple[deliveries.DeliveryView, int]:
        with transaction(sessions) as session:
            row = deliveries.get(session, delivery_id)
            if row is None or (merchant_id is not None and row.merchant_id != merchant_id):
                raise NotRedrivable(delivery_id, None)
            round = deliveries.claim_redrive(session, delivery_id)
            if round is None:
                raise NotRedrivable(delivery_id, row.status)
            return deliveries.view_of(row), round

    view, round = await asyncio.to_thread(claim)
    delivery = DeliveryInput(
        delivery_id=view.id,
        event_id=view.event_id,
        event_type=view.event_type,
        endpoint_id=view.endpoint_id,
        merchant_id=view.merchant_id,
        round=round,
        settings=delivery_settings(settings),
    )
    try:
        await start_delivery(client, settings.temporal_task_queue, delivery)
    except BaseException:

        def release() -> None:
            with transaction(sessions) as session:
                deliveries.release_redrive(session, delivery_id, round)

        await asyncio.to_thread(release)
        raise
    return view
