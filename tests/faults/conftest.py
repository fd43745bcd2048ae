"""The fault suite: real processes killed, restarted and starved, then the ledger and the sandbox's
charge counts audited. Every test adds one row to a table printed at the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import FaultTable

FAULTS = Path(__file__).parent
TABLE = pytest.StashKey[FaultTable]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tests/conftest.py marks by top-level folder and knows nothing of this one.
    for item in items:
        if Path(str(item.fspath)).is_relative_to(FAULTS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fault_table(request: pytest.FixtureRequest) -> FaultTable:
    """The rows of this run's scenarios, printed by `pytest_terminal_summary`."""
    return request.config.stash.setdefault(TABLE, FaultTable())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    table = config.stash.get(TABLE, None)
    if table is not None and table.rows:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(table.render())
