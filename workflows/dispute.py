"""DisputeWorkflow: one dispute (chargeback), from the gateway's first word to its outcome.

opened (ledger: dispute row, payment disputed; merchant and operators told)
  → a reminder to the merchant before the evidence is due
  → won (the payment gets its status back) | lost (payment dispute_lost); merchant and
    operators told

The workflow id is ``dispute:{gateway}:{gateway dispute id}`` and every webhook reaches it by
signal-with-start, so a re-delivered or duplicated webhook never opens a second one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.retries import LEDGER_RETRY, NOTIFY_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.dispute_ledger import DisputeLedgerActivities
    from activities.notify import NotificationActivities
    from workflows.contract import FINAL_DISPUTE_STATES, GatewayEvent
    from workflows.dispute_contract import (
        DisputeChange,
        DisputeInput,
        DisputeNotification,
        DisputeView,
    )
    from workflows.events import CHANNELS, Channel, EventType

REMINDER = EventType.DISPUTE_EVIDENCE_REMINDER


@workflow.defn(name="DisputeWorkflow")
class DisputeWorkflow:
    @workflow.init
    def __init__(self, input: DisputeInput) -> None:
        self._input = input
        self._settings = input.settings
        self._pending: list[GatewayEvent] = []
        self._seen: set[str] = set()
        self._view: DisputeView | None = None
        # The due date the merchant was last reminded of; a new due date earns a new reminder.
        self._reminded_for: str | None = None

    @workflow.run
    async def run(self, input: DisputeInput) -> DisputeView | None:
        while not self._decided():
            wake = self._next_wake()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending),
                    timeout=wake,
                    timeout_summary="evidence reminder"
                    if self._reminder_due_at()
                    else "still open",
                )
            except TimeoutError:
                await self._on_timer()
                continue
            while self._pending:
                await self._apply(self._pending.pop(0))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view

    @workflow.signal
    def dispute_event(self, event: GatewayEvent) -> None:
        if event.event_id in self._seen or event.dispute is None:
            return
        if event.provider is not self._input.provider:
            # The dispute is one gateway's: another's event cannot move it.
            workflow.logger.warning(
                "ignored %s event %s: the dispute is %s's",
                event.provider.value,
                event.event_id,
                self._input.provider.value,
                extra=self._extra(),
            )
            return
        self._seen.add(event.event_id)
        self._pending.append(event)

    @workflow.query
    def status(self) -> DisputeView | None:
        return self._view

    # ---- Steps ----------------------------------------------------------------------------

    def _decided(self) -> bool:
        return self._view is not None and self._view.status in FINAL_DISPUTE_STATES

    def _reminder_due_at(self) -> datetime | None:
        view = self._view
        if view is None or not view.evidence_due_by or self._reminded_for == view.evidence_due_by:
            return None
        due = datetime.fromisoformat(view.evidence_due_by)
        return due - timedelta(seconds=self._settings.reminder_before_seconds)

    def _next_wake(self) -> timedelta | None:
        """How long to wait for the next event before a timer's work is due."""
        if self._view is None:
            return None  # signal-with-start: the first event is on its way
        remind_at = self._reminder_due_at()
        if remind_at is not None and self._view.evidence_due_by:
            if datetime.fromisoformat(self._view.evidence_due_by) <= workflow.now():
                # Already past due: a reminder could not help any more.
                self._reminded_for = self._view.evidence_due_by
                return timedelta(seconds=self._settings.max_open_seconds)
            # A reminder already late (a short evidence window) goes out at once.
            return max(remind_at - workflow.now(), timedelta(milliseconds=1))
        return timedelta(seconds=self._settings.max_open_seconds)

    async def _on_timer(self) -> None:
        view = self._view
        assert view is not None
        if self._reminder_due_at() is not None:
            self._reminded_for = view.evidence_due_by
            await self._tell_merchant(view, REMINDER)
            return
        # Open far longer than networks take: operators should look (and it keeps waiting).
        await self._tell_operators(view, EventType.DISPUTE_STILL_OPEN)

    async def _apply(self, event: GatewayEvent) -> None:
        recorded = await workflow.execute_local_activity_method(
            DisputeLedgerActivities.record_change,
            DisputeChange(
                dispute_id=self._input.dispute_id,
                workflow_id=workflow.info().workflow_id,
                event=event,
                at=workflow.now().isoformat(),
            ),
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LEDGER_RETRY,
            summary=f"ledger: dispute {event.event_type}",
        )
        view = self._view = recorded.dispute
        workflow.set_current_details(
            f"**{view.status.value}** · payment {view.payment_id or 'unknown'}"
            + (f" · evidence due {view.evidence_due_by}" if view.evidence_due_by else "")
        )
        if not recorded.changed:
            return  # a duplicate, or a run started by a webhook about a decided dispute
        if recorded.created:
            kind = EventType.DISPUTE_CREATED
        elif view.status in FINAL_DISPUTE_STATES:
            kind = EventType(f"dispute.{view.status.value}")  # dispute.won, dispute.lost
        else:
            kind = EventType.DISPUTE_UPDATED
        workflow.logger.info(
            "dispute %s is %s", view.dispute_reference, view.status.value, extra=self._extra()
        )
        await self._tell_merchant(view, kind)
        if Channel.OPERATORS in CHANNELS[kind]:
            await self._tell_operators(view, kind)

    def _extra(self) -> dict[str, str]:
        return {"dispute_id": self._input.dispute_id}

    async def _tell_merchant(self, view: DisputeView, kind: str) -> None:
        try:
            await workflow.execute_activity_method(
                NotificationActivities.notify_merchant_dispute,
                DisputeNotification(dispute=view, event_type=kind),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"notify merchant: {kind}",
            )
        except ActivityError as error:
            # Recorded by the activity on each try; the dispute goes on regardless.
            workflow.logger.warning(
                "dispute notification failed: %s", error.cause or error, extra=self._extra()
            )

    async def _tell_operators(self, view: DisputeView, kind: str) -> None:
        try:
            await workflow.execute_activity_method(
                NotificationActivities.alert_operators_dispute,
                DisputeNotification(dispute=view, event_type=kind),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=NOTIFY_RETRY,
                summary=f"alert operators: {kind}",
            )
        except ActivityError as error:
            workflow.logger.warning(
                "dispute alert failed: %s", error.cause or error, extra=self._extra()
            )
