"""Run one scenario on the time-skipping test server, and collect what happened.

Time moves only while the driver waits for a workflow's result. Whenever a gateway call has
answered and the plan has something for that moment (a webhook due, a customer finishing 3-D
Secure, a cancel, a capture, a worker restart), the gateway locks time before answering; the
driver waits until every workflow has done all it can (no workflow task or activity in flight),
acts, and unlocks. So the same seed meets the same states in the same order, and reproduces.

The phases of a seed:

1. start the payments one by one, each admitted and settled before the next (risk rules read
   the customer's earlier payments);
2. let time run until every payment workflow ends;
3. after the end: late webhooks and actions, refunds (started together, so they race), then the
   dispute, each run to its end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.admission import AdmissionActivities
from activities.dispute_ledger import DisputeLedgerActivities
from activities.gateway import GatewayActivities
from activities.ledger import LedgerActivities
from activities.refund_ledger import RefundLedgerActivities
from activities.risk import RiskActivities
from api.idempotency import dispute_id, dispute_workflow_id
from ledger.engine import SessionFactory
from ledger.models import DisputeRecord, Payment, PaymentEvent, RefundRecord
from tests.simulation.scenario import Action, PaymentPlan, Scenario
from tests.simulation.world import END, Life, PaymentLife, RefundLife, SimGateway, World
from tests.workflow.harness import Notifier
from tests.workflow.refund_harness import RefundNotifier
from workflows.contract import (
    CancelPayment,
    CapturePayment,
    DisputeNotice,
    DisputeState,
    GatewayEvent,
    GatewayName,
    PaymentInput,
    PaymentRequest,
    ReconcileRequest,
    ReviewDecision,
    ReviewVerdict,
    RiskAssessment,
    RiskFactor,
    WorkflowSettings,
)
from workflows.dispute import DisputeWorkflow
from workflows.dispute_contract import DisputeInput
from workflows.payment import PaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.refund_contract import RefundInput, RefundRequestInput, RefundSettings

MERCHANT = "sim"
# Short clocks, so a seed's whole life is a few virtual hours.
SETTINGS = WorkflowSettings(
    webhook_timeout_seconds=60,
    max_webhook_wait_seconds=600,
    max_charge_attempts=3,
    charge_retry_backoff_seconds=2,
    review_timeout_seconds=3600,
    notification_redrive_seconds=3600,
    gateway_call_timeout_seconds=30,
    gateway_max_attempts=3,
    authorization_ttl_seconds=7200,
)
REFUND_SETTINGS = RefundSettings(
    webhook_timeout_seconds=60, max_wait_seconds=600, gateway_max_attempts=3
)
# Real seconds a workflow may take to end once time runs; past it, it counts as stuck.
END_WAIT_SECONDS = 20.0


# ---- What one seed left behind --------------------------------------------------------------


@dataclass
class WorkflowEnd:
    workflow_id: str
    kind: str  # payment | refund | dispute
    status: WorkflowExecutionStatus | None
    error: str | None = None
    # Set when the workflow was still running at the end: is a timer pending in its history?
    timer_pending: bool = False


@dataclass
class Outcome:
    scenario: Scenario
    world: World
    payments: dict[str, Payment]
    events: dict[str, list[PaymentEvent]]
    refunds: dict[str, list[RefundRecord]]
    disputes: dict[str, list[DisputeRecord]]
    ends: list[WorkflowEnd]
    histories: list[Any]
    alerts: list[tuple[str, str]]  # (payment id, kind)
    seen: Counter[str] = field(default_factory=Counter)


# ---- Activities the driver watches ----------------------------------------------------------


@dataclass
class Tracker:
    """Which activity tasks are running: the driver's "has everything settled" needs it,
    because an activity waiting out its retry backoff looks like a running one in history."""

    states: dict[tuple[str, str], str] = field(default_factory=dict)
    running: int = 0


class _TrackingInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, tracker: Tracker) -> None:
        super().__init__(next)
        self._tracker = tracker

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local:
            return await super().execute_activity(input)
        key = (info.workflow_id or "", info.activity_id)
        tracker = self._tracker
        tracker.states[key] = "running"
        tracker.running += 1
        try:
            result = await super().execute_activity(input)
        except BaseException:
            tracker.states[key] = "raised"
            raise
        finally:
            tracker.running -= 1
        tracker.states[key] = "done"
        return result


class TrackingInterceptor(Interceptor):
    def __init__(self, tracker: Tracker) -> None:
        self._tracker = tracker

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TrackingInbound(next, self._tracker)


@dataclass
class BiasedScorer:
    """The ledger's real risk rules, plus the plan's bias (to reach review and block)."""

    risk: RiskActivities
    bias: dict[str, int]

    def score_in(self, session: Session, request: PaymentRequest) -> RiskAssessment:
        real = self.risk.score_in(session, request)
        extra = self.bias.get(request.payment_id, 0)
        if not extra:
            return real
        return RiskAssessment(
            score=min(100, real.score + extra),
            factors=[*real.factors, RiskFactor(name="simulated_bias", weight=extra)],
        )


# ---- The driver -------------------------------------------------------------------------------

ActivitiesHook = Callable[[list[Any]], list[Any]]


@dataclass
class Lane:
    """One time-skipping server and one ledger; runs seeds one after another."""

    env: WorkflowEnvironment
    sessions: SessionFactory
    # Planted bugs swap a workflow class or an activity (tests/simulation/planted.py).
    workflows: Sequence[type] = (PaymentWorkflow, RefundWorkflow, DisputeWorkflow)
    activities_hook: ActivitiesHook | None = None

    async def run(self, scenario: Scenario) -> Outcome:
        return await _SeedRun(self, scenario).run()


class _SeedRun:
    def __init__(self, lane: Lane, scenario: Scenario) -> None:
        self.lane = lane
        self.env = lane.env
        self.client = lane.env.client
        self.scenario = scenario
        self.tag = f"s{scenario.seed}-{uuid.uuid4().hex[:6]}"
        self.task_queue = f"sim-{self.tag}"
        self.world = World(tag=self.tag.replace("-", "_"))
        self.world.deliver = self._deliver
        self.world.after_call = self._after_call
        self.tracker = Tracker()
        self.notifier = Notifier()
        self.refund_notifier = RefundNotifier()
        self.bias: dict[str, int] = {}
        self.gateways = {name: SimGateway(name, self.world) for name in GatewayName}
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.executor = ThreadPoolExecutor(max_workers=4)
        self.mutex = asyncio.Lock()
        self.jobs: list[asyncio.Task[None]] = []
        self.workflow_ids: list[tuple[str, str]] = []  # (kind, id)
        self.ends: list[WorkflowEnd] = []
        self.job_errors: list[BaseException] = []
        # Time-skipping locks this seed holds beyond the environment's own.
        self.locks = 0

    # ---- Worker ---------------------------------------------------------------------------

    def _activities(self) -> list[Any]:
        sessions = self.lane.sessions
        ledger = LedgerActivities(sessions)
        risk = RiskActivities(sessions)
        admission = AdmissionActivities(sessions, BiasedScorer(risk, self.bias))
        gateways = GatewayActivities(self.gateways, record=ledger.record_transition)
        refunds = RefundLedgerActivities(sessions)
        disputes = DisputeLedgerActivities(sessions)
        found = [
            ledger.record_transition,
            ledger.record_notification_failure,
            risk.score_risk,
            admission.admit_payment,
            gateways.charge,
            gateways.reconcile,
            gateways.cancel,
            gateways.capture,
            gateways.refund,
            gateways.retrieve_refund,
            refunds.reserve,
            refunds.record_reference,
            refunds.settle,
            disputes.record_change,
            self.notifier.notify,
            self.notifier.emit,
            self.notifier.alert,
            self.refund_notifier.notify_refund,
            self.refund_notifier.notify_dispute,
            self.refund_notifier.alert_dispute,
        ]
        hook = self.lane.activities_hook
        return hook(found) if hook else found

    def _start_worker(self) -> None:
        self.worker = Worker(
            self.client,
            task_queue=self.task_queue,
            workflows=list(self.lane.workflows),
            activities=self._activities(),
            activity_executor=self.executor,
            interceptors=[TrackingInterceptor(self.tracker)],
            # No cache, so no sticky queue: the test server would keep handing a restarted
            # worker's workflow tasks to the old worker's queue. So every workflow task
            # replays its history from the start, as after a restart. One task at a time:
            # without a cache, two at once evict each other's local activities.
            max_cached_workflows=0,
            max_concurrent_workflow_tasks=1,
        )
        self.worker_task = asyncio.create_task(self.worker.run())

    async def _stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.shutdown()
        if self.worker_task is not None:
            await self.worker_task
        self.worker = None
        self.worker_task = None

    async def _restart_worker(self) -> None:
        """The worker goes away and a new one takes over: every open workflow replays its
        history from the start on the new worker."""
        self.world.seen["action:restart_worker"] += 1
        # At a quiet point, so no workflow task dies with the worker (it would come back only
        # after its 10 s timeout, in real time).
        await self._quiet()
        await self._stop_worker()
        self._start_worker()

    # ---- Time and quiet -------------------------------------------------------------------

    async def _lock(self) -> None:
        await self.client.test_service.lock_time_skipping(LockTimeSkippingRequest())
        self.locks += 1

    async def _unlock(self) -> None:
        await self.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
        self.locks -= 1

    async def _leave_clean(self) -> None:
        """The next seed on this server starts as this one did: time locked once (as the
        environment leaves it), and none of this seed's workflows left running."""
        for job in self.jobs:
            job.cancel()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        while self.locks > 0:
            await self._unlock()
        while self.locks < 0:
            await self._lock()
        for _, workflow_id in self.workflow_ids:
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                await handle.terminate("simulation seed finished")
            except RPCError:
                pass  # it has ended

    async def _quiet(self) -> None:
        """Wait until no workflow task and no activity of this seed is in flight (time is
        locked, so only timers are left to move anything)."""
        calm = 0
        for _ in range(4000):
            if self.tracker.running == 0 and await self._all_idle():
                calm += 1
                if calm >= 2:
                    return
            else:
                calm = 0
            await asyncio.sleep(0.002)
        raise AssertionError(f"seed {self.scenario.seed}: the workflows never went quiet")

    async def _all_idle(self) -> bool:
        for _, workflow_id in self.workflow_ids:
            if not await self._idle(workflow_id):
                return False
        return True

    async def _idle(self, workflow_id: str) -> bool:
        handle = self.client.get_workflow_handle(workflow_id)
        history = await handle.fetch_history()
        last_scheduled = last_completed = -1
        open_activities: dict[int, str] = {}
        for index, event in enumerate(history.events):
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                last_scheduled = index
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                last_completed = index
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                open_activities[event.event_id] = attributes.activity_id
            elif kind in _ACTIVITY_CLOSED:
                scheduled = _scheduled_event_id(event)
                open_activities.pop(scheduled, None)
            elif kind in _WORKFLOW_CLOSED:
                return True
        if last_scheduled > last_completed:
            return False
        for activity_id in open_activities.values():
            # Started and failed: waiting out its retry backoff, which only time moves.
            if self.tracker.states.get((workflow_id, activity_id)) != "raised":
                return False
        return True

    # ---- Hooks the gateways call --------------------------------------------------------

    async def _after_call(self, life: Life) -> None:
        """Called by a gateway before it answers: if the plan has something for this moment,
        hold time and act once everything has settled."""
        if not self._has_work(life, life.calls):
            return
        await self._lock()
        self.jobs.append(asyncio.create_task(self._job(life, life.calls)))

    def _has_work(self, life: Life, call: int) -> bool:
        if any(at <= call for at, _, _ in life.due):
            return True
        if isinstance(life, PaymentLife):
            return bool(life.unresolved) or any(m.after_call == call for m in life.plan.moments)
        return False

    async def _job(self, life: Life, call: int) -> None:
        try:
            async with self.mutex:
                await self._quiet()
                await self._act(life, call)
                await self._quiet()
        except BaseException as error:  # reported with the seed, never lost in a task
            self.job_errors.append(error)
        finally:
            await self._unlock()

    async def _act(self, life: Life, call: int) -> None:
        if isinstance(life, PaymentLife):
            await self.world.resolve_waiting(life)
        for workflow_id, event in life.take_due(call):
            await self._deliver(workflow_id, event)
        if isinstance(life, PaymentLife):
            for moment in life.plan.moments:
                if moment.after_call == call:
                    await self._do(life, moment.action)

    async def _drain(self) -> None:
        """Until no job is pending and everything is quiet."""
        while True:
            pending = [job for job in self.jobs if not job.done()]
            if pending:
                await asyncio.gather(*pending)
                continue
            async with self.mutex:
                await self._quiet()
            if not [job for job in self.jobs if not job.done()]:
                return

    # ---- What the outside world does ------------------------------------------------------

    async def _deliver(self, workflow_id: str, event: GatewayEvent) -> None:
        """A verified webhook reaches its workflow, as the API would signal it."""
        handle = self.client.get_workflow_handle(workflow_id)
        signal = "refund_event" if event.refund is not None else "gateway_event"
        try:
            await handle.signal(signal, event)
            self.world.seen["delivered"] += 1
        except RPCError:
            # The workflow has ended: the API logs and keeps the event (ledger), nothing more.
            self.world.seen["delivered_after_end"] += 1

    async def _do(self, life: PaymentLife, action: Action) -> None:
        if action is Action.RESTART:
            await self._restart_worker()
            return
        handle = self.client.get_workflow_handle(life.workflow_id)
        argument: object
        if action is Action.CANCEL:
            name, argument = "cancel", CancelPayment(reason="requested_by_customer")
        elif action is Action.CAPTURE:
            name, argument = "capture", CapturePayment()
        elif action is Action.PARTIAL_CAPTURE:
            name = "capture"
            argument = CapturePayment(amount_minor=max(1, life.plan.amount * 3 // 10))
        elif action is Action.RECONCILE:
            name = "reconcile_now"
            argument = ReconcileRequest(operator="sim-operator", reason="simulated request")
        else:
            verdict = ReviewVerdict.APPROVE if action is Action.APPROVE else ReviewVerdict.REJECT
            name = "review"
            argument = ReviewDecision(
                verdict=verdict, reviewer="sim-operator", reason="simulated review"
            )
        try:
            await handle.start_update(
                name, argument, wait_for_stage=WorkflowUpdateStage.ACCEPTED, id=uuid.uuid4().hex
            )
            self.world.seen[f"action:{action}"] += 1
        except (WorkflowUpdateFailedError, RPCError):
            self.world.seen[f"action_refused:{action}"] += 1

    # ---- The phases -----------------------------------------------------------------------

    async def run(self) -> Outcome:
        self._start_worker()
        try:
            lives = []
            for index, plan in enumerate(self.scenario.payments):
                lives.append(await self._start_payment(index, plan))
                await self._drain()
            for life in lives:
                await self._wait_for("payment", life.workflow_id)
            await self._drain()
            for life in lives:
                await self._after_the_end(life)
            ends = [await self._end_of(kind, wid) for kind, wid in self.workflow_ids]
            self.ends.extend(ends)
            if self.job_errors:
                raise self.job_errors[0]
            return await self._outcome()
        finally:
            await self._leave_clean()
            await self._stop_worker()
            self.executor.shutdown(wait=False)

    async def _start_payment(self, index: int, plan: PaymentPlan) -> PaymentLife:
        key = f"{self.tag}-{index}"
        payment_id = f"pay_{self.tag}_{index}".replace("-", "_")[:40]
        request = PaymentRequest(
            payment_id=payment_id,
            merchant_id=MERCHANT,
            idempotency_key=key,
            fingerprint=f"fp-{key}",
            amount_minor=plan.amount,
            currency=plan.currency,
            customer_id=f"cus_{self.tag}",
            payment_method="pm_card_visa",
            order_id=f"order_{key}",
            capture=plan.capture,
            route=list(plan.route),
            gateway=plan.route[0],
        )
        workflow_id = f"payment:{MERCHANT}:{key}"
        life = PaymentLife(
            workflow_id=workflow_id, plan=plan, payment_id=payment_id, capture=plan.capture
        )
        self.world.payments[payment_id] = life
        self.bias[payment_id] = plan.risk_bias
        self.workflow_ids.append(("payment", workflow_id))
        async with self.mutex:
            await self.client.start_workflow(
                PaymentWorkflow.run,
                PaymentInput(request=request, settings=SETTINGS),
                id=workflow_id,
                task_queue=self.task_queue,
            )
            await self._quiet()
            await self._act(life, 0)
            await self._quiet()
        return life

    async def _wait_for(self, kind: str, workflow_id: str) -> None:
        handle: WorkflowHandle[Any, Any] = self.client.get_workflow_handle(workflow_id)
        # Time runs while the driver waits (a handle of one's own does not unlock it itself).
        await self._unlock()
        try:
            await asyncio.wait_for(handle.result(), END_WAIT_SECONDS)
        except (TimeoutError, WorkflowFailureError, RuntimeError):
            pass  # judged by the invariants, from the workflow's description
        finally:
            await self._lock()
        await self._drain()

    async def _after_the_end(self, life: PaymentLife) -> None:
        """Late webhooks and actions, then the refunds, then the dispute."""
        for moment in life.plan.moments:
            if moment.after_call > life.calls and moment.action is not Action.RESTART:
                await self._do(life, moment.action)
        for workflow_id, event in life.take_due(END):
            await self._deliver(workflow_id, event)
        refunds = [
            self._start_refund(life, number, plan)
            for number, plan in enumerate(life.plan.refunds, 1)
        ]
        started = [await start for start in refunds]
        for refund in started:
            await self._wait_for("refund", refund.workflow_id)
        for refund in started:
            for workflow_id, event in refund.take_due(END):
                await self._deliver(workflow_id, event)
        if life.plan.dispute:
            await self._dispute(life, life.plan.dispute)

    async def _start_refund(self, life: PaymentLife, number: int, plan: Any) -> RefundLife:
        key = f"{self.tag}-r{life.payment_id[-1]}-{number}"
        refund_id = f"ref_{self.tag}_{life.payment_id[-1]}_{number}".replace("-", "_")[:40]
        workflow_id = f"refund:{MERCHANT}:{key}"
        refund = RefundLife(
            workflow_id=workflow_id, plan=plan, refund_id=refund_id, payment_id=life.payment_id
        )
        self.world.refund_lives[refund_id] = refund
        self.workflow_ids.append(("refund", workflow_id))
        self.world.seen["refund_asked"] += 1
        await self.client.start_workflow(
            RefundWorkflow.run,
            RefundInput(
                request=RefundRequestInput(
                    refund_id=refund_id,
                    merchant_id=MERCHANT,
                    payment_id=life.payment_id,
                    idempotency_key=key,
                    fingerprint=f"fp-{key}",
                    amount_minor=plan.amount,
                    reason="requested_by_customer",
                ),
                settings=REFUND_SETTINGS,
            ),
            id=workflow_id,
            task_queue=self.task_queue,
        )
        return refund

    async def _dispute(self, life: PaymentLife, result: str) -> None:
        charges = [c for c in self.world.charges_of(life.payment_id) if c.captured]
        if not charges:
            return
        charge = charges[0]
        reference = self.world.serial(f"dp_{charge.gateway.value}")
        workflow_id = dispute_workflow_id(charge.gateway.value, reference)
        self.workflow_ids.append(("dispute", workflow_id))
        self.world.seen[f"dispute:{result}"] += 1
        final = DisputeState.WON if result == "won" else DisputeState.LOST
        for state in (DisputeState.NEEDS_RESPONSE, DisputeState.NEEDS_RESPONSE, final, final):
            event = GatewayEvent(
                provider=charge.gateway,
                event_id=f"evt_{reference}_{state.value}",  # the second is a re-delivery
                event_type=f"dispute.{state.value}",
                state=charge.state,
                gateway_reference=charge.reference,
                payment_id=charge.payment_id,
                dispute=DisputeNotice(
                    dispute_reference=reference,
                    state=state,
                    amount_minor=charge.captured,
                    currency=charge.currency,
                    reason="fraudulent",
                ),
            )
            try:
                await self.client.start_workflow(
                    DisputeWorkflow.run,
                    DisputeInput(
                        dispute_id=dispute_id(workflow_id),
                        provider=charge.gateway,
                        dispute_reference=reference,
                    ),
                    id=workflow_id,
                    task_queue=self.task_queue,
                    start_signal="dispute_event",
                    start_signal_args=[event],
                )
            except RPCError:
                self.world.seen["delivered_after_end"] += 1
        await self._wait_for("dispute", workflow_id)

    # ---- What is left ---------------------------------------------------------------------

    async def _end_of(self, kind: str, workflow_id: str) -> WorkflowEnd:
        handle = self.client.get_workflow_handle(workflow_id)
        description = await handle.describe()
        end = WorkflowEnd(workflow_id=workflow_id, kind=kind, status=description.status)
        if description.status is WorkflowExecutionStatus.FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as error:
                end.error = str(error.cause or error)
        if description.status is WorkflowExecutionStatus.RUNNING:
            end.timer_pending = await _timer_pending(handle)
        return end

    async def _outcome(self) -> Outcome:
        histories = [
            await self.client.get_workflow_handle(wid).fetch_history()
            for _, wid in self.workflow_ids
        ]
        ids = list(self.world.payments)

        def read() -> tuple[Any, Any, Any, Any]:
            with self.lane.sessions() as session:
                payments = {
                    row.id: row
                    for row in session.exec(select(Payment).where(Payment.id.in_(ids)))  # type: ignore[attr-defined]
                }
                events: dict[str, list[PaymentEvent]] = {pid: [] for pid in ids}
                for row in session.exec(
                    select(PaymentEvent)
                    .where(PaymentEvent.payment_id.in_(ids))  # type: ignore[attr-defined]
                    .order_by(PaymentEvent.payment_id, PaymentEvent.seq)  # type: ignore[arg-type]
                ):
                    events[row.payment_id].append(row)
                refunds: dict[str, list[RefundRecord]] = {pid: [] for pid in ids}
                for refund in session.exec(
                    select(RefundRecord).where(RefundRecord.payment_id.in_(ids))  # type: ignore[attr-defined]
                ):
                    refunds[refund.payment_id].append(refund)
                disputes: dict[str, list[DisputeRecord]] = {pid: [] for pid in ids}
                for dispute in session.exec(
                    select(DisputeRecord).where(DisputeRecord.payment_id.in_(ids))  # type: ignore[union-attr]
                ):
                    if dispute.payment_id is not None:
                        disputes[dispute.payment_id].append(dispute)
                return payments, events, refunds, disputes

        payments, events, refunds, disputes = await asyncio.to_thread(read)
        alerts = [(alert.payment.payment_id, str(alert.kind)) for alert in self.notifier.alerts]
        return Outcome(
            scenario=self.scenario,
            world=self.world,
            payments=payments,
            events=events,
            refunds=refunds,
            disputes=disputes,
            ends=self.ends,
            histories=histories,
            alerts=alerts,
            seen=self.world.seen,
        )


_ACTIVITY_CLOSED = frozenset(
    {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    }
)
_WORKFLOW_CLOSED = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)


def _scheduled_event_id(event: Any) -> int:
    for name in (
        "activity_task_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "activity_task_timed_out_event_attributes",
        "activity_task_canceled_event_attributes",
    ):
        if event.HasField(name):
            return int(getattr(event, name).scheduled_event_id)
    return -1


async def _timer_pending(handle: WorkflowHandle[Any, Any]) -> bool:
    history = await handle.fetch_history()
    started: set[int] = set()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            started.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            started.discard(event.timer_fired_event_attributes.started_event_id)
        elif event.event_type == EventType.EVENT_TYPE_TIMER_CANCELED:
            started.discard(event.timer_canceled_event_attributes.started_event_id)
    return bool(started)
