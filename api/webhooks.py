"""``POST /webhooks/{gateway}``: verify, record, find the workflow the event is about (payment,
refund or dispute), signal it.

A verified event is evidence about the charges of the gateway account whose secret verified it,
nothing more: it is signalled only to a payment (refund) charged through that gateway. An event
naming another gateway's payment is recorded as ``gateway_mismatch``, logged, counted and
acknowledged with 2xx, never signalled. 2xx, not 4xx: the signature proved the sender holds that
gateway's secret, so it is the gateway itself, which would re-send a refused event for days (and
may disable the endpoint), or someone with that secret, whom a 4xx would not stop either. The
request itself was well-formed; the event is kept for operators, it just moves nothing.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.auth import state_of
from api.body import read_bytes
from api.errors import ApiError
from api.state import ApiState
from gateways.base import WebhookRejected
from ledger import payments as ledger
from ledger import refunds as refund_ledger
from ledger.engine import transaction
from ledger.models import Payment, RefundRecord
from paytide.logging import get_logger
from workflows.contract import GatewayEvent, GatewayName
from workflows.dispute import DisputeWorkflow
from workflows.dispute_contract import DisputeInput, DisputeSettings
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow

log = get_logger("paytide.api.webhooks")
MAX_WEBHOOK_BYTES = 256 * 1024


async def receive_webhook(request: Request) -> Response:
    state = state_of(request)
    name = request.path_params["gateway"]
    verifier = next((v for g, v in state.verifiers.items() if g.value == name), None)
    if verifier is None:
        raise ApiError(404, "unknown_gateway", f"no webhook endpoint for gateway {name!r}")
    # Counted only for configured gateways: the path segment is the sender's to choose.
    state.metrics.webhooks_received.labels(gateway=name).inc()
    # Streamed with a cap: an unauthenticated sender must not make us buffer an unbounded body.
    body = await read_bytes(request, MAX_WEBHOOK_BYTES)
    try:
        # The signature is checked before the body is parsed or anything is stored.
        events = verifier.verify(request.headers, body)
    except WebhookRejected as rejected:
        log.warning("webhook_rejected", gateway=name, reason=rejected.reason)
        state.metrics.webhooks_rejected.labels(gateway=name, reason=rejected.reason).inc()
        raise ApiError(400, rejected.reason, str(rejected)) from None
    outcomes = [await _deliver(state, event) for event in events]
    for outcome in outcomes:
        state.metrics.webhook_events.labels(gateway=name, delivery=outcome).inc()
    if verifier.provider is GatewayName.ADYEN:
        # Adyen re-sends a batch until it reads exactly this body.
        return PlainTextResponse("[accepted]")
    return JSONResponse({"received": len(events), "deliveries": outcomes})


async def _deliver(state: ApiState, event: GatewayEvent) -> str:
    if event.refund is not None:
        return await _deliver_refund(state, event)
    if event.dispute is not None:
        return await _deliver_dispute(state, event)
    return await _deliver_charge(state, event)


async def _deliver_charge(state: ApiState, event: GatewayEvent) -> str:
    def record() -> tuple[Payment | None, bool]:
        with transaction(state.sessions) as session:
            payment = _named_payment(session, event)
            fresh = ledger.record_webhook(
                session,
                provider=event.provider.value,
                event_id=event.event_id,
                event_type=event.event_type,
                payment_id=payment.id if payment else None,
                gateway_reference=event.gateway_reference,
            )
            return payment, fresh

    payment, fresh = await run_in_threadpool(record)
    if not fresh:
        state.metrics.webhooks_deduplicated.labels(gateway=event.provider.value).inc()
    if payment is None:
        log.info("webhook_for_unknown_payment", event_id=event.event_id, provider=event.provider)
        await _mark(state, event, "unknown_payment")
        return "unknown_payment"
    if not ledger.charged_through(payment, event.provider.value):
        return await _refuse_foreign(state, event, payment.gateway, payment_id=payment.id)
    # A re-delivered event is signalled again: the first delivery may have been recorded and
    # then lost before the signal. The workflow drops duplicates by (provider, event id).
    return await _signal(
        state,
        event,
        payment.workflow_id,
        PaymentWorkflow.gateway_event,
        closed="payment_closed",
        payment_id=payment.id,
        duplicate=not fresh,
    )


async def _deliver_refund(state: ApiState, event: GatewayEvent) -> str:
    """A refund event goes to its RefundWorkflow, found through the refund's ledger row."""
    notice = event.refund
    assert notice is not None

    def record() -> tuple[RefundRecord | None, bool]:
        with transaction(state.sessions) as session:
            refund = refund_ledger.find_for_event(
                session, event.provider.value, notice.refund_id, notice.refund_reference
            )
            fresh = ledger.record_webhook(
                session,
                provider=event.provider.value,
                event_id=event.event_id,
                event_type=event.event_type,
                payment_id=refund.payment_id if refund else None,
                gateway_reference=notice.refund_reference or event.gateway_reference,
            )
            return refund, fresh

    refund, fresh = await run_in_threadpool(record)
    if not fresh:
        state.metrics.webhooks_deduplicated.labels(gateway=event.provider.value).inc()
    if refund is None:
        # Made outside paytide (the gateway's dashboard), or not ours: kept, never a 5xx.
        log.info("webhook_for_unknown_refund", event_id=event.event_id, provider=event.provider)
        await _mark(state, event, "unknown_refund")
        return "unknown_refund"
    if refund.gateway != event.provider.value:
        return await _refuse_foreign(state, event, refund.gateway, refund_id=refund.id)
    return await _signal(
        state,
        event,
        refund.workflow_id,
        RefundWorkflow.refund_event,
        closed="refund_closed",
        refund_id=refund.id,
    )


async def _signal(
    state: ApiState,
    event: GatewayEvent,
    workflow_id: str,
    signal: Any,
    *,
    closed: str,
    **context: object,
) -> str:
    """Signal the workflow that owns ``event`` and record the delivery's outcome; a workflow
    that has already closed is an outcome (``closed``), not an error."""
    try:
        await state.temporal.get_workflow_handle(workflow_id).signal(signal, event)
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
        log.info("webhook_for_closed_workflow", outcome=closed, event_id=event.event_id, **context)
        await _mark(state, event, closed)
        return closed
    log.info("webhook_signalled", event_id=event.event_id, **context)
    await _mark(state, event, "signalled")
    return "signalled"


async def _deliver_dispute(state: ApiState, event: GatewayEvent) -> str:
    """A dispute event starts or signals its DisputeWorkflow, keyed by the gateway's dispute id:
    signal-with-start, so a duplicate webhook never opens a second dispute."""
    notice = event.dispute
    assert notice is not None

    def record() -> tuple[Payment | None, bool]:
        with transaction(state.sessions) as session:
            payment = _named_payment(session, event)
            fresh = ledger.record_webhook(
                session,
                provider=event.provider.value,
                event_id=event.event_id,
                event_type=event.event_type,
                payment_id=payment.id if payment else None,
                gateway_reference=event.gateway_reference,
            )
            return payment, fresh

    payment, fresh = await run_in_threadpool(record)
    if not fresh:
        state.metrics.webhooks_deduplicated.labels(gateway=event.provider.value).inc()
    if payment is not None and not ledger.charged_through(payment, event.provider.value):
        # Another gateway's payment: no dispute opens against it (the dispute ledger refuses to
        # attach one too).
        return await _refuse_foreign(state, event, payment.gateway, payment_id=payment.id)
    workflow_id = idempotency.dispute_workflow_id(event.provider.value, notice.dispute_reference)
    await state.temporal.start_workflow(
        DisputeWorkflow.run,
        DisputeInput(
            dispute_id=idempotency.dispute_id(workflow_id),
            provider=event.provider,
            dispute_reference=notice.dispute_reference,
            settings=DisputeSettings(
                reminder_before_seconds=state.settings.dispute_reminder_before
            ),
        ),
        id=workflow_id,
        task_queue=state.settings.temporal_task_queue,
        start_signal="dispute_event",
        start_signal_args=[event],
        static_summary=f"dispute {notice.dispute_reference} via {event.provider.value}",
    )
    log.info("webhook_signalled", event_id=event.event_id, dispute=notice.dispute_reference)
    await _mark(state, event, "signalled")
    return "signalled"


def _named_payment(session: Session, event: GatewayEvent) -> Payment | None:
    return ledger.find_for_event(
        session, event.provider.value, event.payment_id, event.gateway_reference
    )


async def _refuse_foreign(
    state: ApiState, event: GatewayEvent, charged_by: str | None, **context: object
) -> str:
    """An event naming a payment (refund) that another gateway charges: recorded, never
    signalled; a warning, since either a gateway's secret is in the wrong hands or an event was
    routed to the wrong endpoint."""
    log.warning(
        "webhook_gateway_mismatch",
        event_id=event.event_id,
        event_type=event.event_type,
        provider=event.provider.value,
        charged_by=charged_by,
        **context,
    )
    await _mark(state, event, "gateway_mismatch")
    return "gateway_mismatch"


async def _mark(state: ApiState, event: GatewayEvent, delivery: str) -> None:
    def write() -> None:
        with transaction(state.sessions) as session:
            ledger.mark_webhook(
                session, provider=event.provider.value, event_id=event.event_id, delivery=delivery
            )

    await run_in_threadpool(write)
