"""The public payment, refund and dispute objects: the JSON shapes the API answers with and
webhooks carry."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from workflows.contract import PaymentView
from workflows.dispute_contract import DisputeView
from workflows.refund_contract import RefundView


def public_payment(view: PaymentView) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": view.payment_id,
        "object": "payment",
        "status": view.status.value,
        "amount": view.amount_minor,
        "amount_captured": view.amount_captured,
        "currency": view.currency,
        "customer_id": view.customer_id,
        "order_id": view.order_id,
        "capture": view.capture.value,
        "gateway": view.gateway.value if view.gateway else None,
        "gateway_reference": view.gateway_reference,
        "risk_score": view.risk_score,
        "risk_factors": [asdict(factor) for factor in view.risk_factors],
        "failure": asdict(view.failure) if view.failure else None,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
    }
    if view.client_secret is not None:
        body["client_secret"] = view.client_secret
    if view.next_action is not None:
        body["next_action"] = asdict(view.next_action)
    return body


def public_refund(view: RefundView) -> dict[str, Any]:
    return {
        "id": view.refund_id,
        "object": "refund",
        "payment_id": view.payment_id,
        "status": view.status.value,
        "amount": view.amount_minor,
        "currency": view.currency,
        "reason": view.reason,
        "metadata": dict(view.metadata),
        "gateway": view.gateway.value if view.gateway else None,
        "gateway_reference": view.refund_reference,
        "failure": asdict(view.failure) if view.failure else None,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
    }


def public_dispute(view: DisputeView) -> dict[str, Any]:
    return {
        "id": view.dispute_id,
        "object": "dispute",
        "payment_id": view.payment_id,
        "status": view.status.value,
        "amount": view.amount_minor,
        "currency": view.currency,
        "reason": view.reason,
        "gateway": view.provider.value,
        "gateway_reference": view.dispute_reference,
        "evidence_due_by": view.evidence_due_by,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
    }
