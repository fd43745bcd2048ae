"""The dashboard over HTTP: who may read it, and the ledger counts behind its stuck and
failed-notification numbers (the browser test covers the live payment counts)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.openapi import DashboardData
from ledger import payments
from ledger.engine import session_factory, transaction
from tests.integration.stack import Stack, running_stack
from workflows.contract import NotificationFailure, PaymentRequest, PaymentStatus, Transition


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, empty_database_url: str) -> AsyncIterator[Stack]:
    # A ledger of its own: the dashboard's counts are global, and the session's other tests
    # leave payments behind.
    async with running_stack(
        dev_env.client, empty_database_url, temporal_ui_url="https://temporal.example.test"
    ) as running:
        yield running


def _seed_in_flight(stack: Stack, *, started: datetime, status: PaymentStatus) -> str:
    """A payment written through the workflow's own ledger write, started at ``started``."""
    key = uuid.uuid4().hex
    request = PaymentRequest(
        payment_id=f"pay_{key[:22]}",
        merchant_id="merchant_dash",
        idempotency_key=key,
        fingerprint=f"fp-{key}",
        amount_minor=1000,
        currency="EUR",
        customer_id=f"cus_{key[:8]}",
        payment_method="pm_test",
        order_id=f"order_{key[:8]}",
    )
    workflow_id = f"payment:merchant_dash:{key}"
    with transaction(session_factory(stack.engine)) as session:
        for seq, step in enumerate([PaymentStatus.RECEIVED, status], start=1):
            payments.apply_transition(
                session,
                Transition(
                    payment_id=request.payment_id,
                    workflow_id=workflow_id,
                    seq=seq,
                    status=step,
                    request=request if seq == 1 else None,
                    at=started.isoformat(),
                ),
            )
    return request.payment_id


async def test_page_is_public_and_data_needs_an_operator(stack: Stack) -> None:
    """GET /dashboard is a static page anyone may load (no data in it, strict CSP); its data
    answers 401 without a key, 403 to a merchant and 400 to query parameters."""
    async with httpx.AsyncClient(base_url=stack.settings.effective_api_url) as anonymous:
        page = await anonymous.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert "/dashboard/data" in page.text
        assert (await anonymous.get("/dashboard/data")).status_code == 401
    refused = await stack.api.get("/dashboard/data")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "operator_role_required"
    extra = await stack.operator.get("/dashboard/data", params={"window": "60"})
    assert extra.status_code == 400
    assert extra.json()["error"]["code"] == "invalid_query"


async def test_stuck_and_failed_notifications_come_from_the_ledger(stack: Stack) -> None:
    """A payment in flight for longer than PAYTIDE_DASHBOARD_STUCK_AFTER counts as stuck (a
    fresh one does not), a failed notification counts, and both link to Temporal Web UI lists."""
    before = (await stack.operator.get("/dashboard/data")).json()
    assert (before["stuck"], before["open_reviews"], before["failed_notifications"]) == (0, 0, 0)
    now = datetime.now(UTC)
    old = _seed_in_flight(stack, started=now - timedelta(hours=2), status=PaymentStatus.CHARGING)
    _seed_in_flight(stack, started=now, status=PaymentStatus.AWAITING_WEBHOOK)
    # Waiting for an operator is not stuck, however old: it has its own number.
    _seed_in_flight(stack, started=now - timedelta(hours=2), status=PaymentStatus.IN_REVIEW)
    with transaction(session_factory(stack.engine)) as session:
        payments.record_notification_failure(
            session,
            NotificationFailure(
                payment_id=old,
                event_type="payment.failed",
                error="endpoint answered 500",
                attempts=5,
            ),
        )

    after = (await stack.operator.get("/dashboard/data")).json()
    assert (after["stuck"], after["open_reviews"], after["failed_notifications"]) == (1, 1, 1)
    assert after["stuck_after_seconds"] == stack.settings.dashboard_stuck_after

    stuck = urlsplit(after["links"]["stuck"])
    assert f"{stuck.scheme}://{stuck.netloc}" == "https://temporal.example.test"
    assert stuck.path == f"/namespaces/{stack.settings.temporal_namespace}/workflows"
    query = parse_qs(stuck.query)["query"][0]
    assert 'WorkflowType="PaymentWorkflow"' in query
    assert 'ExecutionStatus="Running"' in query
    assert '"charging"' in query and '"in_review"' not in query
    assert len(after["per_minute"]) == after["window_minutes"]
    # The answer fits the shape the OpenAPI document promises for it.
    DashboardData.model_validate(after)
