"""Run PaymentWorkflow on the time-skipping server with the real ledger and risk activities,
a scripted gateway behind the real gateway activities, and a recording notifier."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from sqlmodel import Session
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.admission import AdmissionActivities
from activities.gateway import GatewayActivities
from activities.ledger import LedgerActivities
from activities.risk import RiskActivities
from ledger.engine import SessionFactory
from tests.support.scripted_gateway import ScriptedGateway
from workflows.contract import (
    ChargeState,
    GatewayEvent,
    GatewayName,
    NotificationInput,
    NotificationResult,
    OperatorAlert,
    PaymentInput,
    PaymentRequest,
    PaymentStatus,
    PaymentView,
    RiskAssessment,
    RiskFactor,
    RiskInput,
    Transition,
    WorkflowSettings,
)
from workflows.payment import PaymentWorkflow

SETTINGS = WorkflowSettings(
    webhook_timeout_seconds=60,
    max_webhook_wait_seconds=600,
    max_charge_attempts=3,
    charge_retry_backoff_seconds=2,
)


def fixed_risk(score: int) -> Callable[[RiskInput], Awaitable[RiskAssessment]]:
    @activity.defn(name="score_risk")
    async def score_risk(risk_input: RiskInput) -> RiskAssessment:
        return FixedScore(score).assessment()

    return score_risk


@dataclass(frozen=True)
class FixedScore:
    """Scores every payment the same, so review and block branches can be reached at will."""

    score: int

    def assessment(self) -> RiskAssessment:
        return RiskAssessment(
            score=self.score, factors=[RiskFactor(name="fixed", weight=self.score)]
        )

    def score_in(self, _session: Session, _request: PaymentRequest) -> RiskAssessment:
        return self.assessment()


@dataclass
class Notifier:
    sent: list[NotificationInput] = field(default_factory=list)
    # When set, notifications wait for it: keeps a finished payment's workflow open.
    hold: asyncio.Event | None = None
    alerts: list[OperatorAlert] = field(default_factory=list)
    # Events handed to the merchant's webhook endpoints only (emit_merchant_event).
    emitted: list[NotificationInput] = field(default_factory=list)

    @activity.defn(name="notify_merchant")
    async def notify(self, notification: NotificationInput) -> NotificationResult:
        self.sent.append(notification)
        if self.hold is not None:
            await self.hold.wait()
        return NotificationResult(delivered=True, status_code=200)

    @activity.defn(name="emit_merchant_event")
    async def emit(self, notification: NotificationInput) -> NotificationResult:
        self.emitted.append(notification)
        return NotificationResult(delivered=True)

    @activity.defn(name="alert_operators")
    async def alert(self, alert: OperatorAlert) -> NotificationResult:
        self.alerts.append(alert)
        return NotificationResult(delivered=True, status_code=200)


def payment_request(**overrides: object) -> PaymentRequest:
    key = uuid.uuid4().hex
    base = PaymentRequest(
        payment_id=f"pay_{key[:20]}",
        merchant_id="merchant_test",
        idempotency_key=key,
        fingerprint="fp-" + key,
        amount_minor=2500,
        currency="EUR",
        customer_id=f"cus_{key[:8]}",
        payment_method="pm_test",
        order_id=f"order_{key[:8]}",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def event(
    reference: str,
    state: ChargeState = ChargeState.SUCCEEDED,
    *,
    event_id: str | None = None,
    amount: int | None = 2500,
    currency: str | None = "EUR",
) -> GatewayEvent:
    return GatewayEvent(
        provider=GatewayName.SANDBOX,
        event_id=event_id or f"evt_{uuid.uuid4().hex[:12]}",
        event_type=f"charge.{state.value}",
        state=state,
        gateway_reference=reference,
        amount_minor=amount,
        currency=currency,
    )


@dataclass
class Harness:
    env: WorkflowEnvironment
    task_queue: str
    gateway: ScriptedGateway
    notifier: Notifier

    async def start(
        self, request: PaymentRequest | None = None, settings: WorkflowSettings = SETTINGS
    ) -> WorkflowHandle[PaymentWorkflow, PaymentView]:
        request = request or payment_request()
        return await self.env.client.start_workflow(
            PaymentWorkflow.run,
            PaymentInput(request=request, settings=settings),
            id=f"payment:{request.merchant_id}:{request.idempotency_key}",
            task_queue=self.task_queue,
        )

    async def wait_for_status(
        self, handle: WorkflowHandle[PaymentWorkflow, PaymentView], status: PaymentStatus
    ) -> PaymentView:
        async with asyncio.timeout(20):
            while True:
                view = await handle.query(PaymentWorkflow.status)
                if view.status is status:
                    return view
                await asyncio.sleep(0.05)


@asynccontextmanager
async def running_payments(
    env: WorkflowEnvironment,
    sessions: SessionFactory,
    gateway: ScriptedGateway,
    *others: ScriptedGateway,
    notifier: Notifier | None = None,
    risk_score: int | None = None,
    record: Callable[[Transition], None] | None = None,
) -> AsyncIterator[Harness]:
    """``risk_score``: replace the ledger-based scoring with a fixed score (review/block tests).
    ``record``: how the charge activity writes the waiting status (default: the ledger's own
    transition write)."""
    task_queue = f"payments-{uuid.uuid4().hex[:8]}"
    notifier = notifier or Notifier()
    ledger = LedgerActivities(sessions)
    risk = RiskActivities(sessions)
    admission = AdmissionActivities(
        sessions, FixedScore(risk_score) if risk_score is not None else risk
    )
    gateways = GatewayActivities(
        {g.name: g for g in (gateway, *others)}, record=record or ledger.record_transition
    )
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[PaymentWorkflow],
            activities=[
                ledger.record_transition,
                ledger.record_notification_failure,
                fixed_risk(risk_score) if risk_score is not None else risk.score_risk,
                admission.admit_payment,
                gateways.charge,
                gateways.reconcile,
                gateways.cancel,
                gateways.capture,
                notifier.notify,
                notifier.emit,
                notifier.alert,
            ],
            activity_executor=executor,
        ):
            yield Harness(env=env, task_queue=task_queue, gateway=gateway, notifier=notifier)
