"""The one place where a ledger (SQLAlchemy) error becomes a Temporal retry decision.

Decided where the error is born, like the gateway errors in activities/gateway.py:

- ``LedgerRejected``, not retryable: the database refused this statement itself (bad data such as
  a NUL byte in text on PostgreSQL, a violated constraint, SQL it does not understand), or its
  parameters could not even be sent (SQLAlchemy's ``StatementError`` from a bind processor, the
  driver's ``UnicodeEncodeError`` for an unpaired surrogate, ``OverflowError`` for an integer
  past 64 bits). The same write fails the same way on every try, so retrying it would only hide
  it.
- ``LedgerUnavailable``, retryable: the database could not be reached or gave up on this
  transaction (refused or lost connection, pool timeout, serialization failure, deadlock). A
  later try may succeed; the workflows' ``LEDGER_RETRY`` bounds how long they keep trying.

The message names the driver's error class and its first line only: SQLAlchemy's own text carries
the statement and its parameters, which may hold personal data or sealed secrets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc
from sqlmodel import Session
from temporalio.exceptions import ApplicationError

from ledger.engine import SessionFactory, transaction

REJECTED = "LedgerRejected"
UNAVAILABLE = "LedgerUnavailable"

_PERMANENT = (exc.DataError, exc.IntegrityError, exc.ProgrammingError, exc.NotSupportedError)
# Raised by the drivers themselves (sqlite3, psycopg) while encoding a parameter, unwrapped.
_UNSENDABLE = (UnicodeEncodeError, OverflowError)
_TRANSIENT = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.InternalError,
    exc.DisconnectionError,
    exc.TimeoutError,
)


def ledger_error(error: exc.SQLAlchemyError) -> ApplicationError | None:
    """Temporal's retry decision for ``error``; None when it is not a database's answer (our
    own bug: left as it is, retried within the bound like any unexpected error)."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return _application_error(error, UNAVAILABLE, retryable=True)
    if isinstance(error, _PERMANENT):
        return _application_error(error, REJECTED, retryable=False)
    if isinstance(error, _TRANSIENT):
        return _application_error(error, UNAVAILABLE, retryable=True)
    if isinstance(error, exc.StatementError) and not isinstance(error, exc.DBAPIError):
        # A parameter a bind processor refused before the database saw anything.
        return _application_error(error, REJECTED, retryable=False)
    return None


def describe(error: exc.SQLAlchemyError | ValueError | ArithmeticError) -> str:
    """The driver's error class and first line, without the statement or its parameters."""
    cause: BaseException = error
    if isinstance(error, exc.StatementError) and error.orig is not None:
        cause = error.orig
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else 'no message'}"


def _application_error(
    error: exc.SQLAlchemyError | ValueError | ArithmeticError, kind: str, *, retryable: bool
) -> ApplicationError:
    what = "the ledger refused the write" if not retryable else "the ledger is unavailable"
    return ApplicationError(f"{what} ({describe(error)})", type=kind, non_retryable=not retryable)


@contextmanager
def classified() -> Iterator[None]:
    """Raise the database's errors inside as the ApplicationError ``ledger_error`` decides."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        decided = ledger_error(error)
        if decided is None:
            raise
        # Not chained: Temporal would carry the cause's text, statement and parameters included.
        raise decided from None
    except _UNSENDABLE as error:
        raise _application_error(error, REJECTED, retryable=False) from None


@contextmanager
def ledger_transaction(sessions: SessionFactory) -> Iterator[Session]:
    """``ledger.engine.transaction`` for an activity: commit or roll back, errors classified."""
    with classified(), transaction(sessions) as session:
        yield session
