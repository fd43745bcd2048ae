"""A ledger error's retry decision is made where it is born (activities/ledger_errors.py)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, exc
from temporalio.exceptions import ApplicationError

from activities.ledger_errors import REJECTED, UNAVAILABLE, classified, ledger_error
from workflows.retries import LEDGER_RETRY, NOTIFY_RETRY

PARAMETERS = {"description": "secret-ish \x00 value"}


@pytest.mark.parametrize(
    ("error", "kind", "retryable"),
    [
        (exc.DataError("INSERT", PARAMETERS, psycopg.DataError("bad NUL")), REJECTED, False),
        (exc.IntegrityError("INSERT", PARAMETERS, psycopg.IntegrityError("dup")), REJECTED, False),
        (exc.ProgrammingError("SELECT", {}, psycopg.ProgrammingError("no")), REJECTED, False),
        (
            exc.OperationalError("SELECT", {}, psycopg.OperationalError("refused")),
            UNAVAILABLE,
            True,
        ),
        (exc.InterfaceError("SELECT", {}, psycopg.InterfaceError("closed")), UNAVAILABLE, True),
        (exc.TimeoutError("pool exhausted"), UNAVAILABLE, True),
    ],
)
def test_permanent_errors_are_not_retried_and_outages_are(
    error: exc.SQLAlchemyError, kind: str, retryable: bool
) -> None:
    """Refused data, constraints and bad SQL are not retried; an unreachable database is."""
    decided = ledger_error(error)
    assert decided is not None
    assert decided.type == kind
    assert decided.non_retryable is not retryable


def test_the_message_names_the_cause_but_not_the_statement() -> None:
    """The decision's message carries the driver's words, never the SQL or its parameters, and
    it is not chained to the SQLAlchemy error (Temporal would carry the chain's text)."""
    error = exc.DataError("INSERT INTO payments", PARAMETERS, psycopg.DataError("NUL refused"))
    with pytest.raises(Exception) as raised, classified():
        raise error
    message = str(raised.value)
    assert "DataError: NUL refused" in message
    assert "INSERT" not in message and "secret-ish" not in message
    assert raised.value.__cause__ is None


def test_shared_retry_policies_have_a_limit() -> None:
    """No shared policy retries for ever (maximum_attempts 0 means unlimited)."""
    assert LEDGER_RETRY.maximum_attempts > 0
    assert NOTIFY_RETRY.maximum_attempts > 0


@pytest.mark.parametrize(
    "row",
    [
        {"amount": 1, "email": "someone@example.com", "at": "not a datetime"},
        {"amount": 1, "email": "someone@example.com \ud800"},
        {"amount": 2**70, "email": "someone@example.com"},
    ],
    ids=["bind_processing", "unencodable_text", "integer_overflow"],
)
def test_parameters_the_driver_cannot_send_are_rejected_without_them(row: dict[str, Any]) -> None:
    """A write whose parameters cannot even be sent (SQLAlchemy's StatementError, the driver's
    UnicodeEncodeError or OverflowError) fails the same on every try: LedgerRejected at once,
    and its message carries neither the SQL nor the parameters (personal data)."""
    table = Table(
        "t", MetaData(), Column("amount", Integer), Column("email", String), Column("at", DateTime)
    )
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    with pytest.raises(ApplicationError) as raised, classified(), engine.begin() as connection:
        connection.execute(table.insert(), row)
    assert raised.value.type == REJECTED and raised.value.non_retryable
    message = str(raised.value)
    assert "INSERT" not in message and "someone@example.com" not in message
    assert raised.value.__cause__ is None
