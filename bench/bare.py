"""The engine baseline: a workflow with the shape of a paytide payment and nothing inside.

Same commands as a payment on the happy path (checked against a real history with
``temporal workflow show``): update-with-start; one local activity for the admission (which
writes ``charging`` too); the charge activity (which writes ``awaiting_webhook`` too); a
webhook timer, when the update returns; one signal; a local activity for ``succeeded``; the
notify activity. What a payment has on top: two search-attribute upserts per workflow task
that changes the status, two patch markers and the work inside each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

TASK_QUEUE = "bench-bare"
# A payment waits this long for its webhook before it asks the gateway (as a timer).
WEBHOOK_WAIT = timedelta(hours=1)
STEP_TIMEOUT = timedelta(seconds=10)


@dataclass(frozen=True, kw_only=True)
class BareInput:
    payment_id: str


@dataclass(frozen=True, kw_only=True)
class BareStep:
    payment_id: str
    step: str


@dataclass(frozen=True, kw_only=True)
class BareInitiate:
    payment_id: str


@dataclass(frozen=True, kw_only=True)
class BareEvent:
    payment_id: str


@activity.defn(name="bare_record")
def record(step: BareStep) -> None:
    """Stands for a ledger write: synchronous, on the worker's thread pool, as paytide's are."""


@activity.defn(name="bare_call")
async def call(step: BareStep) -> None:
    """Stands for the gateway call and the merchant notification (async in paytide)."""


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.init
    def __init__(self, input: BareInput) -> None:
        self._payment_id = input.payment_id
        self._initiated = False
        self._event: BareEvent | None = None

    @workflow.run
    async def run(self, input: BareInput) -> str:
        await self._record("admission")
        await workflow.execute_activity(
            call,
            BareStep(payment_id=self._payment_id, step="charge"),
            start_to_close_timeout=STEP_TIMEOUT,
        )
        self._initiated = True
        try:
            await workflow.wait_condition(lambda: self._event is not None, timeout=WEBHOOK_WAIT)
        except TimeoutError:
            return "timed_out"
        await self._record("succeeded")
        await workflow.execute_activity(
            call,
            BareStep(payment_id=self._payment_id, step="notify"),
            start_to_close_timeout=STEP_TIMEOUT,
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return "succeeded"

    async def _record(self, step: str) -> None:
        await workflow.execute_local_activity(
            record,
            BareStep(payment_id=self._payment_id, step=step),
            start_to_close_timeout=STEP_TIMEOUT,
        )

    @workflow.update
    async def initiate(self, request: BareInitiate) -> str:
        await workflow.wait_condition(lambda: self._initiated)
        return "awaiting_webhook"

    @workflow.signal
    def gateway_event(self, event: BareEvent) -> None:
        self._event = event
