"""Engine and session set-up for SQLite (the embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from paytide.private_files import (
    SharedFolder,
    private_directory,
    private_file,
    shared_folder_problem,
    tighten_if_present,
)

SessionFactory: TypeAlias = Callable[[], Session]
_GENERATION = "paytide_pool_generation"


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while the worker writes; busy_timeout turns lock contention into a
    # short wait instead of an immediate "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _private_database_file(database: Path) -> None:
    """The ledger file exists 0600 before SQLite opens it: SQLite creates its -wal, -shm and
    -journal files with the database file's mode. A folder it needs is created 0700; one that
    other users may write to (where they could plant its -wal, or a link) is refused."""
    if not database.parent.exists():
        private_directory(database.parent)
    elif (problem := shared_folder_problem(database.parent)) is not None:
        raise SharedFolder(f"{problem}: set PAYTIDE_DATABASE_URL to a file in a folder of your own")
    private_file(database)
    tighten_if_present(*(database.with_name(database.name + end) for end in _SIDE_FILES))


_SIDE_FILES = ("-wal", "-shm", "-journal")


def create_ledger_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_database_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _tune_sqlite)
        return _closing_late_returns(engine)
    return _closing_late_returns(
        create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    )


def session_factory(engine: Engine) -> SessionFactory:
    def open_session() -> Session:
        return Session(engine, expire_on_commit=False)

    return open_session


@contextmanager
def transaction(factory: SessionFactory) -> Iterator[Session]:
    with factory() as session, session.begin():
        yield session


def _closing_late_returns(engine: Engine) -> Engine:
    """``engine.dispose()`` closes the pooled connections, not those in use: one a thread still
    holds (a ledger write of an activity cancelled as the worker stops, a request cut off as the
    API stops) would go back to the discarded pool and stay open until garbage collected (psycopg
    then warns). Each connection remembers the pool generation it was opened in; one that comes
    back from an older generation is closed instead of pooled."""
    generation = 0

    def disposed(_engine: Engine) -> None:
        nonlocal generation
        generation += 1

    def opened(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_GENERATION] = generation

    def returned(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None and record.info.get(_GENERATION) != generation:
            dbapi_connection.close()

    event.listen(engine, "engine_disposed", disposed)
    event.listen(engine, "connect", opened)
    event.listen(engine, "checkin", returned)
    return engine
