"""Assemble the Temporal worker: the payment, refund, dispute, delivery and receipt workflows and
every activity with its dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor

import httpx
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.admission import AdmissionActivities
from activities.dispute_ledger import DisputeLedgerActivities
from activities.fan_out import EventFanOut
from activities.gateway import GatewayActivities
from activities.ledger import LedgerActivities
from activities.notify import NotificationActivities
from activities.receipts import ReceiptActivities, SmtpConfig
from activities.refund_ledger import RefundLedgerActivities
from activities.risk import RiskActivities
from activities.webhook_delivery import WebhookDeliveryActivities
from gateways.base import Gateway
from ledger.engine import SessionFactory
from paytide.settings import Settings
from paytide.webhook_dispatch import delivery_settings
from workflows.contract import GatewayName
from workflows.delivery import DeliveryWorkflow, ReceiptWorkflow
from workflows.dispute import DisputeWorkflow
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow

WORKFLOWS = [PaymentWorkflow, RefundWorkflow, DisputeWorkflow, DeliveryWorkflow, ReceiptWorkflow]

# Every module passes through the sandbox: imported once per worker, not once per workflow run.
# Re-importing the workflow's modules for each run cost more than the rest of a payment's first
# workflow task (docs/performance.md). The sandbox still refuses non-deterministic calls
# (clocks, randomness, I/O) from workflow code; what is given up is isolation of module-level
# state between runs, and paytide's workflow modules keep none.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
)


def build_worker(
    client: Client,
    settings: Settings,
    *,
    sessions: SessionFactory,
    gateways: Mapping[GatewayName, Gateway],
    http: httpx.AsyncClient,
    executor: Executor,
    task_queue: str | None = None,
) -> Worker:
    ledger = LedgerActivities(sessions)
    refund_ledger = RefundLedgerActivities(sessions)
    dispute_ledger = DisputeLedgerActivities(sessions)
    risk = RiskActivities.from_settings(sessions, settings)
    admission = AdmissionActivities(sessions, risk)
    gateway = GatewayActivities(gateways)
    secret = settings.merchant_callback_secret
    ops_secret = settings.ops_alert_secret
    queue = task_queue or settings.temporal_task_queue
    ring = settings.payload_key_ring
    smtp = smtp_config(settings)
    fan_out = EventFanOut(
        client,
        sessions,
        ring,
        task_queue=queue,
        settings=delivery_settings(settings),
        receipts=smtp is not None,
    )
    deliveries = WebhookDeliveryActivities(http, sessions, ring)
    receipts = ReceiptActivities(sessions, ring, smtp)
    notify = NotificationActivities(
        http,
        sessions,
        callback_url=settings.merchant_callback_url or None,
        signing_secret=secret.get_secret_value() if secret else None,
        ops_url=settings.ops_alert_url or None,
        ops_secret=ops_secret.get_secret_value() if ops_secret else None,
        fan_out=fan_out,
    )
    return Worker(
        client,
        task_queue=queue,
        workflows=WORKFLOWS,
        workflow_runner=WORKFLOW_RUNNER,
        activities=[
            ledger.record_transition,
            ledger.record_notification_failure,
            risk.score_risk,
            admission.admit_payment,
            gateway.charge,
            gateway.reconcile,
            gateway.cancel,
            gateway.capture,
            notify.notify_merchant,
            notify.emit_merchant_event,
            notify.alert_operators,
            # Refunds (workflows/refund.py).
            refund_ledger.reserve,
            refund_ledger.record_reference,
            refund_ledger.settle,
            gateway.refund,
            gateway.retrieve_refund,
            notify.notify_merchant_refund,
            # Disputes (workflows/dispute.py).
            dispute_ledger.record_change,
            notify.notify_merchant_dispute,
            notify.alert_operators_dispute,
            # Merchants' webhook endpoints and customers' receipts (workflows/delivery.py).
            deliveries.deliver_webhook,
            deliveries.dead_letter,
            notify.alert_operators_dead_letter,
            receipts.send_receipt,
        ],
        # Ledger and risk activities are synchronous database code; they run on these threads.
        activity_executor=executor,
    )


def smtp_config(settings: Settings) -> SmtpConfig | None:
    if not settings.smtp_host:
        return None
    password = settings.smtp_password
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        tls=settings.smtp_tls,
        username=settings.smtp_username,
        password=password.get_secret_value() if password else None,
        timeout=settings.smtp_timeout,
        sender=settings.receipt_from,
    )
