"""The ``paytide`` command line. Each sub-command imports what it runs, and only that.

A failure the user can fix prints what went wrong and what to do, and exits non-zero; it never
prints a bare traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paytide.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

    from sqlmodel import Session
    from temporalio.client import WorkflowHistory

    from paytide.api_keys import KeyMode

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
    from paytide.devstack import Stack, StackError, demo_api_key, print_urls

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
        api_key = demo_api_key(settings)
        print_urls(settings, _say, api_key)
        if args.demo and api_key:
            _demo_payment(settings, api_key)
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


def _demo_payment(settings: Settings, api_key: str) -> None:
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
        # Its receipt lands in the dev SMTP sink's folder (printed above).
        "customer_email": "demo.customer@example.com",
    }
    _say(f"\ntaking a demo payment (Idempotency-Key: {key})")
    auth = {"Authorization": f"Bearer {api_key}"}
    created = httpx.post(
        f"{api}/payments", json=body, headers={**auth, "Idempotency-Key": key}, timeout=10
    )
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
        payment = httpx.get(f"{api}/payments/{payment['id']}", headers=auth, timeout=5).json()
    _say(f"  GET /payments/{payment['id']} -> status={payment.get('status')}")
    _say(
        f"  read it again: curl -s -H 'Authorization: Bearer {api_key}' "
        f"{api}/payments/{payment['id']}"
    )


def cmd_api(_args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.server import server_config

    settings = _settings()
    server = uvicorn.Server(server_config(create_app(settings), settings))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    # uvicorn.run's convention: 3 when the server never started (its lifespan failed).
    return 0 if server.started else 3


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


def cmd_temporal_setup(_args: argparse.Namespace) -> int:
    from paytide.temporal import connect
    from paytide.temporal_setup import SetupConflict, register_search_attributes

    settings = _settings()

    async def setup() -> int:
        client = await connect(settings)
        added = await register_search_attributes(client, _say)
        _say(f"done: {len(added)} added" if added else "done: nothing to add")
        return 0

    _say(
        f"registering search attributes in namespace {settings.temporal_namespace!r} "
        f"on {settings.temporal_address}"
    )
    try:
        return _run_async(setup())
    except SetupConflict as error:
        raise UserError(str(error)) from None


def cmd_customer_key(args: argparse.Namespace) -> int:
    from paytide.search_attributes import customer_search_value

    settings = _settings()
    value = customer_search_value(args.customer_id, settings.search_hash_key.get_secret_value())
    _say(value)
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


# ---- operator commands (logic in paytide/operator.py) ---------------------------------------


def _duration(text: str) -> timedelta:
    from paytide.operator import OperatorError, parse_duration

    try:
        return parse_duration(text)
    except OperatorError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _text(value: str) -> str:
    """An argument that ends up in the ledger or in a query: printable text only."""
    from paytide.text import RULE, refused_character

    found = refused_character(value)
    if found is not None:
        raise argparse.ArgumentTypeError(f"{RULE}; found {found}: remove or replace it")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _operator_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "operator"


def _run_async(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run`` for commands that open a Temporal client. The client's objects are freed
    here, before the interpreter shuts down: were they freed during shutdown, the SDK's Rust
    threads would release Python objects too late, and the process aborts (SIGABRT)."""
    try:
        return asyncio.run(main)
    finally:
        gc.collect()


def cmd_stuck(args: argparse.Namespace) -> int:
    from paytide.operator import OperatorError, find_stuck, format_stuck_json, format_stuck_table
    from paytide.temporal import connect

    async def run() -> int:
        client = await connect(_settings())
        now = datetime.now(UTC)
        found = await find_stuck(client, args.older_than, limit=args.limit, now=now)
        show = format_stuck_json if args.json else format_stuck_table
        _say(show(found, now=now))
        return 0

    try:
        return _run_async(run())
    except OperatorError as error:
        raise UserError(str(error)) from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    from paytide.operator import (
        OperatorError,
        Target,
        find_stuck,
        format_reconcile_summary,
        progress_bar,
        reconcile_all,
        resolve_targets,
    )
    from paytide.temporal import connect
    from workflows.contract import ReconcileRequest

    if bool(args.targets) == (args.stuck_for is not None):
        raise UserError("name the payments to reconcile (IDs) or pass --stuck-for, not both")
    settings = _settings()

    def draw(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(progress_bar(done, total), end=end, file=sys.stderr, flush=True)

    async def run() -> int:
        client = await connect(settings)
        targets: list[Target]
        if args.stuck_for is not None:
            stuck = await find_stuck(client, args.stuck_for, limit=args.limit)
            targets = [Target(given=p.workflow_id, workflow_id=p.workflow_id) for p in stuck]
            if not targets:
                _say("no stuck payments: nothing to reconcile")
                return 0
        else:
            targets = resolve_targets(args.targets, settings.effective_database_url)
        request = ReconcileRequest(operator=args.operator, reason=args.reason)
        results = await reconcile_all(client, targets, request, progress=draw)
        _say(format_reconcile_summary(results))
        return 0 if all(result.ok for result in results) else 1

    try:
        return _run_async(run())
    except OperatorError as error:
        raise UserError(str(error)) from None


def cmd_replay(args: argparse.Namespace) -> int:
    from paytide.operator import (
        OperatorError,
        histories_by_id,
        histories_by_query,
        load_history_file,
        replay_histories,
    )
    from paytide.temporal import connect

    sources = sum(bool(source) for source in (args.workflow_ids, args.query, args.files))
    if sources != 1:
        raise UserError("give exactly one of: --workflow-id ID..., --query QUERY, or FILE...")
    settings = _settings()

    async def run() -> int:
        # Files need no server, but the same data converter (and codec) as the worker.
        client = await connect(settings, lazy=bool(args.files))
        if args.files:
            histories: Iterable[WorkflowHistory] | AsyncIterator[WorkflowHistory] = [
                load_history_file(Path(name)) for name in args.files
            ]
        elif args.workflow_ids:
            histories = histories_by_id(client, args.workflow_ids)
        else:
            histories = histories_by_query(client, args.query)
        report = await replay_histories(histories, data_converter=client.data_converter)
        if report.replayed == 0:
            raise UserError("no histories matched: nothing was replayed")
        _say(report.summary())
        return 0 if report.ok else 1

    try:
        return _run_async(run())
    except OperatorError as error:
        raise UserError(str(error)) from None


# ---- merchants and API keys (ledger side in ledger/merchants.py) ----------------------------


def _since(text: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given) or a duration back from now (2h, 1d)."""
    try:
        return datetime.now(UTC) - _duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time (2026-11-29T14:00:00Z) nor a duration (2h, 1d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cmd_notifications_redrive(args: argparse.Namespace) -> int:
    from temporalio.service import RPCError

    from ledger import webhook_deliveries
    from ledger.engine import create_ledger_engine, session_factory, transaction
    from paytide.operator import progress_bar
    from paytide.temporal import connect
    from paytide.webhook_dispatch import NotRedrivable, redrive

    settings = _settings()
    engine = create_ledger_engine(settings.effective_database_url)
    sessions = session_factory(engine)

    async def run() -> int:
        with transaction(sessions) as session:
            letters = webhook_deliveries.failed_since(
                session, args.since, merchant_id=args.merchant
            )
        if args.limit is not None:
            letters = letters[: args.limit]
        if not letters:
            _say(f"no failed deliveries since {args.since.isoformat()}: nothing to re-drive")
            return 0
        _say(f"re-driving {len(letters)} failed deliveries since {args.since.isoformat()}")
        if args.dry_run:
            for letter in letters:
                _say(f"would re-drive {letter.id} ({letter.event_type} to {letter.endpoint_id})")
            return 0
        client = await connect(settings)
        problems: list[str] = []
        for done, letter in enumerate(letters, start=1):
            try:
                await redrive(client, settings, sessions, letter.id)
            except NotRedrivable as refused:
                # Re-driven or delivered since it was listed: nothing is lost.
                problems.append(f"skipped {letter.id}: it is {refused.status or 'gone'} now")
            except RPCError as error:
                problems.append(f"FAILED  {letter.id}: Temporal refused the start ({error})")
            print(progress_bar(done, len(letters)), end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        for line in problems:
            _say(line)
        failed = sum(1 for line in problems if line.startswith("FAILED"))
        _say(
            f"{len(letters) - len(problems)} re-driven, {len(problems) - failed} skipped, "
            f"{failed} failed"
        )
        return 1 if failed else 0

    try:
        return _run_async(run())
    finally:
        engine.dispose()


@contextlib.contextmanager
def _ledger_session(settings: Settings) -> Iterator[Session]:
    from sqlalchemy import inspect

    from ledger.engine import create_ledger_engine, session_factory, transaction

    engine = create_ledger_engine(settings.effective_database_url)
    try:
        if not inspect(engine).has_table("api_keys"):
            raise UserError("the ledger has no merchants table yet: run `paytide db upgrade` first")
        with transaction(session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _key_mode(settings: Settings) -> KeyMode:
    from paytide.api_keys import KeyMode
    from paytide.settings import Environment

    production = settings.environment is Environment.PRODUCTION
    return KeyMode.LIVE if production else KeyMode.TEST


def _merchant_command(run: Callable[[Session, Settings], None]) -> int:
    from ledger.merchants import MerchantError

    settings = _settings()
    try:
        with _ledger_session(settings) as session:
            run(session, settings)
    except MerchantError as error:
        raise UserError(str(error)) from None
    return 0


def _show_new_key(text: str) -> None:
    _say(f"api key: {text}")
    _say(
        "Store it now: this is the only time it is shown. paytide keeps only a salted hash of it. "
        "Send it as `Authorization: Bearer <key>`."
    )


def cmd_merchants_create(args: argparse.Namespace) -> int:
    from ledger.merchants import create_merchant, issue_key
    from paytide.api_keys import Role

    def run(session: Session, settings: Settings) -> None:
        merchant_id = args.merchant_id or f"mer_{uuid.uuid4().hex[:12]}"
        merchant = create_merchant(
            session, merchant_id=merchant_id, name=args.name, role=Role(args.role)
        )
        issued = issue_key(session, merchant.id, _key_mode(settings))
        _say(f"created merchant {merchant.id} ({merchant.name!r}, role {merchant.role})")
        _show_new_key(issued.text)

    return _merchant_command(run)


def cmd_merchants_list(_args: argparse.Namespace) -> int:
    from ledger.merchants import list_merchants

    def run(session: Session, _settings: Settings) -> None:
        rows = list_merchants(session)
        if not rows:
            _say("no merchants yet: `paytide merchants create NAME` adds one")
            return
        _say(f"{'ID':<42} {'ROLE':<9} NAME")
        for row in rows:
            _say(f"{row.id:<42} {row.role:<9} {row.name}")

    return _merchant_command(run)


def cmd_keys_list(args: argparse.Namespace) -> int:
    from ledger.merchants import aware, list_keys, state_of

    def run(session: Session, _settings: Settings) -> None:
        now = datetime.now(UTC)
        rows = list_keys(session, args.merchant_id)
        if not rows:
            _say(f"merchant {args.merchant_id} has no API keys")
            return
        _say(f"{'PREFIX':<26} {'STATE':<9} {'CREATED':<20} EXPIRES")
        for row in rows:
            created = aware(row.created_at)
            expires = aware(row.expires_at)
            state = state_of(row.expires_at, row.revoked_at, now).value
            _say(
                f"{row.prefix:<26} {state:<9} {_moment(created):<20} "
                f"{_moment(expires) if expires else '-'}"
            )

    return _merchant_command(run)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from ledger.merchants import issue_key

    def run(session: Session, settings: Settings) -> None:
        issued = issue_key(session, args.merchant_id, _key_mode(settings))
        _say(f"new API key {issued.key.prefix} for merchant {args.merchant_id}")
        _show_new_key(issued.text)

    return _merchant_command(run)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from ledger.merchants import aware, rotate_key

    def run(session: Session, settings: Settings) -> None:
        overlap: timedelta = args.overlap
        if overlap is None:  # not `or`: an overlap of 0s is falsy and means "expire now"
            overlap = timedelta(seconds=settings.api_key_rotation_overlap)
        old, issued = rotate_key(session, args.key, overlap=overlap, mode=_key_mode(settings))
        expires = aware(old.expires_at)
        _say(
            f"rotated {old.prefix}: it keeps working until {_moment(expires)} "
            f"(then API answers 401 api_key_expired)"
        )
        _show_new_key(issued.text)

    return _merchant_command(run)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from ledger.merchants import revoke_key

    def run(session: Session, settings: Settings) -> None:
        key = revoke_key(session, args.key)
        _say(
            f"revoked {key.prefix}: refused with 401 api_key_revoked within "
            f"{settings.api_key_cache_seconds:g}s (PAYTIDE_API_KEY_CACHE_SECONDS)"
        )

    return _merchant_command(run)


def _moment(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


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

    stuck = commands.add_parser(
        "stuck",
        help="list payments that have been in flight for too long",
        description="Ask Temporal's visibility store for running PaymentWorkflows whose "
        "PaymentStatus is still open (received, risk_check, charging, requires_action, "
        "awaiting_webhook, in_review, authorized, needs_attention) and that started more than "
        "--older-than ago. Prints workflow id, status, gateway, amount and age, oldest first. "
        "The same query works in `temporal workflow list --query` and the Web UI.",
    )
    stuck.add_argument(
        "--older-than",
        type=_duration,
        default=_duration("30m"),
        metavar="DURATION",
        help="minimum age, e.g. 45s, 30m, 2h, 1d (default: 30m)",
    )
    stuck.add_argument("--limit", type=_positive, metavar="N", help="show at most N payments")
    stuck.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stuck.set_defaults(run=cmd_stuck)

    reconcile = commands.add_parser(
        "reconcile",
        help="ask the gateway about payments now, instead of at their next deadline",
        description="Send the reconcile_now update to each payment: the workflow asks its "
        "gateway for the charge's state at once and acts on the answer, exactly as at a "
        "webhook deadline. The operator's name and reason go into the payment's ledger. Name "
        "payments by workflow id or payment id (pay_..., looked up in the ledger), or pass "
        "--stuck-for to reconcile every payment `paytide stuck` would list. Exits 1 if any "
        "payment could not be reconciled (the summary says why).",
    )
    reconcile.add_argument(
        "targets",
        nargs="*",
        type=_text,
        metavar="ID",
        help="workflow ids or payment ids (pay_...)",
    )
    reconcile.add_argument(
        "--stuck-for",
        type=_duration,
        metavar="DURATION",
        help="reconcile the payments in flight for longer than this, e.g. 30m",
    )
    reconcile.add_argument(
        "--limit", type=_positive, metavar="N", help="with --stuck-for: at most N payments"
    )
    reconcile.add_argument(
        "--operator",
        type=_text,
        default=_operator_name(),
        help="who asks (default: your login name)",
    )
    reconcile.add_argument(
        "--reason",
        type=_text,
        default="reconciled from the paytide command line",
        help="why, recorded in the ledger",
    )
    reconcile.set_defaults(run=cmd_reconcile)

    replay = commands.add_parser(
        "replay",
        help="check that the current workflow code still replays recorded histories",
        description="Replay payment histories with the workflow code in this checkout, without "
        "running any activity. Histories come from Temporal (--workflow-id, --query) or from "
        "JSON files exported with `temporal workflow show -w ID --output json` or the SDK's "
        "WorkflowHistory.to_json(). Exits 1 and names each workflow (and the event) whose "
        "history the code can no longer reproduce: such a change needs workflow.patched.",
    )
    replay.add_argument(
        "--workflow-id",
        dest="workflow_ids",
        nargs="+",
        default=[],
        metavar="ID",
        help="fetch these workflows' histories from Temporal",
    )
    replay.add_argument(
        "--query", metavar="QUERY", help="replay every workflow a visibility query matches"
    )
    replay.add_argument("files", nargs="*", metavar="FILE", help="exported history JSON files")
    replay.set_defaults(run=cmd_replay)

    merchants = commands.add_parser(
        "merchants",
        help="merchants and their API keys",
        description="Create merchants and manage their API keys in the ledger "
        "(PAYTIDE_DATABASE_URL). A key is printed once, when it is issued; the ledger keeps "
        "only a salted hash of it. See docs/security.md.",
    )
    merchant_commands = merchants.add_subparsers(
        dest="merchants_command", required=True, metavar="ACTION"
    )
    create = merchant_commands.add_parser(
        "create",
        help="add a merchant and print its first API key (once)",
        description="Add a merchant and issue its first API key, printed once. Role operator "
        "adds the review endpoints (GET /reviews, POST /payments/{id}/review) across every "
        "merchant.",
    )
    create.add_argument("name", type=_text, metavar="NAME", help="the merchant's display name")
    create.add_argument(
        "--id",
        dest="merchant_id",
        type=_text,
        metavar="ID",
        help="merchant id used in payments and workflow ids (default: mer_<random>); "
        "lower-case letters, digits, _ and -, at most 40 (never ':', the workflow ids' separator)",
    )
    create.add_argument(
        "--role",
        choices=["merchant", "operator"],
        default="merchant",
        help="merchant (default) or operator",
    )
    create.set_defaults(run=cmd_merchants_create)
    merchant_commands.add_parser(
        "list", help="list merchants", description="List every merchant: id, role, name."
    ).set_defaults(run=cmd_merchants_list)

    keys = merchant_commands.add_parser("keys", help="list, issue, rotate and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_list = key_commands.add_parser(
        "list",
        help="list a merchant's API keys by prefix",
        description="List a merchant's keys by their public prefix (pt_<mode>_<id>), with "
        "their state: active, expiring (rotated out, still accepted), expired or revoked. "
        "Secrets are never shown again.",
    )
    keys_list.add_argument("merchant_id", type=_text, metavar="MERCHANT_ID")
    keys_list.set_defaults(run=cmd_keys_list)
    keys_create = key_commands.add_parser(
        "create",
        help="issue another API key for a merchant (printed once)",
        description="Issue an additional key for MERCHANT_ID; the new key is printed once.",
    )
    keys_create.add_argument("merchant_id", type=_text, metavar="MERCHANT_ID")
    keys_create.set_defaults(run=cmd_keys_create)
    rotate = key_commands.add_parser(
        "rotate",
        help="issue a successor key; the old one keeps working for an overlap window",
        description="Issue a new key for the same merchant (printed once). The old key is "
        "still accepted for --overlap (default PAYTIDE_API_KEY_ROTATION_OVERLAP), then refused "
        "with 401 api_key_expired. Rotating a key twice never lengthens its life.",
    )
    rotate.add_argument(
        "key", type=_text, metavar="KEY", help="the key's prefix (pt_..._<id>) or id"
    )
    rotate.add_argument(
        "--overlap",
        type=_duration,
        metavar="DURATION",
        help="how long the old key still works, e.g. 0s, 30m, 24h",
    )
    rotate.set_defaults(run=cmd_keys_rotate)
    revoke = key_commands.add_parser(
        "revoke",
        help="refuse a key from now on",
        description="Revoke a key: requests with it get 401 api_key_revoked, in every API "
        "process within PAYTIDE_API_KEY_CACHE_SECONDS.",
    )
    revoke.add_argument(
        "key", type=_text, metavar="KEY", help="the key's prefix (pt_..._<id>) or id"
    )
    revoke.set_defaults(run=cmd_keys_revoke)

    notifications = commands.add_parser(
        "notifications",
        help="merchants' webhook deliveries",
        description="Operate the deliveries to merchants' webhook endpoints (docs/webhooks.md).",
    )
    notification_commands = notifications.add_subparsers(
        dest="notifications_command", required=True, metavar="ACTION"
    )
    redrive = notification_commands.add_parser(
        "redrive",
        help="re-drive failed deliveries (dead letters) in bulk",
        description="Find the deliveries that exhausted their retry window (status failed) "
        "created since --since, and start each one again with a fresh window, oldest first. "
        "The receiver gets the same event id, so it can drop a copy it already has. Needs "
        "the ledger (PAYTIDE_DATABASE_URL) and Temporal. Exits 1 if any could not be started.",
    )
    redrive.add_argument(
        "--since",
        type=_since,
        required=True,
        metavar="WHEN",
        help="ISO 8601 time (UTC if no offset) or a duration back from now, e.g. 2h, 1d",
    )
    redrive.add_argument(
        "--merchant", type=_text, metavar="ID", help="only this merchant's deliveries"
    )
    redrive.add_argument("--limit", type=_positive, metavar="N", help="at most N deliveries")
    redrive.add_argument(
        "--dry-run", action="store_true", help="list what would be re-driven and stop"
    )
    redrive.set_defaults(run=cmd_notifications_redrive)

    temporal = commands.add_parser("temporal", help="Temporal cluster set-up")
    temporal_commands = temporal.add_subparsers(dest="temporal_command", required=True)
    temporal_commands.add_parser(
        "setup",
        help="register paytide's search attributes on the configured cluster (idempotent)",
        description="Register PaymentStatus, PaymentGateway, MerchantId, CustomerId, "
        "AmountMinor, Currency and RiskScore in PAYTIDE_TEMPORAL_NAMESPACE on "
        "PAYTIDE_TEMPORAL_ADDRESS. Attributes already present with the right type are left "
        "alone; one present with another type stops the command with an explanation.",
    ).set_defaults(run=cmd_temporal_setup)

    customer_key = commands.add_parser(
        "customer-key",
        help="print the CustomerId search-attribute value of a customer id",
        description="Search attributes are indexed in clear, so the CustomerId attribute holds "
        "a keyed hash (PAYTIDE_SEARCH_HASH_KEY) of the customer id. Use the value printed here "
        "in a visibility query: temporal workflow list --query \"CustomerId='<value>'\".",
    )
    customer_key.add_argument("customer_id", type=_text)
    customer_key.set_defaults(run=cmd_customer_key)

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
