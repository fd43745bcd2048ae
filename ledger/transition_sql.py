"""The UPDATE behind every payment transition, built once.

A transition runs on every step of every payment. Built per call through the ORM, its
statements cost about 2 ms of CPU each time (clause coercion, cache keys, the ORM's bulk-update
bookkeeping: docs/performance.md); a prebuilt Core statement with bound parameters costs a
fraction of that, and the SQL is the same. Its two inserts go through
`ledger.conflicts.insert_ignoring_conflict`, which prebuilds its statements the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Table, bindparam, func, update

from ledger.models import Payment

PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]

# Columns a transition sets only when it knows a value: NULL keeps what the row has.
KEPT_UNLESS_GIVEN = (
    "gateway",
    "gateway_reference",
    "risk_score",
    "risk_factors",
    "failure_code",
    "failure_message",
    "failure_retryable",
    "amount_captured",
)


def _kept_unless_given(column: str) -> Any:
    target = PAYMENTS.c[column]
    # JSON binds None as the JSON text 'null' unless told otherwise, which COALESCE would keep.
    kind = JSON(none_as_null=True) if isinstance(target.type, JSON) else target.type
    return func.coalesce(bindparam(f"new_{column}", type_=kind), target)


# The same SQL on SQLite and PostgreSQL. An older (re-delivered) transition never overwrites a
# newer one.
MOVE_PAYMENT = (
    update(PAYMENTS)
    .where(PAYMENTS.c.id == bindparam("new_id"), PAYMENTS.c.last_seq < bindparam("new_seq"))
    .values(
        status=bindparam("new_status"),
        last_seq=bindparam("new_seq"),
        updated_at=bindparam("new_updated_at", type_=PAYMENTS.c.updated_at.type),
        **{column: _kept_unless_given(column) for column in KEPT_UNLESS_GIVEN},
    )
)
