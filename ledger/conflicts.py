"""``INSERT … ON CONFLICT DO NOTHING`` for both SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session


@cache
def _statement(dialect: str, table: Table, conflict_columns: tuple[str, ...]) -> Insert:
    # Built once and run with bound parameters: building it per call (clause coercion, cache
    # key) cost more CPU than the insert itself (docs/performance.md).
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement: Insert = (
        module.insert(table)
        .on_conflict_do_nothing(index_elements=list(conflict_columns))
        # Whether a row comes back says whether this call inserted it. rowcount cannot say: for
        # a table with a generated key SQLAlchemy adds RETURNING itself, and psycopg then
        # reports rowcount -1 whether the row was inserted or skipped.
        .returning(*table.primary_key.columns)
    )
    return statement


def insert_ignoring_conflict(
    session: Session, table: Table, values: Mapping[str, Any], conflict_columns: Sequence[str]
) -> bool:
    """Insert one row unless its natural key exists already; True when this call inserted it."""
    statement = _statement(session.get_bind().dialect.name, table, tuple(conflict_columns))
    return session.connection().execute(statement, dict(values)).first() is not None
