"""The three statements behind every payment transition, built once per SQL dialect.

A transition runs on every step of every payment, four times on the way to success. Built per
call, through the ORM, its statements cost about 2 ms of CPU each time (clause coercion, cache
keys, the ORM's bulk-update bookkeeping: docs/performance.md); prebuilt Core statements with
bound parameters cost a fraction of that, and the SQL is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import JSON, Table, bindparam, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert, Update

from ledger.models import Payment, PaymentEvent

PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]
EVENTS: Table = PaymentEvent.__table__  # type: ignore[attr-defined]

# Columns a transition sets only when it knows a value: NULL keeps what the row has.
KEPT_UNLESS_GIVEN = (
    "gateway",
    "gateway_reference",
    "risk_score",
    "risk_factors",
    "failure_code",
    "failure_message",
    "failure_retryable",
)


@dataclass(frozen=True)
class TransitionStatements:
    insert_payment: Insert
    insert_event: Insert
    move_payment: Update


def _kept_unless_given(column: str) -> Any:
    target = PAYMENTS.c[column]
    # JSON binds None as the JSON text 'null' unless told otherwise, which COALESCE would keep.
    kind = JSON(none_as_null=True) if isinstance(target.type, JSON) else target.type
    return func.coalesce(bindparam(f"new_{column}", type_=kind), target)


@cache
def statements(dialect: str) -> TransitionStatements:
    module: Any = postgresql if dialect == "postgresql" else sqlite
    move = (
        update(PAYMENTS)
        # An older (re-delivered) transition never overwrites a newer one.
        .where(PAYMENTS.c.id == bindparam("new_id"), PAYMENTS.c.last_seq < bindparam("new_seq"))
        .values(
            status=bindparam("new_status"),
            last_seq=bindparam("new_seq"),
            updated_at=bindparam("new_updated_at", type_=PAYMENTS.c.updated_at.type),
            **{column: _kept_unless_given(column) for column in KEPT_UNLESS_GIVEN},
        )
    )
    return TransitionStatements(
        insert_payment=module.insert(PAYMENTS).on_conflict_do_nothing(index_elements=["id"]),
        insert_event=module.insert(EVENTS).on_conflict_do_nothing(
            index_elements=["payment_id", "seq"]
        ),
        move_payment=move,
    )
