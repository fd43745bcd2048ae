"""The ``paytide`` command line. Each sub-command imports what it runs, and only that.

A failure the user can fix prints what went wrong and what to do, and exits non-zero; it never
prints a bare traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence

from paytide.settings import ConfigError, Settings, load_settings

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A failure explained for the person at the terminal."""


def _say(message: str) -> None:
    print(message, flush=True)


def _settings() -> Settings:
    from paytide.logging import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return settings


# ---- sub-commands ---------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    from paytide.devstack import Stack, StackError, print_urls

    settings = _settings()
    stack = Stack(settings, say=_say)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    # Both, explicitly: a shell starting us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
        print_urls(settings, _say)
        if args.demo:
            _demo_payment(settings)
        while True:
            stack.check_children()
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("\nstopping the local stack…")
        return 0
    except StackError as error:
        _say(f"\npaytide dev: {error}")
        return EXIT_USER_ERROR if not stopping else 0
    finally:
        stack.stop()
        _say("all paytide processes stopped")


def _demo_payment(settings: Settings) -> None:
    import httpx

    api = settings.effective_api_url
    key = f"demo-{uuid.uuid4().hex[:12]}"
    body = {
        "amount": 4200,
        "currency": "USD",
        "customer_id": "cus_demo",
        "payment_method": "pm_sandbox_ok",
        "order_id": f"order_{key}",
        "description": "paytide dev demo payment",
    }
    _say(f"\ntaking a demo payment (Idempotency-Key: {key})")
    created = httpx.post(f"{api}/payments", json=body, headers={"Idempotency-Key": key}, timeout=10)
    payment = created.json()
    _say(f"  POST /payments -> {created.status_code} status={payment.get('status')}")
    if created.status_code >= 400:
        _say(f"  the API refused the demo payment: {json.dumps(payment)}")
        return
    deadline = time.monotonic() + 30
    while payment.get("status") not in {"succeeded", "failed", "blocked", "canceled"}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
        payment = httpx.get(f"{api}/payments/{payment['id']}", timeout=5).json()
    _say(f"  GET /payments/{payment['id']} -> status={payment.get('status')}")
    _say(f"  read it again: curl -s {api}/payments/{payment['id']}")


def cmd_api(_args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_worker(_args: argparse.Namespace) -> int:
    from worker.main import run_worker

    settings = _settings()
    asyncio.run(run_worker(settings))
    return 0


def cmd_sandbox(_args: argparse.Namespace) -> int:
    import uvicorn

    from gateways.sandbox_server.app import create_sandbox_app
    from gateways.sandbox_server.config import SandboxConfig

    settings = _settings()
    config = SandboxConfig(
        api_key=settings.sandbox_api_key.get_secret_value(),
        webhook_url=settings.effective_sandbox_webhook_url,
        webhook_secret=settings.sandbox_webhook_secret.get_secret_value(),
        webhook_delay=settings.sandbox_webhook_delay,
        slow_delay=settings.sandbox_slow_delay,
        flaky_failures=settings.sandbox_flaky_failures,
    )
    uvicorn.run(
        create_sandbox_app(config),
        host=settings.sandbox_host,
        port=settings.sandbox_port,
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from ledger.engine import create_ledger_engine
    from ledger.migrate import current_revision, upgrade

    settings = _settings()
    engine = create_ledger_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        where = engine.url.render_as_string(hide_password=True)
        _say(f"ledger schema at revision {current_revision(engine)} ({where})")
    finally:
        engine.dispose()
    return 0


def cmd_db_current(_args: argparse.Namespace) -> int:
    from ledger.engine import create_ledger_engine
    from ledger.migrate import current_revision, head_revision

    settings = _settings()
    engine = create_ledger_engine(settings.effective_database_url)
    try:
        _say(f"current: {current_revision(engine)}  head: {head_revision()}")
    finally:
        engine.dispose()
    return 0


# ---- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paytide",
        description="paytide: a durable payment orchestrator on Temporal. Settings come from "
        "PAYTIDE_* environment variables (or a .env file); see README.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="run the whole local stack (Temporal dev server, sandbox, worker, API)",
        description="Start the Temporal dev server (persisted in PAYTIDE_STATE_DIR), the "
        "sandbox gateway, the worker and the API as child processes; wait until /readyz says "
        "ready; print the URLs; take a demo payment. Ctrl-C stops everything.",
    )
    dev.add_argument(
        "--no-demo", dest="demo", action="store_false", help="do not take a demo payment"
    )
    dev.set_defaults(run=cmd_dev)

    commands.add_parser(
        "api",
        help="run the HTTP API alone (production)",
        description="Serve the API on PAYTIDE_API_HOST:PAYTIDE_API_PORT against the configured "
        "Temporal cluster and ledger.",
    ).set_defaults(run=cmd_api)
    commands.add_parser(
        "worker",
        help="run the Temporal worker alone (production)",
        description="Poll PAYTIDE_TEMPORAL_TASK_QUEUE on PAYTIDE_TEMPORAL_ADDRESS and run "
        "payment workflows and activities until SIGINT/SIGTERM.",
    ).set_defaults(run=cmd_worker)
    commands.add_parser(
        "sandbox",
        help="run the sandbox card processor (local and test use)",
        description="Serve the sandbox gateway on PAYTIDE_SANDBOX_HOST:PAYTIDE_SANDBOX_PORT; its "
        "webhooks go to PAYTIDE_SANDBOX_WEBHOOK_URL (default: the local API).",
    ).set_defaults(run=cmd_sandbox)

    db = commands.add_parser("db", help="ledger schema management")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "upgrade",
        help="apply ledger migrations up to the newest",
        description="Apply every pending migration to PAYTIDE_DATABASE_URL; safe to repeat.",
    ).set_defaults(run=cmd_db_upgrade)
    db_commands.add_parser(
        "current", help="show the ledger's schema revision and the newest one"
    ).set_defaults(run=cmd_db_current)
    return parser


def _explain(error: BaseException) -> str | None:
    """A sentence for failures people hit in practice; None means 'unexpected'."""
    from sqlalchemy.exc import OperationalError

    from paytide.binaries import MissingBinary

    if isinstance(error, ConfigError | MissingBinary | UserError):
        return str(error)
    if isinstance(error, OperationalError):
        return (
            f"cannot reach the ledger database: {error.orig}. Check PAYTIDE_DATABASE_URL and that "
            "the database server is running."
        )
    if isinstance(error, RuntimeError) and "connect" in str(error).lower():
        return (
            f"cannot reach Temporal: {error}. Check PAYTIDE_TEMPORAL_ADDRESS, or start the local "
            "stack with `paytide dev`."
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        explained = _explain(error)
        if explained is None:
            raise
        print(f"paytide {args.command}: {explained}", file=sys.stderr)
        return EXIT_USER_ERROR
