"""The simulated gateways and the truth they keep: what was really charged, held, captured and
refunded, whatever paytide believes.

One `SimGateway` per gateway name implements paytide's `Gateway` protocol over a shared `World`.
Each call takes the next answer from the payment's plan (the defaults once the plan runs out),
keeps idempotency keys the way real gateways do (a repeated key returns the first charge), and
sends webhooks whose fates the plan decides. Calls are counted per payment: the driver runs the
plan's moments and due webhooks "after call n", when the workflows have done all they can
without time moving.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateways.base import (
    GatewayRateLimited,
    GatewayRefused,
    GatewayRequestError,
    GatewayUnavailable,
)
from tests.simulation.scenario import (
    ChargeAnswer,
    Fate,
    LookupAnswer,
    ModifyAnswer,
    PaymentPlan,
    RefundPlan,
    Resolution,
)
from workflows.contract import (
    CancelRequest,
    CaptureMethod,
    CaptureRequest,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    ChargeState,
    Failure,
    GatewayEvent,
    GatewayName,
    RefundLookup,
    RefundNotice,
    RefundOutcome,
    RefundRequest,
    RefundState,
)

# After this many lookups of one payment the gateway always tells the truth, and a charge nobody
# finishes (3-D Secure abandoned) expires: every charge ends at the gateway, so every payment can.
HONEST_AFTER_LOOKUPS = 6
EXPIRES_AFTER_LOOKUPS = 3
# A late webhook arrives this many gateway calls after the one that caused it.
LATE_BY_CALLS = 2
END = 10**9  # "after the payment's workflow ended"

Deliver = Callable[[str, GatewayEvent], Awaitable[None]]
T = TypeVar("T")


@dataclass
class Charge:
    """One charge as the gateway really holds it."""

    gateway: GatewayName
    key: str
    reference: str
    payment_id: str
    amount: int
    currency: str
    state: ChargeState
    resolution: Resolution = Resolution.SUCCEED
    captured: int = 0
    refunded: int = 0
    lookups: int = 0

    @property
    def holds_money(self) -> bool:
        return self.state in (ChargeState.SUCCEEDED, ChargeState.AUTHORIZED)

    def outcome(self) -> ChargeOutcome:
        return ChargeOutcome(
            state=self.state,
            gateway_reference=self.reference,
            amount_minor=self.amount,
            currency=self.currency,
            amount_captured=self.captured if self.state is ChargeState.SUCCEEDED else None,
            failure=Failure(code="card_declined", message="declined by the simulated issuer")
            if self.state is ChargeState.DECLINED
            else None,
        )


@dataclass
class Refund:
    gateway: GatewayName
    key: str
    reference: str
    refund_id: str
    charge: Charge
    amount: int
    state: RefundState


@dataclass
class Life:
    """One workflow's gateway calls so far, and the webhooks waiting for their moment."""

    workflow_id: str
    calls: int = 0
    fates: int = 0
    # (after which call, workflow to signal, event); END: once the workflow has ended.
    due: list[tuple[int, str, GatewayEvent]] = field(default_factory=list)

    def take_due(self, upto: int) -> list[tuple[str, GatewayEvent]]:
        ready = [(w, e) for at, w, e in self.due if at <= upto]
        self.due = [item for item in self.due if item[0] > upto]
        return ready


@dataclass
class PaymentLife(Life):
    """One payment's plan and how far the gateways have got through it."""

    plan: PaymentPlan = field(
        default_factory=lambda: PaymentPlan(0, "EUR", CaptureMethod.AUTOMATIC, ())
    )
    payment_id: str = ""
    capture: CaptureMethod = CaptureMethod.AUTOMATIC
    charge_answers: int = 0
    lookup_answers: int = 0
    modify_answers: int = 0
    # Charges left waiting by the last call; the customer finishes them right after it.
    unresolved: list[Charge] = field(default_factory=list)


@dataclass
class RefundLife(Life):
    plan: RefundPlan = field(default_factory=lambda: RefundPlan(None))
    refund_id: str = ""
    payment_id: str = ""
    answers: int = 0


@dataclass
class World:
    """Everything the gateways really did, and the plans they follow."""

    payments: dict[str, PaymentLife] = field(default_factory=dict)
    refund_lives: dict[str, RefundLife] = field(default_factory=dict)
    charges: dict[tuple[GatewayName, str], Charge] = field(default_factory=dict)
    by_reference: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[tuple[GatewayName, str], Refund] = field(default_factory=dict)
    refunds_by_reference: dict[str, Refund] = field(default_factory=dict)
    # Set by the driver: signal a workflow now; note that call n of a payment answered.
    deliver: Deliver | None = None
    after_call: Callable[[Life], Awaitable[None]] | None = None
    # Coverage: how often each kind of answer, fate and action occurred.
    seen: Counter[str] = field(default_factory=Counter)
    # Makes every reference and event id of this run its own: runs share a ledger and a server.
    tag: str = ""
    _serial: int = 0

    def serial(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}_{self.tag}_{self._serial:04d}"

    def life_of_key(self, key: str | None) -> PaymentLife | None:
        if key is None:
            return None
        workflow_id = key.split("/charge/", 1)[0]
        return next((p for p in self.payments.values() if p.workflow_id == workflow_id), None)

    def charges_of(self, payment_id: str) -> list[Charge]:
        return [c for c in self.charges.values() if c.payment_id == payment_id]

    def refunds_of(self, charge: Charge) -> list[Refund]:
        return [r for r in self.refunds.values() if r.charge is charge]

    # ---- Webhooks -------------------------------------------------------------------------

    async def emit(
        self, life: PaymentLife, charge: Charge, *, during_call: bool, captured: bool = False
    ) -> None:
        """The gateway sends a webhook for the charge's current state; its fate is the plan's."""
        fate = _next(life.plan.fates, life.fates, Fate.ON_TIME)
        life.fates += 1
        self.seen[f"webhook:{fate}"] += 1
        verb = "captured" if captured else charge.state.value
        event = GatewayEvent(
            provider=charge.gateway,
            event_id=self.serial(f"evt_{charge.gateway.value}"),
            event_type=f"charge.{verb}",
            state=charge.state,
            gateway_reference=charge.reference,
            amount_minor=charge.amount + (1 if fate is Fate.WRONG_AMOUNT else 0),
            currency=charge.currency,
            payment_id=charge.payment_id,
            workflow_id=life.workflow_id,
            amount_captured=charge.captured if charge.state is ChargeState.SUCCEEDED else None,
        )
        await self.send(life, event, fate, during_call)

    async def send(self, life: Life, event: GatewayEvent, fate: Fate, during_call: bool) -> None:
        """Deliver now, or note when the event is due, as its fate says."""
        if fate is Fate.LOST:
            return
        if fate is Fate.EARLY and during_call:
            assert self.deliver is not None
            await self.deliver(life.workflow_id, event)
            return
        if fate is Fate.LATE:
            life.due.append((life.calls + LATE_BY_CALLS, life.workflow_id, event))
            return
        life.due.append((life.calls, life.workflow_id, event))
        if fate is Fate.DUPLICATE:
            life.due.append((END, life.workflow_id, event))

    async def resolve_waiting(self, life: PaymentLife) -> None:
        """The customer finishes (or abandons) what the last call left waiting."""
        waiting, life.unresolved = life.unresolved, []
        for charge in waiting:
            if charge.state not in (ChargeState.PENDING, ChargeState.REQUIRES_ACTION):
                continue
            if charge.resolution is Resolution.ABANDON:
                continue  # expires after a few lookups
            if charge.resolution is Resolution.DECLINE:
                charge.state = ChargeState.DECLINED
            else:
                self._succeed(charge, life.capture)
            await self.emit(life, charge, during_call=False)

    @staticmethod
    def _succeed(charge: Charge, capture: CaptureMethod) -> None:
        if capture is CaptureMethod.MANUAL:
            charge.state = ChargeState.AUTHORIZED
        else:
            charge.state = ChargeState.SUCCEEDED
            charge.captured = charge.amount


def _next(script: tuple[T, ...], index: int, default: T) -> T:
    return script[index] if index < len(script) else default


@dataclass
class SimGateway:
    """paytide's `Gateway` protocol, answered from the world's plans and truth."""

    gateway_name: GatewayName
    world: World

    @property
    def name(self) -> GatewayName:
        return self.gateway_name

    def _life(self, payment_id: str) -> PaymentLife:
        return self.world.payments[payment_id]

    async def _answered(self, life: Life) -> None:
        assert self.world.after_call is not None
        await self.world.after_call(life)

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        life = self._life(request.payment_id)
        life.calls += 1
        try:
            return await self._charge(life, request)
        finally:
            await self._answered(life)

    async def _charge(self, life: PaymentLife, request: ChargeRequest) -> ChargeOutcome:
        world = self.world
        answer, resolution = _next(
            life.plan.charges, life.charge_answers, (ChargeAnswer.APPROVE, Resolution.SUCCEED)
        )
        life.charge_answers += 1
        world.seen[f"charge:{answer}"] += 1
        if answer in (ChargeAnswer.TIMEOUT_BEFORE, ChargeAnswer.SERVER_ERROR):
            raise GatewayUnavailable(f"simulated {answer}")
        if answer is ChargeAnswer.RATE_LIMITED:
            raise GatewayRateLimited("simulated 429", retry_after=2.0)
        if answer is ChargeAnswer.REFUSED:
            raise GatewayRefused("simulated 503 before processing")
        key = (self.gateway_name, request.idempotency_key)
        existing = world.charges.get(key)
        if existing is not None:
            # The same key again: the gateway answers with the charge it already made.
            return existing.outcome()
        charge = Charge(
            gateway=self.gateway_name,
            key=request.idempotency_key,
            reference=world.serial(f"ch_{self.gateway_name.value}"),
            payment_id=request.payment_id,
            amount=request.amount_minor,
            currency=request.currency,
            state=ChargeState.PENDING,
            resolution=resolution,
        )
        world.charges[key] = charge
        world.by_reference[charge.reference] = charge
        if answer is ChargeAnswer.DECLINE:
            charge.state = ChargeState.DECLINED
        elif answer is ChargeAnswer.THREE_DS:
            charge.state = ChargeState.REQUIRES_ACTION
            life.unresolved.append(charge)
        elif answer is ChargeAnswer.PENDING:
            life.unresolved.append(charge)
        else:
            if answer is ChargeAnswer.WRONG_AMOUNT:
                charge.amount += max(1, charge.amount // 10)
            World._succeed(charge, request.capture)
        if charge.state is not ChargeState.PENDING:
            await world.emit(life, charge, during_call=answer is not ChargeAnswer.SLOW)
        if answer is ChargeAnswer.SLOW:
            # The webhook overtook the answer.
            fate_event = life.due.pop() if life.due else None
            if fate_event is not None:
                assert world.deliver is not None
                await world.deliver(fate_event[1], fate_event[2])
        if answer is ChargeAnswer.TIMEOUT_AFTER:
            raise GatewayUnavailable("simulated timeout after the charge was made")
        return charge.outcome()

    async def retrieve(self, lookup: ChargeLookup) -> ChargeOutcome:
        world = self.world
        charge = world.by_reference.get(lookup.gateway_reference or "") or world.charges.get(
            (self.gateway_name, lookup.idempotency_key or "")
        )
        life = world.life_of_key(lookup.idempotency_key) or (
            world.payments[charge.payment_id] if charge else None
        )
        assert life is not None, f"lookup of an unknown payment: {lookup}"
        life.calls += 1
        try:
            answer = (
                _next(life.plan.lookups, life.lookup_answers, LookupAnswer.TRUTH)
                if life.lookup_answers < HONEST_AFTER_LOOKUPS
                else LookupAnswer.TRUTH
            )
            life.lookup_answers += 1
            world.seen[f"lookup:{answer}"] += 1
            if answer is LookupAnswer.ERROR:
                raise GatewayUnavailable("simulated 5xx on lookup")
            if charge is not None:
                await self._maybe_expire(life, charge)
            if answer is LookupAnswer.LAGGING or charge is None:
                return ChargeOutcome(
                    state=ChargeState.NOT_FOUND, conclusive=answer is LookupAnswer.TRUTH
                )
            return charge.outcome()
        finally:
            await self._answered(life)

    async def _maybe_expire(self, life: PaymentLife, charge: Charge) -> None:
        charge.lookups += 1
        waiting = charge.state in (ChargeState.PENDING, ChargeState.REQUIRES_ACTION)
        if waiting and charge.lookups >= EXPIRES_AFTER_LOOKUPS:
            charge.state = ChargeState.CANCELED
            await self.world.emit(life, charge, during_call=True)

    def _modify_answer(self, life: PaymentLife) -> ModifyAnswer:
        answer = _next(life.plan.modifies, life.modify_answers, ModifyAnswer.DONE)
        life.modify_answers += 1
        self.world.seen[f"modify:{answer}"] += 1
        return answer

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        charge = self.world.by_reference[request.gateway_reference]
        life = self._life(charge.payment_id)
        life.calls += 1
        try:
            answer = self._modify_answer(life)
            if answer is ModifyAnswer.ERROR:
                raise GatewayUnavailable("simulated 5xx on cancel")
            if charge.state in (
                ChargeState.PENDING,
                ChargeState.REQUIRES_ACTION,
                ChargeState.AUTHORIZED,
            ):
                charge.state = ChargeState.CANCELED
                await self.world.emit(life, charge, during_call=True)
            if answer is ModifyAnswer.TIMEOUT_AFTER:
                raise GatewayUnavailable("simulated timeout after the void")
            if answer is ModifyAnswer.ASYNC:
                return ChargeOutcome(state=ChargeState.PENDING, gateway_reference=charge.reference)
            return charge.outcome()
        finally:
            await self._answered(life)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        charge = self.world.by_reference[request.gateway_reference]
        life = self._life(charge.payment_id)
        life.calls += 1
        try:
            answer = self._modify_answer(life)
            if answer is ModifyAnswer.ERROR:
                raise GatewayUnavailable("simulated 5xx on capture")
            if charge.state is ChargeState.AUTHORIZED:
                if request.amount_minor > charge.amount:
                    raise GatewayRequestError("capture exceeds the authorization")
                charge.state = ChargeState.SUCCEEDED
                charge.captured = request.amount_minor
                await self.world.emit(life, charge, during_call=True, captured=True)
            if answer is ModifyAnswer.TIMEOUT_AFTER:
                raise GatewayUnavailable("simulated timeout after the capture")
            if answer is ModifyAnswer.ASYNC:
                return ChargeOutcome(
                    state=ChargeState.AUTHORIZED, gateway_reference=charge.reference
                )
            return charge.outcome()
        finally:
            await self._answered(life)

    # ---- Refunds --------------------------------------------------------------------------

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        assert request.refund_id is not None
        life = self.world.refund_lives[request.refund_id]
        life.calls += 1
        try:
            return await self._refund(life, request)
        finally:
            await self._answered(life)

    async def _refund(self, life: RefundLife, request: RefundRequest) -> RefundOutcome:
        world = self.world
        answer = _next(life.plan.answers, life.answers, ModifyAnswer.DONE)
        life.answers += 1
        world.seen[f"refund:{answer}"] += 1
        if answer is ModifyAnswer.ERROR:
            raise GatewayUnavailable("simulated 5xx on refund")
        key = (self.gateway_name, request.idempotency_key)
        refund = world.refunds.get(key)
        if refund is None:
            charge = world.by_reference[request.gateway_reference]
            # A lax gateway: it refunds whatever it is asked; bounding refunds is paytide's job.
            refund = Refund(
                gateway=self.gateway_name,
                key=request.idempotency_key,
                reference=world.serial(f"re_{self.gateway_name.value}"),
                refund_id=request.refund_id or "",
                charge=charge,
                amount=request.amount_minor,
                state=RefundState.SUCCEEDED,
            )
            world.refunds[key] = refund
            world.refunds_by_reference[refund.reference] = refund
            charge.refunded += refund.amount
            await self._emit_refund(life, refund)
        if answer is ModifyAnswer.TIMEOUT_AFTER:
            raise GatewayUnavailable("simulated timeout after the refund")
        if answer is ModifyAnswer.ASYNC:
            # Accepted: done at the gateway, said by webhook (the answer itself says pending).
            return RefundOutcome(state=RefundState.PENDING, refund_reference=refund.reference)
        return RefundOutcome(state=refund.state, refund_reference=refund.reference)

    async def _emit_refund(self, life: RefundLife, refund: Refund) -> None:
        world = self.world
        fate = _next(life.plan.fates, life.fates, Fate.ON_TIME)
        life.fates += 1
        world.seen[f"refund_webhook:{fate}"] += 1
        event = GatewayEvent(
            provider=refund.gateway,
            event_id=world.serial(f"evt_{refund.gateway.value}"),
            event_type=f"refund.{refund.state.value}",
            state=ChargeState.SUCCEEDED,
            gateway_reference=refund.charge.reference,
            payment_id=life.payment_id,
            refund=RefundNotice(
                state=refund.state,
                refund_reference=refund.reference,
                refund_id=refund.refund_id,
                amount_minor=refund.amount + (1 if fate is Fate.WRONG_AMOUNT else 0),
                currency=refund.charge.currency,
            ),
        )
        await world.send(life, event, fate, during_call=True)

    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        refund = self.world.refunds_by_reference.get(lookup.refund_reference)
        self.world.seen["refund_lookup"] += 1
        if refund is None:
            return RefundOutcome(
                state=RefundState.PENDING, refund_reference=lookup.refund_reference
            )
        life = self.world.refund_lives[refund.refund_id]
        life.calls += 1
        try:
            return RefundOutcome(state=refund.state, refund_reference=refund.reference)
        finally:
            await self._answered(life)
