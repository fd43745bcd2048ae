#!/usr/bin/env python3
"""Set up paytide in ./.venv when needed, then run it or test it. Needs only Python 3.11+.

    python3 tasks.py dev     # the whole local stack, then a demo payment (Ctrl-C stops it)
    python3 tasks.py test    # formatting, lint, mypy strict, then every test
    python3 tasks.py lint    # formatting, lint and mypy only

Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".paytide-installed"


def say(message: str) -> None:
    print(f"[paytide] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[paytide] {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _wanted_stamp() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_environment() -> None:
    """Create .venv and install paytide with its dev extras, once per pyproject.toml change."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs under any python3
        fail(f"paytide needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not PYTHON.exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _wanted_stamp():
        return
    say("installing paytide and its dependencies (about a minute the first time)…")
    command = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    command += ["--progress-bar", "on", "-e", f"{ROOT}[dev]"]
    if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:  # noqa: S603
        fail(
            "installing dependencies failed (see pip's message above). Check the network or "
            "the package index, then run the same command again."
        )
    STAMP.write_text(_wanted_stamp())
    say("environment ready")


def run_step(title: str, command: list[str]) -> None:
    say(title)
    result = subprocess.run(command, cwd=ROOT, check=False)  # noqa: S603
    if result.returncode != 0:
        fail(f"{title}: failed (exit {result.returncode}); the output above says where.")


def lint() -> None:
    run_step("ruff format --check", [str(BIN / "ruff"), "format", "--check", "."])
    run_step("ruff check", [str(BIN / "ruff"), "check", "."])
    run_step("mypy (strict)", [str(BIN / "mypy")])


def main(argv: list[str]) -> None:
    task = argv[1] if len(argv) > 1 else "help"
    if task not in {"dev", "test", "lint"}:
        print(__doc__)
        raise SystemExit(0 if task in {"help", "-h", "--help"} else 2)
    ensure_environment()
    if task == "dev":
        # Replace this process, so Ctrl-C and SIGTERM reach the supervisor directly.
        os.execv(BIN / "paytide", [str(BIN / "paytide"), "dev", *argv[2:]])  # noqa: S606
    lint()
    if task == "test":
        run_step("pytest (unit, workflow, integration)", [str(BIN / "pytest"), *argv[2:]])
        say("all checks passed")


if __name__ == "__main__":
    main(sys.argv)
