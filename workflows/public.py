"""The public payment object: the one JSON shape the API answers with and webhooks carry."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from workflows.contract import PaymentView


def public_payment(view: PaymentView) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": view.payment_id,
        "object": "payment",
        "status": view.status.value,
        "amount": view.amount_minor,
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
