"""``INSERT … ON CONFLICT DO NOTHING`` for both SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session


def insert_ignoring_conflict(
    session: Session, table: Table, values: Mapping[str, Any], conflict_columns: Sequence[str]
) -> bool:
    """Insert one row unless its natural key exists already; True when this call inserted it."""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = (
        module.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict_columns)
        # Whether a row comes back says whether this call inserted it. rowcount cannot say: for
        # a table with a generated key SQLAlchemy adds RETURNING itself, and psycopg then
        # reports rowcount -1 whether the row was inserted or skipped.
        .returning(*table.primary_key.columns)
    )
    return session.execute(statement).first() is not None
