"""The ledger's captured amount: refunds reserved under the payment's row lock are bounded by it,
and migration 0007 fills it in where it is known (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, Table, insert, select
from sqlmodel import Session, col

from ledger import refunds
from ledger.engine import create_ledger_engine, session_factory, transaction
from ledger.migrate import MIGRATIONS, current_revision, head_revision, upgrade
from ledger.models import Payment
from tests.support.ledger_seed import seed_succeeded_payment
from workflows.contract import Failure, PaymentRequest, PaymentStatus, RefundState
from workflows.refund_contract import RefundRequestInput, RefundSettlement, Reservation


def reserve(
    engine: Engine, payment: PaymentRequest, amount: int | None
) -> tuple[str, Failure | None, int]:
    """Reserve a refund of ``amount``; its id, the refusal (None when accepted) and what was
    refundable."""
    key = uuid.uuid4().hex
    request = RefundRequestInput(
        refund_id=f"ref_{key[:22]}",
        merchant_id=payment.merchant_id,
        payment_id=payment.payment_id,
        idempotency_key=key,
        fingerprint=f"fp-{key}",
        amount_minor=amount,
    )
    with transaction(session_factory(engine)) as session:
        result = refunds.reserve(session, Reservation(request=request, workflow_id=f"refund-{key}"))
    return request.refund_id, result.refusal, result.refundable_minor


def refund_rows(engine: Engine, payment_id: str) -> list[tuple[str, int]]:
    with transaction(session_factory(engine)) as session:
        return [(r.status, r.amount_minor) for r in refunds.list_for_payment(session, payment_id)]


def payment_status(engine: Engine, payment_id: str) -> str:
    with Session(engine) as session:
        row = session.get(Payment, payment_id)
        assert row is not None
        return row.status


def test_refunds_are_bounded_by_the_captured_amount(ledger_engine: Engine) -> None:
    """300 captured of 1000: 1000 is refused (refundable 300) and records nothing; the rest is
    300; once it succeeded the payment is refunded, and 1 more is refused (refundable 0)."""
    payment = seed_succeeded_payment(
        session_factory(ledger_engine), amount_minor=1000, amount_captured=300
    )

    _, over, refundable = reserve(ledger_engine, payment, 1000)
    assert over is not None and over.code == "refund_exceeds_refundable"
    assert refundable == 300
    assert "300" in over.message
    assert refund_rows(ledger_engine, payment.payment_id) == []

    rest, accepted, _ = reserve(ledger_engine, payment, None)
    assert accepted is None
    assert refund_rows(ledger_engine, payment.payment_id) == [("pending", 300)]
    with transaction(session_factory(ledger_engine)) as session:
        refunds.settle(session, RefundSettlement(refund_id=rest, status=RefundState.SUCCEEDED))
    assert payment_status(ledger_engine, payment.payment_id) == PaymentStatus.REFUNDED.value

    _, more, left = reserve(ledger_engine, payment, 1)
    assert more is not None and more.code == "refund_exceeds_refundable"
    assert left == 0
    assert refund_rows(ledger_engine, payment.payment_id) == [("succeeded", 300)]


def test_concurrent_partial_refunds_never_exceed_a_partial_capture(ledger_engine: Engine) -> None:
    """300 captured of 1000, eight refunds of 100 reserved at once on their own connections:
    exactly three are accepted, so together they never pass what was captured."""
    payment = seed_succeeded_payment(
        session_factory(ledger_engine), amount_minor=1000, amount_captured=300
    )
    start = threading.Barrier(8)

    def one() -> Failure | None:
        start.wait()
        return reserve(ledger_engine, payment, 100)[1]

    with ThreadPoolExecutor(max_workers=8) as pool:
        refusals = list(pool.map(lambda _: one(), range(8)))

    assert sum(refusal is None for refusal in refusals) == 3
    assert {r.code for r in refusals if r is not None} == {"refund_exceeds_refundable"}
    assert refund_rows(ledger_engine, payment.payment_id) == [("pending", 100)] * 3


def test_a_payment_without_a_recorded_capture_is_not_refundable(ledger_engine: Engine) -> None:
    """A succeeded payment whose captured amount the ledger never learned (a manual capture
    from before migration 0007) is refused as not refundable, for any amount."""
    payment = seed_succeeded_payment(session_factory(ledger_engine), amount_minor=1000)
    with Session(ledger_engine) as session:
        row = session.get(Payment, payment.payment_id)
        assert row is not None
        row.amount_captured = None
        session.add(row)
        session.commit()

    _, refused, _ = reserve(ledger_engine, payment, 1)

    assert refused is not None and refused.code == "payment_not_refundable"
    assert refund_rows(ledger_engine, payment.payment_id) == []


def _payment_row(status: str, capture: str, amount: int) -> dict[str, object]:
    key = uuid.uuid4().hex
    now = datetime.now(UTC)
    return {
        "id": f"pay_{key[:22]}",
        "merchant_id": "merchant_migration",
        "idempotency_key": key,
        "fingerprint": f"fp-{key}",
        "workflow_id": f"payment-merchant_migration-{key}",
        "status": status,
        "amount_minor": amount,
        "currency": "USD",
        "customer_id": "cus_migration",
        "order_id": f"order_{key[:8]}",
        "payment_method": "pm_test",
        "metadata": {},
        "capture_method": capture,
        "risk_factors": [],
        "last_seq": 2,
        "created_at": now,
        "updated_at": now,
    }


def test_migration_0007_fills_in_what_is_known(empty_database_url: str) -> None:
    """From 0006, upgrading fills amount_captured with the amount for captured automatic
    payments and leaves it empty for manual ones (the amount is unknown) and uncaptured ones."""
    engine = create_ledger_engine(empty_database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
        assert current_revision(engine) == "0006"
        rows = {
            "automatic_succeeded": _payment_row("succeeded", "automatic", 1000),
            "automatic_refunded": _payment_row("partially_refunded", "automatic", 1200),
            "manual_succeeded": _payment_row("succeeded", "manual", 1500),
            "automatic_failed": _payment_row("failed", "automatic", 900),
        }
        payments = Table("payments", MetaData(), autoload_with=engine)
        with engine.begin() as connection:
            connection.execute(insert(payments), list(rows.values()))

        upgrade(engine)

        assert current_revision(engine) == head_revision()
        with Session(engine) as session:
            captured = {
                name: session.execute(
                    select(col(Payment.amount_captured)).where(col(Payment.id) == row["id"])
                ).scalar_one()
                for name, row in rows.items()
            }
        assert captured == {
            "automatic_succeeded": 1000,
            "automatic_refunded": 1200,
            "manual_succeeded": None,
            "automatic_failed": None,
        }
    finally:
        engine.dispose()
