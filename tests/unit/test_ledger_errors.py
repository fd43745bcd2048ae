"""A ledger error's retry decision is made where it is born (activities/ledger_errors.py)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import exc

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
