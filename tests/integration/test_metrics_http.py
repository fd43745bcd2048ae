"""Prometheus metrics after real payments: the API's /metrics and the worker's, scraped over
HTTP from the in-process stack (real Temporal dev server, sandbox, ledger on both databases)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from activities.ledger import LedgerActivities
from gateways.signing import sign
from ledger.engine import session_factory
from paytide.metrics import WorkerMetrics, exposition
from tests.integration.stack import Stack, running_stack
from tests.support.ledger_seed import seed_succeeded_payment
from workflows.contract import Failure, NotificationFailure, PaymentStatus, Transition

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels, 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_api(stack: Stack) -> Samples:
    answer = await stack.operator.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


async def scrape_worker(stack: Stack) -> Samples:
    assert stack.worker_metrics_url is not None
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(stack.worker_metrics_url)
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Stack]:
    # A large amount (>= 10,000 major units) alone scores 75: in review, below the block.
    async with running_stack(
        dev_env.client, database_url, sdk_metrics=True, risk_large_amount_weight=75
    ) as running:
        yield running


async def _signed_unknown_event(stack: Stack) -> tuple[bytes, dict[str, str]]:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:20]}",
        "type": "charge.succeeded",
        "created": int(time.time()),
        "data": {
            "id": f"ch_{uuid.uuid4().hex[:20]}",
            "status": "succeeded",
            "amount": 100,
            "currency": "USD",
            "reference": "pay_not_ours",
            "metadata": {},
        },
    }
    body = json.dumps(event).encode()
    secret = stack.settings.sandbox_webhook_secret.get_secret_value()
    return body, {"Sandbox-Signature": sign(secret, body, int(time.time()))}


async def test_api_and_worker_metrics_count_real_payments(stack: Stack) -> None:
    """After two successes, a decline and a rejected review, both /metrics endpoints show the
    counts by status, gateway, currency and failure code, the latency histograms, gateway
    calls, fraud decisions, notifications and the Temporal SDK's own worker series."""
    ok = [await stack.pay(), await stack.pay(currency="EUR")]
    declined = await stack.pay(payment_method="pm_sandbox_decline")
    review = await stack.pay(amount=2_000_000)
    assert [r.status_code for r in [*ok, declined, review]] == [201] * 4, review.text
    assert review.json()["status"] == "in_review"
    rejected = await stack.operator.post(
        f"/payments/{review.json()['id']}/review",
        json={"decision": "reject", "reviewer": "ana", "reason": "not this customer"},
    )
    assert rejected.status_code == 200, rejected.text
    finals = [await stack.wait_final(r.json()["id"]) for r in [*ok, declined, review]]
    assert [f["status"] for f in finals] == ["succeeded", "succeeded", "failed", "blocked"]

    # Gateway webhooks: one forged (rejected), one verified event delivered twice (deduplicated).
    forged = await stack.api.post(
        "/webhooks/sandbox", content=b"{}", headers={"Sandbox-Signature": "t=1,v1=00"}
    )
    assert forged.status_code == 400
    body, headers = await _signed_unknown_event(stack)
    for _ in range(2):  # the gateway redelivers: recorded once, counted as deduplicated
        answer = await stack.api.post("/webhooks/sandbox", content=body, headers=headers)
        assert answer.status_code == 200, answer.text

    # Final notifications are sent after the final transition; wait until both successes and
    # the decline and the block have been told to the merchant.
    async with asyncio.timeout(20):
        while len(stack.merchant.delivered) < 4:
            await asyncio.sleep(0.1)

    api = await scrape_api(stack)
    assert value(api, "paytide_payment_initiation_seconds_count", status="201") == 4
    assert value(api, "paytide_payment_initiation_seconds_bucket", status="201", le="+Inf") == 4
    assert (
        value(
            api,
            "paytide_webhooks_rejected_total",
            gateway="sandbox",
            reason=forged.json()["error"]["code"],
        )
        == 1
    )
    # Sandbox webhooks for the two successes, plus our three posts (forged one included).
    assert value(api, "paytide_webhooks_received_total", gateway="sandbox") >= 5
    assert value(api, "paytide_webhooks_deduplicated_total", gateway="sandbox") >= 1
    assert value(api, "paytide_webhook_events_total", gateway="sandbox", delivery="signalled") >= 2
    assert (
        value(api, "paytide_webhook_events_total", gateway="sandbox", delivery="unknown_payment")
        >= 1
    )
    # Route templates, never raw paths: no payment id anywhere in a label.
    assert (
        value(
            api,
            "paytide_http_requests_total",
            route="/payments/{payment_id}",
            method="GET",
            status="200",
        )
        >= 4
    )
    ids = {r.json()["id"] for r in [*ok, declined, review]}
    labels = {v for (_, pairs) in api for _, v in pairs}
    assert not labels & ids

    worker = await scrape_worker(stack)
    final = "paytide_payments_final_total"
    assert (
        value(
            worker,
            final,
            status="succeeded",
            gateway="sandbox",
            currency="USD",
            failure_code="none",
        )
        == 1
    )
    assert (
        value(
            worker,
            final,
            status="succeeded",
            gateway="sandbox",
            currency="EUR",
            failure_code="none",
        )
        == 1
    )
    assert (
        value(
            worker,
            final,
            status="failed",
            gateway="sandbox",
            currency="USD",
            failure_code="card_declined",
        )
        == 1
    )
    assert (
        value(
            worker,
            final,
            status="blocked",
            gateway="none",
            currency="USD",
            failure_code="rejected_in_review",
        )
        == 1
    )
    assert value(worker, "paytide_payment_time_to_final_seconds_count", status="succeeded") == 2
    assert value(worker, "paytide_fraud_reviews_total") == 1
    assert value(worker, "paytide_fraud_blocks_total", reason="rejected_in_review") == 1
    # Three charges reached the sandbox (the blocked payment never did).
    assert (
        value(
            worker,
            "paytide_gateway_call_seconds_count",
            gateway="sandbox",
            operation="charge",
            outcome="ok",
        )
        == 3
    )
    assert (
        value(
            worker,
            "paytide_notification_deliveries_total",
            event_type="payment.succeeded",
            outcome="delivered",
        )
        == 2
    )
    assert (
        value(
            worker,
            "paytide_notification_deliveries_total",
            event_type="payment.blocked",
            outcome="delivered",
        )
        == 1
    )
    # The Temporal SDK's worker series, relayed from its runtime's Prometheus endpoint.
    sdk = {name for name, _ in worker if name.startswith("temporal_")}
    assert any(name.startswith("temporal_activity_execution") for name in sdk), sorted(sdk)[:20]
    assert any(name.startswith("temporal_workflow_task") for name in sdk), sorted(sdk)[:20]


async def test_api_metrics_need_an_operator_key(stack: Stack) -> None:
    """GET /metrics: 401 without a key, 403 with a merchant's key, 200 with an operator's."""
    async with httpx.AsyncClient(base_url=stack.settings.effective_api_url) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    refused = await stack.api.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "operator_role_required"
    assert (await stack.operator.get("/metrics")).status_code == 200


def test_a_retried_final_transition_is_counted_once(ledger_engine: Engine) -> None:
    """record_transition counts a final payment only when its write moved the ledger row, so a
    retried (or late) local activity never counts the payment twice; a notification given up
    counts as a dead letter."""
    sessions = session_factory(ledger_engine)
    metrics = WorkerMetrics()
    ledger = LedgerActivities(sessions, metrics)
    request = seed_succeeded_payment(sessions, currency="JPY")
    workflow_id = f"payment:merchant_test:{request.idempotency_key}"
    started = datetime.now(UTC) - timedelta(seconds=3)
    blocked = Transition(
        payment_id=request.payment_id,
        workflow_id=workflow_id,
        seq=3,
        status=PaymentStatus.BLOCKED,
        failure=Failure(code="review_timeout", message="no decision"),
        at=started.isoformat(),
    )
    for _ in range(3):
        ledger.record_transition(blocked)
    # An older transition arriving late moves nothing and counts nothing either.
    ledger.record_transition(dataclasses.replace(blocked, seq=2, status=PaymentStatus.CANCELED))

    ledger.record_notification_failure(
        NotificationFailure(
            payment_id=request.payment_id,
            event_type="payment.blocked",
            error="merchant endpoint answered 500",
            attempts=5,
        )
    )

    samples = parse(exposition(metrics.registry)[0].decode())
    assert (
        value(samples, "paytide_notification_dead_letters_total", event_type="payment.blocked") == 1
    )
    labels = {"status": "blocked", "gateway": "sandbox", "currency": "JPY"}
    assert (
        value(samples, "paytide_payments_final_total", **labels, failure_code="review_timeout") == 1
    )
    assert value(samples, "paytide_fraud_blocks_total", reason="review_timeout") == 1
    assert value(samples, "paytide_payment_time_to_final_seconds_count", status="blocked") == 1
    assert value(samples, "paytide_payment_time_to_final_seconds_count", status="canceled") == 0
