"""Files and folders only their owner may read: paytide's state (ledger, logs, keys, mail).

Modes are set explicitly, whatever the umask, and tightened on files an older paytide created
readable by everyone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# Umask for processes that create state files themselves (the Temporal dev server, SQLite).
PRIVATE_UMASK = 0o077


class SharedFolder(Exception):
    """A folder other users may write to (world-writable or sticky, like /tmp): they could read,
    replace or link paytide's files there, and tightening it would take it from them."""


def shared_folder_problem(path: Path) -> str | None:
    """Why ``path`` (followed through links) cannot hold private files, or None when it can."""
    mode = path.stat().st_mode
    if mode & (stat.S_IWOTH | stat.S_ISVTX):
        return (
            f"{path} is a folder other users may write to (mode {stat.S_IMODE(mode):o}); "
            "paytide keeps its state in a folder of its own"
        )
    return None


def _tighten(path: Path, mode: int) -> None:
    if path.stat().st_mode & 0o777 != mode:
        path.chmod(mode)


def private_directory(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; an existing one is tightened to 0700,
    unless other users may write to it (SharedFolder): that one is left as it is."""
    if path.exists() and (problem := shared_folder_problem(path)) is not None:
        raise SharedFolder(problem)
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
        folder.chmod(DIRECTORY_MODE)  # mkdir's mode passes through the umask
    _tighten(path, DIRECTORY_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 unless it exists; an existing one is tightened to 0600."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    os.close(descriptor)
    _tighten(path, FILE_MODE)
    return path


def tighten_if_present(*paths: Path) -> None:
    """Tighten files an older paytide (or another program) left readable by everyone."""
    for path in paths:
        if path.exists():
            _tighten(path, DIRECTORY_MODE if path.is_dir() else FILE_MODE)


def open_private_append(path: Path) -> IO[bytes]:
    """``path`` opened for appending bytes, created 0600 (tightened if it existed)."""
    private_file(path)
    return path.open("ab")


def write_private(path: Path, data: bytes) -> None:
    """Replace the content of ``path`` with ``data``; the file is 0600 before a byte is written."""
    private_file(path)
    with path.open("wb") as stream:
        stream.write(data)
