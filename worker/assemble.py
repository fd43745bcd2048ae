"""Assemble the Temporal worker: the payment, refund, dispute, delivery and receipt workflows and
every activity with its dependencies."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor

import httpx
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
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
from paytide.metrics import WorkerMetrics
from paytide.outbound import Resolver, system_resolver
from paytide.settings import Settings
from paytide.tracing import Tracing
from paytide.webhook_dispatch import delivery_settings
from workflows.contract import GatewayName
from workflows.delivery import DeliveryWorkflow, ReceiptWorkflow
from workflows.dispute import DisputeWorkflow
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow

WORKFLOWS = [PaymentWorkflow, RefundWorkflow, DisputeWorkflow, DeliveryWorkflow, ReceiptWorkflow]

# With the sandbox on, every module passes through it: imported once per worker, not once per
# workflow run. It still refuses non-deterministic calls (clocks, randomness, I/O) from workflow
# code; what is given up is isolation of module-level state between runs, which paytide's
# workflow modules keep none of. Off (the default), workflow code runs as is: the workflow and
# replay tests run it in the SDK's default sandbox, which is where a non-deterministic call is
# caught (docs/decisions.md 28).
SANDBOXED_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
)


# Replays (CI's recorded histories, `paytide replay`) use the SDK's full sandbox, which re-imports
# the workflow modules for each run: the strictest check of what production runs. structlog
# passes through because the SDK may log a failed activation through it from inside.
REPLAY_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("structlog")
)


def workflow_runner(settings: Settings) -> WorkflowRunner:
    return SANDBOXED_RUNNER if settings.workflow_sandbox else UnsandboxedWorkflowRunner()


def build_worker(
    client: Client,
    settings: Settings,
    *,
    sessions: SessionFactory,
    gateways: Mapping[GatewayName, Gateway],
    http: httpx.AsyncClient,
    executor: Executor,
    task_queue: str | None = None,
    metrics: WorkerMetrics | None = None,
    tracing: Tracing | None = None,
    resolver: Resolver = system_resolver,
) -> Worker:
    """``metrics`` and ``tracing``: this worker's own registry and tracer (fresh, and off, when
    not given). ``resolver``: how webhook endpoint hosts are resolved before each delivery."""
    metrics = metrics or WorkerMetrics()
    tracing = tracing or Tracing()
    ledger = LedgerActivities(sessions, metrics)
    refund_ledger = RefundLedgerActivities(sessions)
    dispute_ledger = DisputeLedgerActivities(sessions)
    risk = RiskActivities.from_settings(sessions, settings)
    admission = AdmissionActivities(sessions, risk)
    gateway = GatewayActivities(
        gateways, metrics=metrics, tracer=tracing.tracer, record=ledger.record_transition
    )
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
    deliveries = WebhookDeliveryActivities(
        http, sessions, ring, policy=settings.webhook_target_policy, resolver=resolver
    )
    receipts = ReceiptActivities(sessions, ring, smtp)
    notify = NotificationActivities(
        http,
        sessions,
        callback_url=settings.merchant_callback_url or None,
        signing_secret=secret.get_secret_value() if secret else None,
        ops_url=settings.ops_alert_url or None,
        ops_secret=ops_secret.get_secret_value() if ops_secret else None,
        metrics=metrics,
        fan_out=fan_out,
    )
    interceptor = tracing.interceptor()
    return Worker(
        client,
        task_queue=queue,
        workflows=WORKFLOWS,
        workflow_runner=workflow_runner(settings),
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
        # Spans for each workflow run and activity, continuing the trace the API started.
        interceptors=[interceptor] if interceptor else [],
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
