"""A seed's whole world, drawn once from ``random.Random(seed)``: payments, gateway answers,
webhook fates, operator and merchant actions, worker restarts, refunds and disputes.

A scenario is plain frozen data, so it prints as a readable script, compares equal when replayed
from the same seed, and shrinks by replacing parts with smaller ones (``shrink.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from workflows.contract import CaptureMethod, GatewayName

T = TypeVar("T")
GATEWAYS = (GatewayName.STRIPE, GatewayName.ADYEN, GatewayName.SANDBOX)


class ChargeAnswer(StrEnum):
    """What the gateway does with one charge call."""

    APPROVE = "approve"
    DECLINE = "decline"
    THREE_DS = "3ds"  # requires_action; the customer finishes (or not) right after
    PENDING = "pending"  # accepted; the final word comes later
    SLOW = "slow"  # approves, but its webhook overtakes the answer
    TIMEOUT_AFTER = "timeout_after_charging"
    TIMEOUT_BEFORE = "timeout_before_charging"
    SERVER_ERROR = "5xx"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused_before_processing"
    WRONG_AMOUNT = "charges_wrong_amount"  # a gateway bug: takes another amount, says so


class Resolution(StrEnum):
    """How a charge left waiting (3-D Secure, pending) ends at the gateway."""

    SUCCEED = "succeed"
    DECLINE = "decline"
    ABANDON = "abandon"  # nobody finishes it; the gateway expires it after a while


class LookupAnswer(StrEnum):
    TRUTH = "truth"
    LAGGING = "lagging"  # "not found", not conclusive: the gateway's index is behind
    ERROR = "error"  # 5xx


class ModifyAnswer(StrEnum):
    """A capture, void or refund call."""

    DONE = "done"
    ASYNC = "async"  # accepted; confirmed by webhook (Adyen's way)
    TIMEOUT_AFTER = "timeout_after"
    ERROR = "error"  # 5xx, not processed


class Fate(StrEnum):
    """What happens to one webhook the gateway sends."""

    ON_TIME = "on_time"
    EARLY = "early"  # arrives before the call that caused it has answered
    LATE = "late"  # arrives a few gateway calls later (or after the workflow ended)
    DUPLICATE = "duplicate"  # on time, and again at the end
    LOST = "lost"
    WRONG_AMOUNT = "wrong_amount"  # says another amount than was charged (a forged or buggy one)


class Action(StrEnum):
    CANCEL = "cancel"
    CAPTURE = "capture"
    PARTIAL_CAPTURE = "partial_capture"
    RECONCILE = "reconcile_now"
    APPROVE = "review_approve"
    REJECT = "review_reject"
    RESTART = "restart_worker"


@dataclass(frozen=True)
class Moment:
    """After the payment's n-th gateway call has answered (0: once it is admitted), when the
    workflow has done all it can without time moving; ``late`` moves it to after the end."""

    after_call: int
    action: Action

    def __str__(self) -> str:
        return f"{self.action} after call {self.after_call}"


@dataclass(frozen=True)
class RefundPlan:
    # None: "refund what is left"; may be more than was captured.
    amount: int | None
    answers: tuple[ModifyAnswer, ...] = ()
    fates: tuple[Fate, ...] = ()


@dataclass(frozen=True)
class PaymentPlan:
    amount: int
    currency: str
    capture: CaptureMethod
    route: tuple[GatewayName, ...]
    # Added to the ledger's own risk score: 0, or enough for a review or a block.
    risk_bias: int = 0
    charges: tuple[tuple[ChargeAnswer, Resolution], ...] = ()
    lookups: tuple[LookupAnswer, ...] = ()
    modifies: tuple[ModifyAnswer, ...] = ()
    fates: tuple[Fate, ...] = ()
    moments: tuple[Moment, ...] = ()
    refunds: tuple[RefundPlan, ...] = ()
    # The dispute's outcome once the payment succeeded: "won", "lost" or "" for none.
    dispute: str = ""

    def describe(self, index: int) -> list[str]:
        head = (
            f"payment {index}: {self.amount} {self.currency}, {self.capture} capture, "
            f"route {' → '.join(g.value for g in self.route)}"
        )
        if self.risk_bias:
            head += f", risk +{self.risk_bias}"
        lines = [head]
        if self.charges:
            lines.append(
                "  charge calls: "
                + ", ".join(
                    f"{a}" + (f"→{r}" if a in (ChargeAnswer.THREE_DS, ChargeAnswer.PENDING) else "")
                    for a, r in self.charges
                )
            )
        if self.lookups:
            lines.append("  lookups: " + ", ".join(self.lookups))
        if self.modifies:
            lines.append("  capture/void calls: " + ", ".join(self.modifies))
        if self.fates:
            lines.append("  webhooks in order: " + ", ".join(self.fates))
        for moment in self.moments:
            lines.append(f"  {moment}")
        for number, refund in enumerate(self.refunds, 1):
            amount = "the rest" if refund.amount is None else str(refund.amount)
            line = f"  refund {number}: {amount}"
            if refund.answers:
                line += "; calls: " + ", ".join(refund.answers)
            if refund.fates:
                line += "; webhooks: " + ", ".join(refund.fates)
            lines.append(line)
        if self.dispute:
            lines.append(f"  dispute, {self.dispute}")
        return lines


@dataclass(frozen=True)
class Scenario:
    seed: int
    payments: tuple[PaymentPlan, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {len(self.payments)} payment(s) of one customer"]
        for index, plan in enumerate(self.payments, 1):
            lines.extend(plan.describe(index))
        return "\n".join(lines)


# ---- Drawing -------------------------------------------------------------------------------

_CHARGE_WEIGHTS = {
    ChargeAnswer.APPROVE: 30,
    ChargeAnswer.DECLINE: 8,
    ChargeAnswer.THREE_DS: 12,
    ChargeAnswer.PENDING: 10,
    ChargeAnswer.SLOW: 6,
    ChargeAnswer.TIMEOUT_AFTER: 8,
    ChargeAnswer.TIMEOUT_BEFORE: 6,
    ChargeAnswer.SERVER_ERROR: 6,
    ChargeAnswer.RATE_LIMITED: 4,
    ChargeAnswer.REFUSED: 6,
    ChargeAnswer.WRONG_AMOUNT: 2,
}
_FATE_WEIGHTS = {
    Fate.ON_TIME: 40,
    Fate.EARLY: 10,
    Fate.LATE: 15,
    Fate.DUPLICATE: 12,
    Fate.LOST: 15,
    Fate.WRONG_AMOUNT: 3,
}
_RESOLUTIONS = {Resolution.SUCCEED: 6, Resolution.DECLINE: 2, Resolution.ABANDON: 2}
_LOOKUPS = {LookupAnswer.TRUTH: 5, LookupAnswer.LAGGING: 3, LookupAnswer.ERROR: 2}
_MODIFY = {
    ModifyAnswer.DONE: 6,
    ModifyAnswer.ASYNC: 3,
    ModifyAnswer.TIMEOUT_AFTER: 2,
    ModifyAnswer.ERROR: 2,
}


def _pick(rng: random.Random, weights: dict[T, int]) -> T:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _some(rng: random.Random, weights: dict[T, int], most: int) -> tuple[T, ...]:
    return tuple(_pick(rng, weights) for _ in range(rng.randint(0, most)))


def _moments(rng: random.Random, capture: CaptureMethod, review: bool) -> tuple[Moment, ...]:
    actions = [Action.CANCEL, Action.RECONCILE, Action.RESTART, Action.RESTART]
    if capture is CaptureMethod.MANUAL:
        actions += [Action.CAPTURE, Action.CAPTURE, Action.PARTIAL_CAPTURE]
    if review:
        actions += [Action.APPROVE, Action.APPROVE, Action.REJECT]
    moments = []
    for _ in range(rng.randint(0, 3)):
        moments.append(Moment(after_call=rng.randint(0, 5), action=rng.choice(actions)))
    if review and rng.random() < 0.8:
        # Most reviewed payments get their decision soon (the rest meet the review deadline).
        verdict = Action.APPROVE if rng.random() < 0.7 else Action.REJECT
        moments.append(Moment(after_call=0, action=verdict))
    if capture is CaptureMethod.MANUAL and rng.random() < 0.7:
        capture_kind = rng.choice([Action.CAPTURE, Action.PARTIAL_CAPTURE])
        moments.append(Moment(after_call=rng.randint(1, 4), action=capture_kind))
    return tuple(sorted(moments, key=lambda m: m.after_call))


def _refunds(rng: random.Random, amount: int) -> tuple[RefundPlan, ...]:
    plans = []
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        kind = rng.random()
        if kind < 0.3:
            refund_amount: int | None = None
        elif kind < 0.85:
            refund_amount = rng.randint(1, amount)
        else:
            refund_amount = amount + rng.randint(1, 500)  # over the limit
        plans.append(
            RefundPlan(
                amount=refund_amount,
                answers=_some(rng, _MODIFY, 2),
                fates=_some(rng, _FATE_WEIGHTS, 2),
            )
        )
    return tuple(plans)


def draw(seed: int) -> Scenario:
    """The scenario of ``seed``: the same seed always draws the same scenario."""
    rng = random.Random(seed)
    payments = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        capture = CaptureMethod.MANUAL if rng.random() < 0.3 else CaptureMethod.AUTOMATIC
        route = tuple(rng.sample(GATEWAYS, rng.choice((1, 1, 2, 2, 3))))
        bias = rng.choices((0, 70, 80), weights=(80, 15, 5))[0]
        amount = rng.choice((500, 1000, 2500, 9999, 120000))
        charges = tuple(
            (_pick(rng, _CHARGE_WEIGHTS), _pick(rng, _RESOLUTIONS))
            for _ in range(rng.randint(0, 4))
        )
        payments.append(
            PaymentPlan(
                amount=amount,
                currency=rng.choice(("EUR", "EUR", "USD", "JPY")),
                capture=capture,
                route=route,
                risk_bias=bias,
                charges=charges,
                lookups=_some(rng, _LOOKUPS, 4),
                modifies=_some(rng, _MODIFY, 2),
                fates=_some(rng, _FATE_WEIGHTS, 5),
                moments=_moments(rng, capture, review=bias == 70),
                refunds=_refunds(rng, amount),
                dispute=rng.choices(("", "won", "lost"), weights=(85, 8, 7))[0],
            )
        )
    return Scenario(seed=seed, payments=tuple(payments))
