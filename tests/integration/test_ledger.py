"""The ledger on SQLite and PostgreSQL: idempotent writes, ordered transitions, stable pages."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, text, update
from sqlmodel import Session, col, select

from ledger import payments as ledger
from ledger.engine import create_ledger_engine, session_factory, transaction
from ledger.migrate import current_revision, head_revision, upgrade
from ledger.models import Notification, Payment, PaymentEvent
from workflows.contract import (
    Failure,
    GatewayName,
    PaymentRequest,
    PaymentStatus,
    RiskAssessment,
    RiskFactor,
    Transition,
)

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def payment_request(*, merchant_id: str | None = None) -> PaymentRequest:
    """A fresh payment request with ids no other test uses (the databases live all session)."""
    key = unique("key")
    return PaymentRequest(
        payment_id=unique("pay"),
        merchant_id=merchant_id or unique("m"),
        idempotency_key=key,
        fingerprint=uuid.uuid4().hex,
        amount_minor=4200,
        currency="USD",
        customer_id=unique("cus"),
        payment_method="pm_sandbox_ok",
        order_id=unique("order"),
        metadata={"cart": "42"},
    )


def transition(
    request: PaymentRequest,
    seq: int,
    status: PaymentStatus,
    *,
    gateway: GatewayName | None = None,
    gateway_reference: str | None = None,
) -> Transition:
    """Transition number ``seq`` of ``request``'s payment; the first one carries the request."""
    return Transition(
        payment_id=request.payment_id,
        workflow_id=f"payment:{request.merchant_id}:{request.idempotency_key}",
        seq=seq,
        status=status,
        gateway=gateway,
        gateway_reference=gateway_reference,
        request=request if seq == 1 else None,
    )


def apply(engine: Engine, *transitions: Transition) -> None:
    """Apply each transition in its own transaction, as separate activity runs would."""
    sessions = session_factory(engine)
    for item in transitions:
        with transaction(sessions) as session:
            ledger.apply_transition(session, item)


def payment_rows(engine: Engine, payment_id: str) -> list[Payment]:
    with Session(engine) as session:
        return list(session.exec(select(Payment).where(Payment.id == payment_id)))


def event_seqs(engine: Engine, payment_id: str) -> list[int]:
    with Session(engine) as session:
        return [event.seq for event in ledger.list_events(session, payment_id)]


def test_apply_transition_twice_writes_once(ledger_engine: Engine) -> None:
    """Applying the same transition twice leaves one payment row and one event row."""
    request = payment_request()
    first = transition(request, 1, PaymentStatus.RECEIVED)
    apply(ledger_engine, first, first)

    (row,) = payment_rows(ledger_engine, request.payment_id)
    assert row.status == PaymentStatus.RECEIVED
    assert row.last_seq == 1
    assert (row.amount_minor, row.currency) == (4200, "USD")
    assert row.payment_metadata == {"cart": "42"}
    assert row.idempotency_key == request.idempotency_key
    assert event_seqs(ledger_engine, request.payment_id) == [1]


def test_later_transition_replayed_is_a_no_op(ledger_engine: Engine) -> None:
    """Re-applying a later transition (an activity retry) adds no event and changes nothing."""
    request = payment_request()
    charged = transition(
        request,
        2,
        PaymentStatus.AWAITING_WEBHOOK,
        gateway=GatewayName.SANDBOX,
        gateway_reference="ch_1",
    )
    apply(ledger_engine, transition(request, 1, PaymentStatus.RECEIVED), charged, charged)

    (row,) = payment_rows(ledger_engine, request.payment_id)
    assert (row.status, row.last_seq) == (PaymentStatus.AWAITING_WEBHOOK, 2)
    assert (row.gateway, row.gateway_reference) == ("sandbox", "ch_1")
    assert event_seqs(ledger_engine, request.payment_id) == [1, 2]


def test_older_transition_does_not_overwrite_a_newer_one(ledger_engine: Engine) -> None:
    """A transition delivered late (older seq) is logged but leaves the newer status in place."""
    request = payment_request()
    apply(
        ledger_engine,
        transition(request, 1, PaymentStatus.RECEIVED),
        transition(request, 3, PaymentStatus.SUCCEEDED, gateway_reference="ch_new"),
        transition(request, 2, PaymentStatus.CHARGING, gateway_reference="ch_old"),
    )

    (row,) = payment_rows(ledger_engine, request.payment_id)
    assert row.status == PaymentStatus.SUCCEEDED
    assert row.last_seq == 3
    assert row.gateway_reference == "ch_new"
    assert event_seqs(ledger_engine, request.payment_id) == [1, 2, 3]


def test_a_transition_keeps_what_it_does_not_say(ledger_engine: Engine) -> None:
    """Gateway, reference, risk and failure stay as they are when a later transition leaves
    them out, and change when it gives them (JSON included: no 'null' written over factors)."""
    request = payment_request()
    risk = RiskAssessment(score=12, factors=[RiskFactor(name="new_customer", weight=12)])
    failed = Failure(code="card_declined", message="declined", retryable=False)
    apply(
        ledger_engine,
        transition(request, 1, PaymentStatus.RECEIVED),
        replace(
            transition(request, 2, PaymentStatus.CHARGING, gateway=GatewayName.SANDBOX),
            risk=risk,
        ),
        transition(request, 3, PaymentStatus.AWAITING_WEBHOOK, gateway_reference="ch_9"),
    )
    (row,) = payment_rows(ledger_engine, request.payment_id)
    assert (row.gateway, row.gateway_reference, row.risk_score) == ("sandbox", "ch_9", 12)
    assert row.risk_factors == [{"name": "new_customer", "weight": 12, "evidence": {}}]
    assert (row.failure_code, row.failure_message, row.failure_retryable) == (None, None, None)

    apply(
        ledger_engine,
        replace(transition(request, 4, PaymentStatus.FAILED), failure=failed),
    )
    (row,) = payment_rows(ledger_engine, request.payment_id)
    assert (row.status, row.last_seq) == (PaymentStatus.FAILED, 4)
    assert (row.gateway, row.gateway_reference, row.risk_score) == ("sandbox", "ch_9", 12)
    assert row.risk_factors == [{"name": "new_customer", "weight": 12, "evidence": {}}]
    assert (row.failure_code, row.failure_message, row.failure_retryable) == (
        "card_declined",
        "declined",
        False,
    )


def test_record_webhook_is_true_once_per_event(ledger_engine: Engine) -> None:
    """The first delivery of (provider, event_id) is new; a re-delivery is not."""
    event_id = unique("evt")
    sessions = session_factory(ledger_engine)

    def record(provider: str) -> bool:
        with transaction(sessions) as session:
            return ledger.record_webhook(
                session,
                provider=provider,
                event_id=event_id,
                event_type="charge.succeeded",
                payment_id=None,
                gateway_reference="ch_1",
            )

    assert record("sandbox") is True
    assert record("sandbox") is False
    # Event ids are only unique within one provider.
    assert record("stripe") is True


def test_record_notification_updates_the_existing_row(ledger_engine: Engine) -> None:
    """A second outcome for the same notification updates its one row instead of being lost."""
    request = payment_request()
    apply(ledger_engine, transition(request, 1, PaymentStatus.RECEIVED))
    sessions = session_factory(ledger_engine)
    outcomes = [("retrying", 1, "merchant endpoint answered 503"), ("delivered", 2, None)]
    for status, attempts, error in outcomes:
        with transaction(sessions) as session:
            ledger.record_notification(
                session,
                payment_id=request.payment_id,
                event_type="payment.succeeded",
                status=status,
                attempts=attempts,
                error=error,
            )

    with Session(ledger_engine) as session:
        rows = list(
            session.exec(select(Notification).where(Notification.payment_id == request.payment_id))
        )
    assert [(row.status, row.attempts, row.last_error) for row in rows] == [("delivered", 2, None)]


def test_list_payments_pages_cover_every_row_once(ledger_engine: Engine) -> None:
    """Keyset pages on (created_at, id) return each row exactly once, even with equal times."""
    merchant = unique("m")
    requests = [payment_request(merchant_id=merchant) for _ in range(11)]
    apply(ledger_engine, *(transition(r, 1, PaymentStatus.RECEIVED) for r in requests))
    # Most rows share one timestamp, as a burst of payments in one clock tick would.
    shared = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    times = {r.payment_id: shared for r in requests[:8]}
    times[requests[8].payment_id] = shared + timedelta(seconds=1)
    times[requests[9].payment_id] = shared - timedelta(seconds=1)
    times[requests[10].payment_id] = shared - timedelta(microseconds=1)
    with transaction(session_factory(ledger_engine)) as session:
        for payment_id, created in times.items():
            session.execute(
                update(Payment).where(col(Payment.id) == payment_id).values(created_at=created)
            )

    pages: list[list[str]] = []
    after: tuple[datetime, str] | None = None
    while True:
        with transaction(session_factory(ledger_engine)) as session:
            page = ledger.list_payments(
                session,
                merchant_id=merchant,
                customer_id=None,
                status=None,
                created_after=None,
                after=after,
                limit=3,
            )
        if not page:
            break
        pages.append([row.id for row in page])
        after = (page[-1].created_at, page[-1].id)
        assert len(pages) <= len(requests), "pagination does not terminate"

    seen = [payment_id for page in pages for payment_id in page]
    newest_first = sorted(times, key=lambda payment_id: (times[payment_id], payment_id))[::-1]
    assert seen == newest_first
    assert [len(page) for page in pages] == [3, 3, 3, 2]


def test_list_payments_filters_by_status_and_customer(ledger_engine: Engine) -> None:
    """Status and customer filters narrow the merchant's list."""
    merchant = unique("m")
    done, pending = payment_request(merchant_id=merchant), payment_request(merchant_id=merchant)
    apply(
        ledger_engine,
        transition(done, 1, PaymentStatus.RECEIVED),
        transition(done, 2, PaymentStatus.SUCCEEDED),
        transition(pending, 1, PaymentStatus.RECEIVED),
    )

    def ids(*, status: str | None = None, customer_id: str | None = None) -> list[str]:
        with transaction(session_factory(ledger_engine)) as session:
            rows = ledger.list_payments(
                session,
                merchant_id=merchant,
                customer_id=customer_id,
                status=status,
                created_after=None,
                after=None,
                limit=10,
            )
        return [row.id for row in rows]

    assert ids(status="succeeded") == [done.payment_id]
    assert ids(customer_id=pending.customer_id) == [pending.payment_id]
    assert sorted(ids()) == sorted([done.payment_id, pending.payment_id])


def test_upgrade_at_head_is_a_no_op(ledger_engine: Engine) -> None:
    """Upgrading a ledger already at head keeps its revision and its rows."""
    request = payment_request()
    apply(ledger_engine, transition(request, 1, PaymentStatus.RECEIVED))
    with Session(ledger_engine) as session:
        before = session.exec(select(func.count()).select_from(Payment)).one()
    assert current_revision(ledger_engine) == head_revision()

    upgrade(ledger_engine)
    upgrade(ledger_engine)

    assert current_revision(ledger_engine) == head_revision()
    with Session(ledger_engine) as session:
        assert session.exec(select(func.count()).select_from(Payment)).one() == before
        versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [version for (version,) in versions] == [head_revision()]
    assert len(payment_rows(ledger_engine, request.payment_id)) == 1


def test_upgrade_builds_an_empty_database(tmp_path: Path) -> None:
    """A new database has no revision; one upgrade brings it to head with every table."""
    engine = create_ledger_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with Session(engine) as session:
            assert session.exec(select(func.count()).select_from(PaymentEvent)).one() == 0
    finally:
        engine.dispose()
