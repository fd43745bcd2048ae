"""A succeeded payment written straight to the ledger through the payment workflow's own write
(`apply_transition`), for refund and dispute tests that start after the charge."""

from __future__ import annotations

import uuid

from ledger import payments
from ledger.engine import SessionFactory, transaction
from workflows.contract import GatewayName, PaymentRequest, PaymentStatus, Transition


def seed_succeeded_payment(
    sessions: SessionFactory,
    *,
    amount_minor: int = 2500,
    currency: str = "EUR",
    gateway: GatewayName = GatewayName.SANDBOX,
    gateway_reference: str | None = None,
    merchant_id: str = "merchant_test",
    amount_captured: int | None = None,
) -> PaymentRequest:
    """``amount_captured`` None: all of it, as the payment workflow records an automatic capture."""
    key = uuid.uuid4().hex
    request = PaymentRequest(
        payment_id=f"pay_{key[:22]}",
        merchant_id=merchant_id,
        idempotency_key=key,
        fingerprint=f"fp-{key}",
        amount_minor=amount_minor,
        currency=currency,
        customer_id=f"cus_{key[:8]}",
        payment_method="pm_test",
        order_id=f"order_{key[:8]}",
    )
    workflow_id = f"payment:{merchant_id}:{key}"
    with transaction(sessions) as session:
        payments.apply_transition(
            session,
            Transition(
                payment_id=request.payment_id,
                workflow_id=workflow_id,
                seq=1,
                status=PaymentStatus.RECEIVED,
                request=request,
            ),
        )
        payments.apply_transition(
            session,
            Transition(
                payment_id=request.payment_id,
                workflow_id=workflow_id,
                seq=2,
                status=PaymentStatus.SUCCEEDED,
                gateway=gateway,
                gateway_reference=gateway_reference or f"ch_{key[:12]}",
                amount_captured=amount_minor if amount_captured is None else amount_captured,
            ),
        )
    return request
