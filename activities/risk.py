"""Fraud scoring from the ledger: a 0 to 100 score with named, explained factors."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity

from ledger import payments
from ledger.engine import SessionFactory, transaction
from ledger.models import utcnow
from paytide.money import major_units_threshold
from workflows.contract import RiskAssessment, RiskFactor, RiskInput


@dataclass(frozen=True, kw_only=True)
class RiskRules:
    large_amount_major: int = 10_000
    large_amount_weight: int = 20
    daily_window_seconds: float = 24 * 3600
    daily_max_payments: int = 5
    daily_weight: int = 30
    velocity_window_seconds: float = 300
    velocity_max_payments: int = 5
    velocity_weight: int = 30


class RiskActivities:
    def __init__(self, sessions: SessionFactory, rules: RiskRules | None = None) -> None:
        self._sessions = sessions
        self._rules = rules or RiskRules()

    @activity.defn(name="score_risk")
    def score_risk(self, risk_input: RiskInput) -> RiskAssessment:
        request = risk_input.request
        rules = self._rules
        factors: list[RiskFactor] = []

        threshold = major_units_threshold(rules.large_amount_major, request.currency)
        if request.amount_minor > threshold:
            factors.append(
                RiskFactor(
                    name="large_amount",
                    weight=rules.large_amount_weight,
                    evidence={"amount_minor": request.amount_minor, "threshold_minor": threshold},
                )
            )

        now = utcnow()
        with transaction(self._sessions) as session:
            daily = payments.customer_activity(
                session,
                merchant_id=request.merchant_id,
                customer_id=request.customer_id,
                exclude_id=request.payment_id,
                since=payments.window_start(now, rules.daily_window_seconds),
            )
            recent = payments.customer_activity(
                session,
                merchant_id=request.merchant_id,
                customer_id=request.customer_id,
                exclude_id=request.payment_id,
                since=payments.window_start(now, rules.velocity_window_seconds),
            )
        if daily > rules.daily_max_payments:
            factors.append(
                RiskFactor(
                    name="daily_volume",
                    weight=rules.daily_weight,
                    evidence={"payments_24h": daily, "limit": rules.daily_max_payments},
                )
            )
        if recent > rules.velocity_max_payments:
            factors.append(
                RiskFactor(
                    name="velocity",
                    weight=rules.velocity_weight,
                    evidence={"payments_5m": recent, "limit": rules.velocity_max_payments},
                )
            )
        score = min(100, sum(factor.weight for factor in factors))
        activity.logger.info(
            "risk scored", extra={"payment_id": request.payment_id, "risk_score": score}
        )
        return RiskAssessment(score=score, factors=factors)
