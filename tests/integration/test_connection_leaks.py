"""A psycopg connection left open makes its test fail naming the code that opened it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LEAKING_TEST = """
import psycopg


def open_and_forget_a_connection(url):
    psycopg.connect(url)  # left open on purpose: garbage collected at once


def test_leaks(url=%r):
    open_and_forget_a_connection(url)
"""


def run_leaking_test(directory: Path, url: str, *plugins: str) -> str:
    """Runs the leaking test in its own pytest process (warnings are errors, as in the suite)."""
    (directory / "test_leak_on_purpose.py").write_text(LEAKING_TEST % url)
    options = [arg for plugin in plugins for arg in ("-p", plugin)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            *options,
            "-p",
            "no:asyncio",
            "-q",
            str(directory),
        ],
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return result.stdout


def test_a_leaked_connection_fails_naming_where_it_was_opened(
    postgres_url: str, tmp_path: Path
) -> None:
    """The failure of a test that leaks a psycopg connection shows the leaking function's line."""
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    output = run_leaking_test(tmp_path, url, "tests.support.connection_origins")
    assert "was deleted while still open" in output
    assert "was opened at" in output
    assert "in open_and_forget_a_connection" in output
    assert "psycopg.connect(url)  # left open on purpose" in output
