"""Name where a leaked psycopg connection was opened.

psycopg warns ``ResourceWarning: <psycopg.Connection object at 0x…> was deleted while still open``
when a connection is garbage collected unclosed: often minutes and several tests after the code
that leaked it. The suite turns the warning into an error, but neither the warning nor pytest says
where the connection came from, and tracemalloc cannot either (the unraisable object pytest asks
it about is psycopg's ``__del__`` function, allocated when psycopg was imported). So every
connection records, when it is opened, the call stack that opened it (only then, once per
connection), and the failure gets that stack as a note.

A pytest plugin: ``tests/conftest.py`` loads it for the suite; ``-p
tests.support.connection_origins`` loads it anywhere else.
"""

from __future__ import annotations

import sys
import sysconfig
import traceback
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

import pytest
from psycopg import BaseConnection

STDLIB = sysconfig.get_paths()["stdlib"]
ATTRIBUTE = "_paytide_opened_at"
UnraisableHook = Callable[[Any], object]


def record_origins() -> None:
    """From now on, each psycopg connection remembers the stack that opened it (idempotent)."""
    original = BaseConnection.__init__
    if getattr(original, "_records_origin", False):
        return

    def __init__(self: BaseConnection[Any], *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        setattr(self, ATTRIBUTE, _stack(sys._getframe(1)))

    __init__._records_origin = True  # type: ignore[attr-defined]
    BaseConnection.__init__ = __init__  # type: ignore[method-assign]


def _stack(frame: FrameType | None) -> traceback.StackSummary:
    """The stack from ``frame`` outwards, outermost call first; source lines read when shown."""
    frames: list[tuple[FrameType, int]] = []
    while frame is not None:
        frames.append((frame, frame.f_lineno))
        frame = frame.f_back
    return traceback.StackSummary.extract(reversed(frames), lookup_lines=False)


def opened_at(connection: object) -> str | None:
    """The recorded stack, innermost call last, without library frames (all when only those)."""
    stack: traceback.StackSummary | None = getattr(connection, ATTRIBUTE, None)
    if stack is None:
        return None
    ours = [frame for frame in stack if not _is_library(frame.filename)]
    shown = traceback.StackSummary.from_list(ours or list(stack))
    left_out = len(stack) - len(shown)
    note = f"{connection!r} was opened at (innermost call last"
    note += f"; {left_out} frames of the standard library and packages left out):\n"
    return note + "".join(shown.format())


def _is_library(filename: str) -> bool:
    """Python's own files, the virtualenv's (packages, scripts) and frozen modules."""
    return filename.startswith(("<", STDLIB, sys.prefix, sys.base_prefix))


def _leaked_connection(tb: TracebackType | None) -> object | None:
    """The connection whose ``__del__`` raised, when that is what this traceback is."""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "__del__" and isinstance(
            tb.tb_frame.f_locals.get("self"), BaseConnection
        ):
            return tb.tb_frame.f_locals["self"]
        tb = tb.tb_next
    return None


def naming_origins(hook: UnraisableHook) -> UnraisableHook:
    """``sys.unraisablehook`` wrapper: a leaked connection's exception gets where it was opened."""

    def unraisablehook(unraisable: Any) -> object:
        connection = _leaked_connection(unraisable.exc_traceback)
        if connection is not None and unraisable.exc_value is not None:
            note = opened_at(connection)
            if note is not None:
                unraisable.exc_value.add_note(note)
        return hook(unraisable)

    return unraisablehook


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Record origins from the start; wrap the unraisable hook pytest has just installed (it turns
    the warning into the test's failure, so it must be in place first: hence trylast)."""
    record_origins()
    sys.unraisablehook = naming_origins(sys.unraisablehook)
