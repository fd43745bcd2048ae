"""Run RefundWorkflow and DisputeWorkflow on the time-skipping server with the real ledger
activities, a scripted gateway behind the real gateway activities, and a recording notifier."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.dispute_ledger import DisputeLedgerActivities
from activities.gateway import GatewayActivities
from activities.refund_ledger import RefundLedgerActivities
from ledger.engine import SessionFactory
from tests.support.scripted_gateway import ScriptedGateway
from workflows.contract import (
    ChargeState,
    Failure,
    GatewayEvent,
    GatewayName,
    NotificationResult,
    PaymentRequest,
    RefundNotice,
    RefundState,
)
from workflows.dispute import DisputeWorkflow
from workflows.dispute_contract import DisputeNotification
from workflows.refund import RefundWorkflow
from workflows.refund_contract import (
    RefundInput,
    RefundNotification,
    RefundRequestInput,
    RefundResult,
    RefundSettings,
)

REFUND_SETTINGS = RefundSettings(webhook_timeout_seconds=60, max_wait_seconds=600)


@dataclass
class RefundNotifier:
    refunds: list[tuple[str, str, RefundState]] = field(default_factory=list)
    disputes: list[DisputeNotification] = field(default_factory=list)
    alerts: list[DisputeNotification] = field(default_factory=list)

    @activity.defn(name="notify_merchant_refund")
    async def notify_refund(self, notification: RefundNotification) -> NotificationResult:
        refund = notification.refund
        self.refunds.append((notification.event_type, refund.refund_id, refund.status))
        return NotificationResult(delivered=True, status_code=200)

    @activity.defn(name="notify_merchant_dispute")
    async def notify_dispute(self, notification: DisputeNotification) -> NotificationResult:
        self.disputes.append(notification)
        return NotificationResult(delivered=True, status_code=200)

    @activity.defn(name="alert_operators_dispute")
    async def alert_dispute(self, alert: DisputeNotification) -> NotificationResult:
        self.alerts.append(alert)
        return NotificationResult(delivered=True, status_code=200)


def refund_input(
    payment: PaymentRequest,
    amount: int | None = None,
    *,
    key: str | None = None,
    fingerprint: str | None = None,
    reason: str | None = "requested_by_customer",
) -> RefundInput:
    key = key or uuid.uuid4().hex
    return RefundInput(
        request=RefundRequestInput(
            refund_id=f"ref_{uuid.uuid4().hex[:22]}",
            merchant_id=payment.merchant_id,
            payment_id=payment.payment_id,
            idempotency_key=key,
            fingerprint=fingerprint or f"fp-{key}-{amount}",
            amount_minor=amount,
            reason=reason,
            request_id=uuid.uuid4().hex,
        ),
        settings=REFUND_SETTINGS,
    )


def refund_event(
    reference: str | None,
    state: RefundState = RefundState.SUCCEEDED,
    *,
    refund_id: str | None = None,
    failure: Failure | None = None,
    event_id: str | None = None,
) -> GatewayEvent:
    return GatewayEvent(
        provider=GatewayName.SANDBOX,
        event_id=event_id or f"evt_{uuid.uuid4().hex[:12]}",
        event_type=f"refund.{state.value}",
        state=ChargeState.SUCCEEDED,
        refund=RefundNotice(
            state=state, refund_reference=reference, refund_id=refund_id, failure=failure
        ),
    )


@dataclass
class RefundHarness:
    env: WorkflowEnvironment
    task_queue: str
    gateway: ScriptedGateway
    notifier: RefundNotifier

    async def start(self, refund: RefundInput) -> WorkflowHandle[RefundWorkflow, RefundResult]:
        return await self.env.client.start_workflow(
            RefundWorkflow.run,
            refund,
            id=f"refund:{refund.request.merchant_id}:{refund.request.idempotency_key}",
            task_queue=self.task_queue,
        )

    async def wait_for_refund_call(self, count: int = 1) -> None:
        async with asyncio.timeout(20):
            while len(self.gateway.refund_calls) < count:
                await asyncio.sleep(0.02)


@asynccontextmanager
async def running_refunds(
    env: WorkflowEnvironment, sessions: SessionFactory, gateway: ScriptedGateway
) -> AsyncIterator[RefundHarness]:
    task_queue = f"refunds-{uuid.uuid4().hex[:8]}"
    notifier = RefundNotifier()
    ledger = RefundLedgerActivities(sessions)
    disputes = DisputeLedgerActivities(sessions)
    gateways = GatewayActivities({gateway.name: gateway})
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[RefundWorkflow, DisputeWorkflow],
            activities=[
                ledger.reserve,
                ledger.record_reference,
                ledger.settle,
                disputes.record_change,
                gateways.refund,
                gateways.retrieve_refund,
                notifier.notify_refund,
                notifier.notify_dispute,
                notifier.alert_dispute,
            ],
            activity_executor=executor,
        ):
            yield RefundHarness(env=env, task_queue=task_queue, gateway=gateway, notifier=notifier)
