"""The README's promises that a machine can check."""

from __future__ import annotations

import re
from pathlib import Path

from paytide.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_has_exactly_two_commands() -> None:
    """The Quickstart is two commands: one runs the stack, one runs the tests."""
    commands = _quickstart_commands()
    assert commands == ["python3 tasks.py dev", "python3 tasks.py test"]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run executes the marked command, and it is the Quickstart's second command."""
    marker = re.search(r"<!-- test-command: (.*) -->", README)
    assert marker is not None
    assert marker.group(1) == _quickstart_commands()[1]
    assert "test-command" in (ROOT / ".ci" / "run").read_text()


def test_configuration_table_names_every_setting() -> None:
    """Every setting appears in the README's configuration table."""
    variables = [f"PAYTIDE_{name.upper()}" for name in Settings.model_fields]
    assert [v for v in variables if f"| `{v}` |" not in README] == []


def test_api_examples_send_an_api_key() -> None:
    """Every curl example against the API's payment or review routes, in the README and the
    docs, sends an Authorization header: without one it would answer 401."""
    texts = {"README.md": README} | {
        f"docs/{path.name}": path.read_text() for path in (ROOT / "docs").glob("*.md")
    }
    examples = [
        (name, line)
        for name, text in texts.items()
        for line in text.splitlines()
        if line.lstrip().startswith("curl")
        and re.search(r"127\.0\.0\.1:8000/(payments|reviews)", line)
    ]
    assert examples, "no API examples found: the pattern is stale"
    assert [(n, line) for n, line in examples if "Authorization: Bearer" not in line] == []
