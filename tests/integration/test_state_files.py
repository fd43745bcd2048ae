"""State files are readable by their owner only (issue 16, finding 12): the state folder is 0700
and what paytide writes there is 0600, whatever the umask. Each file is made by its real code
path: the SQLite ledger, the dev supervisor's logs and children, the SMTP sink's mail."""

from __future__ import annotations

import asyncio
import os
import smtplib
import stat
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text

from ledger.engine import create_ledger_engine
from ledger.migrate import upgrade
from paytide.devstack import Stack, StackError, prepare_state_dir
from paytide.private_files import SharedFolder
from paytide.settings import Settings
from paytide.smtp_sink import SmtpSink
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The common default umask (022), under which a plain open() makes files world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_sqlite_ledger_and_its_wal_are_private(tmp_path: Path) -> None:
    """A new ledger's folder is 0700; ledger.db, -wal and -shm are 0600 while it is in use."""
    state = tmp_path / "state"
    engine = create_ledger_engine(f"sqlite:///{state / 'ledger.db'}")
    try:
        upgrade(engine)
        with engine.connect() as connection:
            connection.execute(text("CREATE TABLE probe (x INTEGER)"))
            connection.execute(text("INSERT INTO probe VALUES (1)"))
            connection.commit()
            files = sorted(path.name for path in state.iterdir())
            assert {"ledger.db", "ledger.db-wal", "ledger.db-shm"} <= set(files), files
            assert {name: mode(state / name) for name in files} == dict.fromkeys(files, 0o600)
    finally:
        engine.dispose()
    assert mode(state) == 0o700


def test_ledger_files_left_readable_are_tightened(tmp_path: Path) -> None:
    """An existing ledger.db and -wal left 0644 by an older paytide are 0600 once opened."""
    database = tmp_path / "ledger.db"
    engine = create_ledger_engine(f"sqlite:///{database}")
    upgrade(engine)
    engine.dispose()
    wal = tmp_path / "ledger.db-wal"
    wal.touch()
    for path in (database, wal):
        path.chmod(0o644)
    create_ledger_engine(f"sqlite:///{database}").dispose()
    assert (mode(database), mode(wal)) == (0o600, 0o600)


def test_dev_supervisor_logs_and_children_files_are_private(tmp_path: Path) -> None:
    """`paytide dev`'s logs folder is 0700, each child's log 0600, and what a child creates in
    the state folder (the Temporal dev server's temporal.db) is 0600."""
    state = tmp_path / "state"
    settings = Settings(state_dir=state)
    stack = Stack(settings, say=lambda _line: None)
    created = state / "temporal.db"
    state.mkdir(mode=0o755)
    try:
        child = stack._spawn(
            "probe", [sys.executable, "-c", f"open({str(created)!r}, 'w').write('x')"]
        )
        assert child.process is not None
        assert child.process.wait(timeout=30) == 0
    finally:
        stack.stop()
    assert mode(state / "logs") == 0o700
    assert mode(state / "logs" / "probe.log") == 0o600
    assert mode(created) == 0o600


def test_dev_state_folder_left_readable_is_tightened(tmp_path: Path) -> None:
    """A state folder and temporal.db left readable by an older paytide are tightened by the
    first step of `paytide dev`'s start."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "temporal.db").write_text("")
    (state / "temporal.db").chmod(0o644)
    prepare_state_dir(Settings(state_dir=state))
    assert mode(state) == 0o700
    assert mode(state / "temporal.db") == 0o600


async def test_smtp_sink_mail_is_private(tmp_path: Path) -> None:
    """The sink's folder is 0700 and each received .eml (a customer's receipt) is 0600."""
    folder = tmp_path / "mail"
    sink = SmtpSink(folder)
    port = free_port()
    server = await sink.serve("127.0.0.1", port)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "hi"
    message.set_content("receipt")

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(message)

    async with server:
        await asyncio.to_thread(send)
    (received,) = sink.messages()
    assert mode(folder) == 0o700
    assert mode(received) == 0o600


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A folder every user may write to, like /tmp (mode 1777)."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


@pytest.mark.parametrize("through_symlink", [False, True], ids=["folder", "symlink"])
def test_a_shared_folder_is_refused_as_state_dir_and_left_as_it_was(
    tmp_path: Path, shared: Path, through_symlink: bool
) -> None:
    """PAYTIDE_STATE_DIR naming a folder shared with other users (or a link to one) stops
    `paytide dev` with a message naming the variable; the folder keeps its mode (1777), never
    chmod'ed 0700 under everyone else who uses it."""
    state = shared
    if through_symlink:
        state = tmp_path / "state"
        state.symlink_to(shared)
    with pytest.raises(StackError, match="PAYTIDE_STATE_DIR"):
        prepare_state_dir(Settings(state_dir=state))
    assert mode(shared) == 0o1777
    assert list(shared.iterdir()) == []


def test_a_ledger_in_a_shared_folder_is_refused(shared: Path) -> None:
    """A SQLite ledger in a folder others may write to (where they could plant its -wal or a
    link) is refused before a file is created."""
    with pytest.raises(SharedFolder, match="PAYTIDE_DATABASE_URL"):
        create_ledger_engine(f"sqlite:///{shared / 'ledger.db'}")
    assert list(shared.iterdir()) == []
    assert mode(shared) == 0o1777
