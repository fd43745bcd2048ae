"""The `temporal server start-dev` command line `paytide dev` runs, per persistence setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from paytide.devstack import temporal_command
from paytide.settings import Settings, TemporalDevDb


def test_file_persistence_keeps_the_database_in_the_state_folder(tmp_path: Path) -> None:
    """By default the dev server writes temporal.db in the state folder, in WAL mode."""
    command = temporal_command(Settings(state_dir=tmp_path))
    at = command.index("--db-filename")
    assert command[at + 1] == str(tmp_path / "temporal.db")
    assert "journal_mode=wal" in command


def test_memory_persistence_passes_no_database_file(tmp_path: Path) -> None:
    """PAYTIDE_TEMPORAL_DEV_DB=memory starts the dev server with no file and no SQLite pragmas."""
    command = temporal_command(Settings(state_dir=tmp_path, temporal_dev_db=TemporalDevDb.MEMORY))
    assert "--db-filename" not in command
    assert "--sqlite-pragma" not in command
    assert "history.transferProcessorMaxPollRPS=1000" in command


def test_the_setting_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """PAYTIDE_TEMPORAL_DEV_DB accepts `memory`."""

    monkeypatch.setenv("PAYTIDE_TEMPORAL_DEV_DB", "memory")
    assert Settings().temporal_dev_db is TemporalDevDb.MEMORY
