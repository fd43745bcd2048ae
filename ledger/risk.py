"""Ledger reads behind fraud scoring, and the write of each payment's risk assessment.

One statement reads everything the rules need, in one round trip: three aggregates over three
index ranges, joined as one row.
  * ``history``: the customer's latest succeeded payments, at most ``history_limit``
    (``ix_payments_customer_status_created``, read newest first);
  * ``customer``: the customer's payments in the longest window (``ix_payments_customer_created``);
  * ``method``: the payment method's payments in the card-testing window
    (``ix_payments_method_created``).
Every count leaves out the payment being scored, which the ledger already holds. The statement
is built once per rule set with bound parameters, so SQLAlchemy compiles it once.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from ledger.models import Payment, RiskAssessmentRecord, utcnow
from paytide.money import CURRENCY_EXPONENTS
from workflows.contract import PaymentStatus

Query: TypeAlias = Select[*tuple[Any, ...]]

SUCCEEDED = PaymentStatus.SUCCEEDED.value
FAILED = PaymentStatus.FAILED.value


@dataclass(frozen=True, kw_only=True)
class SucceededHistory:
    """What the customer's succeeded payments say about this one."""

    payments: int
    same_currency: int
    same_currency_total_minor: int
    with_device: int
    device_seen: bool
    with_country: int
    countries: int
    country_seen: bool


@dataclass(frozen=True, kw_only=True)
class CustomerRecent:
    """The customer's payments (any status) in each window."""

    daily: int
    velocity: int
    small: int
    declines: int
    elsewhere: int
    other_country: str | None


@dataclass(frozen=True, kw_only=True)
class MethodRecent:
    """The payment method's payments (any customer, any status) in the card-testing window."""

    payments: int
    small: int
    declines: int


@dataclass(frozen=True, kw_only=True)
class Signals:
    """Everything the ledger says about the payment being scored (itself left out)."""

    history: SucceededHistory
    customer: CustomerRecent
    method: MethodRecent


@dataclass(frozen=True, kw_only=True)
class Subject:
    """The payment being scored, as far as the queries need it."""

    payment_id: str
    merchant_id: str
    customer_id: str
    payment_method: str
    currency: str
    device_id: str | None
    country: str | None


@dataclass(frozen=True, kw_only=True)
class Windows:
    """Start of each rule's window, all ending now."""

    daily: datetime
    velocity: datetime
    card_testing: datetime
    travel: datetime

    @property
    def earliest(self) -> datetime:
        return min(self.daily, self.velocity, self.card_testing, self.travel)


def _text(value: str) -> ColumnElement[str]:
    """A constant string written into the SQL (standard quoting), not bound per execution."""
    return literal_column("'" + value.replace("'", "''") + "'", type_=String())


def _number(value: int) -> ColumnElement[int]:
    return literal_column(str(int(value)), type_=Integer())


ONE, ZERO = _number(1), _number(0)


def small_amount(major: int) -> ColumnElement[bool]:
    """``amount <= major`` in each row's own currency (2 → 200 EUR cents, 2 JPY, 2.000 KWD).

    The currency lists come from our own table and are written into the SQL, not bound: the
    statement stays one cached text, and the driver does not re-bind forty codes per score.
    """
    by_exponent: dict[int, list[str]] = {}
    for currency, places in sorted(CURRENCY_EXPONENTS.items()):
        by_exponent.setdefault(places, []).append(currency)
    conditions = []
    for places, currencies in sorted(by_exponent.items()):
        conditions.append(
            and_(
                col(Payment.currency).in_([_text(code) for code in currencies]),
                col(Payment.amount_minor) <= _number(major * 10**places),
            )
        )
    return or_(*conditions)


def declined(codes: Collection[str]) -> ColumnElement[bool]:
    """A failed payment whose failure code is a decline; ``refused*`` matches a prefix."""
    exact = sorted(code for code in codes if not code.endswith("*"))
    prefixes = sorted(code[:-1] for code in codes if code.endswith("*"))
    matches: list[ColumnElement[bool]] = []
    if exact:
        matches.append(col(Payment.failure_code).in_([_text(code) for code in exact]))
    for prefix in prefixes:
        escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
        matches.append(col(Payment.failure_code).like(_text(escaped + "%"), escape="/"))
    if not matches:
        return false()
    return and_(col(Payment.status) == _text(FAILED), or_(*matches))


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, ONE), else_=ZERO)), ZERO)


def _param(name: str) -> Any:
    return bindparam(name, type_=String())


def _since(name: str) -> Any:
    return bindparam(name, type_=DateTime(timezone=True))


def _others() -> list[ColumnElement[bool]]:
    """Same merchant, not the payment being scored."""
    return [
        col(Payment.merchant_id) == _param("merchant_id"),
        col(Payment.id) != _param("payment_id"),
    ]


def scoring_query(
    *, small_amount_major: int, decline_codes: Collection[str], history_limit: int
) -> Query:
    """The one statement behind a score; its parameters are those `parameters` returns.

    A missing device or country binds NULL: every comparison with it is unknown, so nothing
    counts as seen, new or elsewhere, and the rule that needs it cannot fire.
    """
    small = small_amount(small_amount_major)
    decline = declined(decline_codes)
    created = col(Payment.created_at)
    # The customer's latest succeeded payments, newest first along the index: a customer with
    # years of history (a shared guest account) costs the same as one with `history_limit`.
    latest = (
        select(
            col(Payment.currency),
            col(Payment.amount_minor),
            col(Payment.device_id),
            col(Payment.country),
        )
        .where(
            col(Payment.customer_id) == _param("customer_id"),
            col(Payment.status) == _text(SUCCEEDED),
            *_others(),
        )
        .order_by(created.desc())
        .limit(_number(history_limit))
        .subquery("latest")
    )
    same_currency = latest.c.currency == _param("currency")
    history = select(
        func.count().label("payments"),
        _count(same_currency).label("same_currency"),
        func.coalesce(func.sum(case((same_currency, latest.c.amount_minor))), ZERO).label(
            "same_currency_total_minor"
        ),
        func.count(latest.c.device_id).label("with_device"),
        func.coalesce(
            func.max(case((latest.c.device_id == _param("device_id"), ONE), else_=ZERO)), ZERO
        ).label("device_seen"),
        func.count(latest.c.country).label("with_country"),
        func.count(func.distinct(latest.c.country)).label("countries"),
        func.coalesce(
            func.max(case((latest.c.country == _param("country"), ONE), else_=ZERO)), ZERO
        ).label("country_seen"),
    ).cte("history")

    country = col(Payment.country)
    card_window = created >= _since("card_testing_since")
    elsewhere = and_(
        created >= _since("travel_since"), country.is_not(None), country != _param("country")
    )
    customer = (
        select(
            _count(created >= _since("daily_since")).label("daily"),
            _count(created >= _since("velocity_since")).label("velocity"),
            _count(and_(card_window, small)).label("small"),
            _count(and_(card_window, decline)).label("declines"),
            _count(elsewhere).label("elsewhere"),
            func.max(case((elsewhere, country))).label("other_country"),
        )
        .where(
            col(Payment.customer_id) == _param("customer_id"),
            created >= _since("earliest_since"),
            *_others(),
        )
        .cte("customer")
    )

    method = (
        select(
            func.count().label("payments"),
            _count(small).label("small"),
            _count(decline).label("declines"),
        )
        .where(
            col(Payment.payment_method) == _param("payment_method"),
            created >= _since("card_testing_since"),
            *_others(),
        )
        .cte("method")
    )

    return (
        select(
            *(column.label(f"history_{column.name}") for column in history.c),
            *(column.label(f"customer_{column.name}") for column in customer.c),
            *(column.label(f"method_{column.name}") for column in method.c),
        )
        .select_from(history)
        .join(customer, true())
        .join(method, true())
    )


def parameters(subject: Subject, windows: Windows) -> dict[str, Any]:
    return {
        "payment_id": subject.payment_id,
        "merchant_id": subject.merchant_id,
        "customer_id": subject.customer_id,
        "payment_method": subject.payment_method,
        "currency": subject.currency,
        "device_id": subject.device_id,
        "country": subject.country,
        "daily_since": windows.daily,
        "velocity_since": windows.velocity,
        "card_testing_since": windows.card_testing,
        "travel_since": windows.travel,
        "earliest_since": windows.earliest,
    }


def read_signals(session: Session, query: Query, subject: Subject, windows: Windows) -> Signals:
    row = session.execute(query, parameters(subject, windows)).mappings().one()
    return Signals(
        history=SucceededHistory(
            payments=int(row["history_payments"]),
            same_currency=int(row["history_same_currency"]),
            same_currency_total_minor=int(row["history_same_currency_total_minor"]),
            with_device=int(row["history_with_device"]),
            device_seen=bool(row["history_device_seen"]),
            with_country=int(row["history_with_country"]),
            countries=int(row["history_countries"]),
            country_seen=bool(row["history_country_seen"]),
        ),
        customer=CustomerRecent(
            daily=int(row["customer_daily"]),
            velocity=int(row["customer_velocity"]),
            small=int(row["customer_small"]),
            declines=int(row["customer_declines"]),
            elsewhere=int(row["customer_elsewhere"]),
            other_country=row["customer_other_country"],
        ),
        method=MethodRecent(
            payments=int(row["method_payments"]),
            small=int(row["method_small"]),
            declines=int(row["method_declines"]),
        ),
    )


@functools.cache
def _upsert(dialect: str) -> Any:
    """``INSERT … ON CONFLICT (payment_id) DO UPDATE``, built once per dialect."""
    table = RiskAssessmentRecord.__table__  # type: ignore[attr-defined]
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table)
    return statement.on_conflict_do_update(
        index_elements=["payment_id"],
        set_={
            name: getattr(statement.excluded, name)
            for name in ("score", "factors", "model_version", "assessed_at")
        },
    )


def save_assessment(
    session: Session,
    *,
    payment_id: str,
    score: int,
    factors: Sequence[Mapping[str, Any]],
    model_version: str,
) -> None:
    """Upsert by payment id: a retried activity rewrites the row the workflow will act on."""
    session.execute(
        _upsert(session.get_bind().dialect.name),
        {
            "payment_id": payment_id,
            "score": score,
            "factors": [dict(factor) for factor in factors],
            "model_version": model_version,
            "assessed_at": utcnow(),
        },
    )


def get_assessment(session: Session, payment_id: str) -> RiskAssessmentRecord | None:
    record: RiskAssessmentRecord | None = session.execute(
        select(RiskAssessmentRecord).where(col(RiskAssessmentRecord.payment_id) == payment_id)
    ).scalar_one_or_none()
    return record
