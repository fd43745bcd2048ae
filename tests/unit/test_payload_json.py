"""Pydantic JSON payloads (paytide/payload_json.py): the same JSON as the SDK's default, both
ways, and one validator per type for the whole process."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.converter import DefaultPayloadConverter

from paytide.payload_json import PaytidePayloadConverter, _validator
from tests.workflow.harness import SETTINGS, payment_request
from workflows.contract import (
    Admission,
    ChargeOutcome,
    ChargeState,
    Failure,
    GatewayName,
    NextAction,
    PaymentInput,
    PaymentStatus,
    RiskAssessment,
    RiskFactor,
    Transition,
)


def values() -> list[tuple[Any, type]]:
    request = payment_request(metadata={"cart": "42"})
    received = Transition(
        payment_id=request.payment_id,
        workflow_id="payment:m:k",
        seq=1,
        status=PaymentStatus.RECEIVED,
        request=request,
        at="2026-11-29T17:00:00+00:00",
    )
    risk = RiskAssessment(
        score=40, factors=[RiskFactor(name="velocity", weight=40, evidence={"count": 7})]
    )
    return [
        (PaymentInput(request=request, settings=SETTINGS), PaymentInput),
        (
            Admission(
                received=received,
                risk_check=Transition(
                    payment_id=request.payment_id,
                    workflow_id="payment:m:k",
                    seq=2,
                    status=PaymentStatus.RISK_CHECK,
                    risk=risk,
                    gateway=GatewayName.STRIPE,
                ),
                charge_below=70,
            ),
            Admission,
        ),
        (
            ChargeOutcome(
                state=ChargeState.REQUIRES_ACTION,
                gateway_reference="pi_1",
                next_action=NextAction(type="redirect", redirect_url="https://x.test/3ds"),
                failure=Failure(code="authentication_required", message="3DS", retryable=True),
                recorded_at="2026-11-29T17:00:01+00:00",
            ),
            ChargeOutcome,
        ),
        ({"a": [1, 2.5, None, "x"]}, dict[str, Any]),
        ("plain", str),
        (None, type(None)),
    ]


@pytest.mark.parametrize("value,hint", values())
def test_payloads_cross_both_ways_with_the_sdk_default(value: Any, hint: type) -> None:
    """Histories written before the switch decode, and what we write decodes with the default
    (an operator's `temporal` CLI or an older worker)."""
    ours, default = PaytidePayloadConverter(), DefaultPayloadConverter()

    assert ours.from_payloads(default.to_payloads([value]), [hint]) == [value]
    assert default.from_payloads(ours.to_payloads([value]), [hint]) == [value]


def test_validators_outlive_the_converter_instances() -> None:
    """The SDK makes a converter per workflow run; the validator for a type is built once."""
    payload = PaytidePayloadConverter().to_payloads([values()[0][0]])
    PaytidePayloadConverter().from_payloads(payload, [PaymentInput])
    built = _validator.cache_info().misses

    for _ in range(3):
        PaytidePayloadConverter().from_payloads(payload, [PaymentInput])

    assert _validator.cache_info().misses == built
    assert _validator.cache_info().hits >= 3
