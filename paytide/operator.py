"""What the operator commands do: find stuck payments, reconcile them now, replay histories.

``paytide stuck``, ``paytide reconcile`` and ``paytide replay`` (``paytide/cli.py``) are thin
wrappers around the functions here, so tests call the same code the terminal runs. Heavy imports
(the worker's workflow list, the ledger) happen inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowHistory,
    WorkflowUpdateFailedError,
)
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkflowRunner

from paytide import search_attributes as sa
from paytide.codec import data_converter as plain_converter
from workflows.contract import CLOSED_STATUSES, PaymentStatus, PaymentView, ReconcileRequest

WORKFLOW_TYPE = "PaymentWorkflow"

# Statuses in which a payment is still in flight: something (a webhook, an operator, a deadline)
# must still happen. Conflicted payments are closed workflows and are not listed.
OPEN_STATUSES: tuple[PaymentStatus, ...] = (
    PaymentStatus.RECEIVED,
    PaymentStatus.RISK_CHECK,
    PaymentStatus.CHARGING,
    PaymentStatus.REQUIRES_ACTION,
    PaymentStatus.AWAITING_WEBHOOK,
    PaymentStatus.IN_REVIEW,
    PaymentStatus.AUTHORIZED,
    PaymentStatus.NEEDS_ATTENTION,
)

Progress: TypeAlias = Callable[[int, int], None]


class OperatorError(Exception):
    """A mistake in what the operator asked for; the message says how to put it right."""


# ---- Durations ------------------------------------------------------------------------------

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> timedelta:
    """``45s``, ``30m``, ``2h``, ``1d``, or a sum of them such as ``1h30m``."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(number + unit for number, unit in parts) != cleaned:
        raise OperatorError(
            f"{text!r} is not a duration: write a whole number and a unit "
            "(s, m, h or d), for example 45s, 30m, 2h, 1d or 1h30m"
        )
    return timedelta(seconds=sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts))


def format_age(age: timedelta) -> str:
    """Rounded down to the two largest units: ``3d4h``, ``2h15m``, ``5m12s``, ``9s``."""
    seconds = max(0, int(age.total_seconds()))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{value}{unit}" for value, unit in units if value][:2]
    return "".join(shown) or "0s"


# ---- Stuck payments -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StuckPayment:
    workflow_id: str
    status: str
    gateway: str | None
    amount_minor: int | None
    currency: str | None
    started_at: datetime

    def amount(self) -> str:
        from paytide.money import UnknownCurrency, format_amount

        if self.amount_minor is None or self.currency is None:
            return "?"
        try:
            return format_amount(self.amount_minor, self.currency)
        except UnknownCurrency:
            return f"{self.amount_minor} {self.currency} (minor units)"

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "gateway": self.gateway,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "started_at": self.started_at.isoformat(),
            "age_seconds": int((now - self.started_at).total_seconds()),
        }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stuck_query(older_than: timedelta, *, now: datetime) -> str:
    """The visibility query for payments still in flight that started before ``now - older_than``.

    The same string works in ``temporal workflow list --query`` and the Web UI."""
    statuses = ", ".join(f"'{status.value}'" for status in OPEN_STATUSES)
    return (
        f"ExecutionStatus = 'Running' AND WorkflowType = '{WORKFLOW_TYPE}' "
        f"AND StartTime < '{_rfc3339(now - older_than)}' "
        f"AND {sa.PAYMENT_STATUS.name} IN ({statuses})"
    )


def _stuck_payment(execution: WorkflowExecution) -> StuckPayment:
    attributes = execution.typed_search_attributes
    return StuckPayment(
        workflow_id=execution.id,
        status=attributes.get(sa.PAYMENT_STATUS) or "?",
        gateway=attributes.get(sa.PAYMENT_GATEWAY),
        amount_minor=attributes.get(sa.AMOUNT_MINOR),
        currency=attributes.get(sa.CURRENCY),
        started_at=execution.start_time,
    )


async def find_stuck(
    client: Client, older_than: timedelta, *, limit: int | None = None, now: datetime | None = None
) -> list[StuckPayment]:
    """Running payments in an open status that started more than ``older_than`` ago, oldest
    first (visibility does not promise an order, so it is sorted here)."""
    query = stuck_query(older_than, now=now or datetime.now(UTC))
    try:
        found = [_stuck_payment(execution) async for execution in client.list_workflows(query)]
    except RPCError as error:
        raise OperatorError(
            f"the visibility query was refused: {error.message}. Are paytide's search "
            "attributes registered on this namespace (docs/operations.md)?"
        ) from None
    found.sort(key=lambda payment: payment.started_at)
    return found[:limit] if limit is not None else found


def format_stuck_table(payments: Sequence[StuckPayment], *, now: datetime) -> str:
    if not payments:
        return "no stuck payments"
    header = ("WORKFLOW ID", "STATUS", "GATEWAY", "AMOUNT", "AGE")
    rows = [
        (
            payment.workflow_id,
            payment.status,
            payment.gateway or "-",
            payment.amount(),
            format_age(now - payment.started_at),
        )
        for payment in payments
    ]
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def format_stuck_json(payments: Sequence[StuckPayment], *, now: datetime) -> str:
    return json.dumps([payment.as_json(now) for payment in payments], indent=2)


# ---- Reconcile now --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReconcileResult:
    """One target's outcome: the payment as it stands afterwards, or why it was not reconciled."""

    target: str
    workflow_id: str | None
    payment: PaymentView | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.payment is not None


@dataclass(frozen=True, kw_only=True)
class Target:
    given: str
    workflow_id: str | None
    error: str | None = None


def resolve_targets(given: Sequence[str], database_url: str) -> list[Target]:
    """Workflow ids pass through; payment ids (``pay_…``) are looked up in the ledger."""
    payment_ids = [value for value in given if value.startswith("pay_")]
    workflow_ids: dict[str, str] = {}
    if payment_ids:
        from ledger.engine import create_ledger_engine, session_factory, transaction
        from ledger.models import Payment

        engine = create_ledger_engine(database_url)
        try:
            with transaction(session_factory(engine)) as session:
                for payment_id in payment_ids:
                    row = session.get(Payment, payment_id)
                    if row is not None:
                        workflow_ids[payment_id] = row.workflow_id
        finally:
            engine.dispose()
    targets = []
    for value in given:
        if not value.startswith("pay_"):
            targets.append(Target(given=value, workflow_id=value))
        elif value in workflow_ids:
            targets.append(Target(given=value, workflow_id=workflow_ids[value]))
        else:
            targets.append(
                Target(
                    given=value,
                    workflow_id=None,
                    error="no such payment in the ledger (check PAYTIDE_DATABASE_URL)",
                )
            )
    return targets


def _update_error(error: Exception) -> str:
    if isinstance(error, WorkflowUpdateFailedError):
        cause = error.cause
        return str(getattr(cause, "message", None) or cause or error)
    if isinstance(error, RPCError):
        return f"{error.message} ({error.status.name.lower()})"
    return str(error)


def _may_mean_ended(error: Exception) -> bool:
    """The refusals a payment that has ended gets: from its workflow, still finishing; from the
    server as the workflow closes ("aborted by closing workflow", "workflow is closing") or
    after ("workflow execution already completed")."""
    if isinstance(error, WorkflowUpdateFailedError):
        cause = error.cause
        return isinstance(cause, ApplicationError) and cause.type == "nothing_to_reconcile"
    return isinstance(error, RPCError) and error.status in (
        RPCStatusCode.NOT_FOUND,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    )


async def _ended(handle: WorkflowHandle[Any, Any]) -> str | None:
    """Why nothing can be done to this payment any more, when it has ended; else None.

    Read from the workflow's description (its PaymentStatus search attribute): one answer whether
    the workflow is still finishing or has closed, and no worker is needed to give it."""
    try:
        description = await handle.describe()
    except RPCError:
        return None
    status = description.typed_search_attributes.get(sa.PAYMENT_STATUS) or "?"
    if status in CLOSED_STATUSES:
        return f"payment has ended: it is {status}; nothing to reconcile"
    if description.status not in (None, WorkflowExecutionStatus.RUNNING):
        closed = description.status.name.lower()
        return (
            f"the payment's workflow has closed ({closed}) while it is {status}: settle it by "
            "hand (docs/operations.md)"
        )
    return None


async def reconcile_one(
    client: Client, target: Target, request: ReconcileRequest
) -> ReconcileResult:
    from workflows.payment import PaymentWorkflow

    if target.workflow_id is None:
        return ReconcileResult(target=target.given, workflow_id=None, error=target.error)
    handle = client.get_workflow_handle_for(PaymentWorkflow.run, target.workflow_id)
    try:
        view = await handle.execute_update(PaymentWorkflow.reconcile_now, request)
    except (WorkflowUpdateFailedError, RPCError) as error:
        reason = (await _ended(handle) if _may_mean_ended(error) else None) or _update_error(error)
        return ReconcileResult(target=target.given, workflow_id=target.workflow_id, error=reason)
    return ReconcileResult(target=target.given, workflow_id=target.workflow_id, payment=view)


async def reconcile_all(
    client: Client,
    targets: Sequence[Target],
    request: ReconcileRequest,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> list[ReconcileResult]:
    """Reconcile each target (a few at a time), reporting progress as each one finishes.
    Results come back in the order of ``targets``."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def run(target: Target) -> ReconcileResult:
        nonlocal done
        async with gate:
            result = await reconcile_one(client, target, request)
        done += 1
        if progress is not None:
            progress(done, len(targets))
        return result

    if progress is not None:
        progress(0, len(targets))
    return list(await asyncio.gather(*(run(target) for target in targets)))


def progress_bar(done: int, total: int, *, width: int = 30) -> str:
    filled = width * done // total if total else width
    return f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total}"


def format_reconcile_summary(results: Sequence[ReconcileResult]) -> str:
    lines = []
    for result in results:
        name = result.target
        if result.workflow_id and result.workflow_id != result.target:
            name = f"{result.target} ({result.workflow_id})"
        if result.payment is not None:
            view = result.payment
            lines.append(f"reconciled  {name}: {view.payment_id} is {view.status.value}")
        else:
            lines.append(f"FAILED      {name}: {result.error}")
    failed = sum(1 for result in results if not result.ok)
    lines.append(f"{len(results) - failed} reconciled, {failed} failed")
    return "\n".join(lines)


# ---- Replay ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReplayFailure:
    workflow_id: str
    run_id: str
    reason: str
    # The history event the current code disagreed with, when the SDK names it.
    event_id: int | None = None

    def describe(self) -> str:
        where = f" at event {self.event_id}" if self.event_id is not None else ""
        return f"{self.workflow_id} (run {self.run_id}){where}: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class ReplayReport:
    replayed: int = 0
    failures: list[ReplayFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.ok:
            return f"{self.replayed} histories replayed, all deterministic"
        lines = [
            f"{len(self.failures)} of {self.replayed} histories do not replay with the current "
            "code (non-deterministic change: guard it with workflow.patched):"
        ]
        lines.extend(f"  {failure.describe()}" for failure in self.failures)
        return "\n".join(lines)


_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_EVENT_ID = re.compile(r"(?:HistoryEvent\(id: |event id |event )(\d+)", re.IGNORECASE)
_QUOTED = re.compile(r"'([^']+)'")


def _failing_event(history: WorkflowHistory, reason: str) -> int | None:
    """The event named in the SDK's message, or else the first scheduled activity or timer
    whose type or id the message quotes ("scheduled event 'charge_v0' does not match")."""
    match = _EVENT_ID.search(reason)
    if match:
        return int(match.group(1))
    quoted = set(_QUOTED.findall(reason))
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name in quoted:
                return int(event.event_id)
        if event.HasField("timer_started_event_attributes"):
            if event.timer_started_event_attributes.timer_id in quoted:
                return int(event.event_id)
    return None


def _failure(history: WorkflowHistory, error: Exception) -> ReplayFailure:
    text = " ".join(str(error).split())
    # Core wraps its sentence in a Rust debug dump; keep the sentence.
    core = _CORE_MESSAGE.search(text)
    reason = core.group(1).replace('\\"', '"') if core else text
    try:
        run_id = history.run_id
    except RuntimeError:
        run_id = "?"
    return ReplayFailure(
        workflow_id=history.workflow_id,
        run_id=run_id,
        reason=reason,
        event_id=_failing_event(history, reason),
    )


async def _as_async(histories: Iterable[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


async def replay_histories(
    histories: Iterable[WorkflowHistory] | AsyncIterator[WorkflowHistory],
    workflows: Sequence[type] | None = None,
    *,
    data_converter: DataConverter | None = None,
    workflow_runner: WorkflowRunner | None = None,
) -> ReplayReport:
    """Replay every history with ``workflows`` (default: the worker's), collecting failures.

    A failure is a workflow task the current code cannot reproduce from the history
    (non-determinism), not a workflow that ended in failure."""
    from temporalio.worker import Replayer

    from worker.assemble import REPLAY_RUNNER, WORKFLOWS

    replayer = Replayer(
        workflows=list(workflows or WORKFLOWS),
        workflow_runner=workflow_runner or REPLAY_RUNNER,
        data_converter=data_converter or plain_converter(None),
    )
    source = histories if isinstance(histories, AsyncIterator) else _as_async(histories)
    replayed = 0
    failures: list[ReplayFailure] = []
    async with replayer.workflow_replay_iterator(source) as results:
        async for result in results:
            replayed += 1
            if result.replay_failure is not None:
                failures.append(_failure(result.history, result.replay_failure))
    return ReplayReport(replayed=replayed, failures=failures)


def load_history_file(path: Path) -> WorkflowHistory:
    """A history exported by ``temporal workflow show --output json``, the Web UI, or the SDK's
    ``WorkflowHistory.to_json()``. The workflow id comes from the start event when the server
    recorded it there, else from the file name."""
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise OperatorError(f"cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise OperatorError(f"{path} is not JSON ({error.msg}, line {error.lineno})") from None
    try:
        history = WorkflowHistory.from_json(path.stem, parsed)
    except (ValueError, TypeError) as error:
        raise OperatorError(
            f"{path} is not a workflow history ({error}); export one with "
            "`temporal workflow show -w ID --output json > FILE`"
        ) from None
    if not history.events:
        raise OperatorError(f"{path} holds no history events")
    started = history.events[0].workflow_execution_started_event_attributes
    if started.workflow_id:
        return WorkflowHistory(started.workflow_id, history.events)
    return history


async def histories_by_id(
    client: Client, workflow_ids: Sequence[str]
) -> AsyncIterator[WorkflowHistory]:
    for workflow_id in workflow_ids:
        try:
            yield await client.get_workflow_handle(workflow_id).fetch_history()
        except RPCError as error:
            raise OperatorError(
                f"cannot fetch the history of {workflow_id}: {error.message}"
            ) from None


async def histories_by_query(client: Client, query: str) -> AsyncIterator[WorkflowHistory]:
    try:
        async for history in client.list_workflows(query).map_histories():
            yield history
    except RPCError as error:
        raise OperatorError(f"the visibility query was refused: {error.message}") from None
