"""Fraud scoring from the ledger: a 0 to 100 score with named, explained factors.

The rules (``rules-1``, docs/fraud.md) are plain functions of three ledger reads, so each can be
tested without a database; the activity reads, evaluates, stores the assessment and returns it.
A signal the request does not carry (device, country) is *unknown*: the rules that need it
cannot fire, and a zero-weight ``missing_signals`` factor says which ones were not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session
from temporalio import activity

from activities.ledger_errors import ledger_transaction
from ledger import risk as queries
from ledger.engine import SessionFactory
from ledger.models import utcnow
from paytide.money import major_units_threshold
from paytide.settings import Settings
from workflows.contract import PaymentRequest, RiskAssessment, RiskFactor, RiskInput

MODEL_VERSION = "rules-1"
MAX_SCORE = 100

DEFAULT_DECLINE_CODES = (
    "card_declined,generic_decline,insufficient_funds,do_not_honor,incorrect_cvc,"
    "invalid_cvc,incorrect_number,invalid_number,expired_card,lost_card,stolen_card,"
    "pickup_card,fraudulent,refused*"
)


def parse_codes(text: str) -> frozenset[str]:
    """``"a, b,,c*"`` → ``{"a", "b", "c*"}``: the comma-separated form settings use."""
    return frozenset(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True, kw_only=True)
class RiskRules:
    """Weights, windows and thresholds of every rule; defaults equal the settings' defaults."""

    large_amount_major: int = 10_000
    large_amount_weight: int = 20
    daily_window_seconds: float = 24 * 3600
    daily_max_payments: int = 5
    daily_weight: int = 30
    velocity_window_seconds: float = 300
    velocity_max_payments: int = 5
    velocity_weight: int = 30
    unusual_amount_factor: int = 3
    unusual_amount_weight: int = 25
    unknown_device_weight: int = 15
    location_travel_window_seconds: float = 3600
    location_weight: int = 20
    card_testing_window_seconds: float = 600
    card_testing_min_attempts: int = 3
    card_testing_small_amount_major: int = 2
    card_testing_decline_codes: frozenset[str] = field(
        default_factory=lambda: parse_codes(DEFAULT_DECLINE_CODES)
    )
    card_testing_weight: int = 40
    history_max_payments: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskRules:
        return cls(
            large_amount_major=settings.risk_large_amount_major,
            large_amount_weight=settings.risk_large_amount_weight,
            daily_window_seconds=settings.risk_daily_window_seconds,
            daily_max_payments=settings.risk_daily_max_payments,
            daily_weight=settings.risk_daily_weight,
            velocity_window_seconds=settings.risk_velocity_window_seconds,
            velocity_max_payments=settings.risk_velocity_max_payments,
            velocity_weight=settings.risk_velocity_weight,
            unusual_amount_factor=settings.risk_unusual_amount_factor,
            unusual_amount_weight=settings.risk_unusual_amount_weight,
            unknown_device_weight=settings.risk_unknown_device_weight,
            location_travel_window_seconds=settings.risk_location_travel_window_seconds,
            location_weight=settings.risk_location_weight,
            card_testing_window_seconds=settings.risk_card_testing_window_seconds,
            card_testing_min_attempts=settings.risk_card_testing_min_attempts,
            card_testing_small_amount_major=settings.risk_card_testing_small_amount_major,
            card_testing_decline_codes=parse_codes(settings.risk_card_testing_decline_codes),
            card_testing_weight=settings.risk_card_testing_weight,
            history_max_payments=settings.risk_history_max_payments,
        )

    def windows(self, now: datetime) -> queries.Windows:
        def start(seconds: float) -> datetime:
            return now - timedelta(seconds=seconds)

        return queries.Windows(
            daily=start(self.daily_window_seconds),
            velocity=start(self.velocity_window_seconds),
            card_testing=start(self.card_testing_window_seconds),
            travel=start(self.location_travel_window_seconds),
        )


def evaluate(
    rules: RiskRules, request: PaymentRequest, signals: queries.Signals
) -> list[RiskFactor]:
    """Every factor that fires, each with the evidence an operator needs to see why."""
    candidates = [
        large_amount(rules, request),
        unusual_amount(rules, request, signals.history),
        daily_volume(rules, signals.customer),
        velocity(rules, signals.customer),
        unknown_device(rules, request, signals.history),
        location_anomaly(rules, request, signals.history, signals.customer),
        card_testing(rules, request, signals.customer, signals.method),
        missing_signals(request),
    ]
    return [factor for factor in candidates if factor is not None]


def score(factors: Sequence[RiskFactor]) -> int:
    return min(MAX_SCORE, sum(factor.weight for factor in factors))


def large_amount(rules: RiskRules, request: PaymentRequest) -> RiskFactor | None:
    threshold = major_units_threshold(rules.large_amount_major, request.currency)
    if request.amount_minor <= threshold:
        return None
    return RiskFactor(
        name="large_amount",
        weight=rules.large_amount_weight,
        evidence={"amount_minor": request.amount_minor, "threshold_minor": threshold},
    )


def unusual_amount(
    rules: RiskRules, request: PaymentRequest, history: queries.SucceededHistory
) -> RiskFactor | None:
    """More than N times the customer's average succeeded amount in the same currency."""
    count, total = history.same_currency, history.same_currency_total_minor
    # amount > factor * total / count, in integers: no rounding, no floats near money.
    if count == 0 or request.amount_minor * count <= rules.unusual_amount_factor * total:
        return None
    return RiskFactor(
        name="unusual_amount",
        weight=rules.unusual_amount_weight,
        evidence={
            "amount_minor": request.amount_minor,
            "average_minor": total // count,
            "succeeded_payments": count,
            "factor": rules.unusual_amount_factor,
            "currency": request.currency,
        },
    )


def too_many_payments(
    name: str, count: int, limit: int, window_seconds: float, weight: int
) -> RiskFactor | None:
    """The customer made more than ``limit`` earlier payments within the window."""
    if count <= limit:
        return None
    return RiskFactor(
        name=name,
        weight=weight,
        evidence={"payments": count, "limit": limit, "window_seconds": int(window_seconds)},
    )


def daily_volume(rules: RiskRules, recent: queries.CustomerRecent) -> RiskFactor | None:
    return too_many_payments(
        "daily_volume",
        recent.daily,
        rules.daily_max_payments,
        rules.daily_window_seconds,
        rules.daily_weight,
    )


def velocity(rules: RiskRules, recent: queries.CustomerRecent) -> RiskFactor | None:
    return too_many_payments(
        "velocity",
        recent.velocity,
        rules.velocity_max_payments,
        rules.velocity_window_seconds,
        rules.velocity_weight,
    )


def unknown_device(
    rules: RiskRules, request: PaymentRequest, history: queries.SucceededHistory
) -> RiskFactor | None:
    """A device never seen on this customer's succeeded payments (that recorded one)."""
    device = request.risk.device_id
    if not device or history.with_device == 0 or history.device_seen:
        return None
    return RiskFactor(
        name="unknown_device",
        weight=rules.unknown_device_weight,
        evidence={
            "device_id": device,
            "succeeded_with_device": history.with_device,
            "succeeded_payments": history.payments,
        },
    )


def location_anomaly(
    rules: RiskRules,
    request: PaymentRequest,
    history: queries.SucceededHistory,
    recent: queries.CustomerRecent,
) -> RiskFactor | None:
    """A country never paid from, or another country too recently to have travelled: once."""
    country = request.risk.country
    if not country:
        return None
    reasons: list[str] = []
    evidence: dict[str, int | str] = {"country": country}
    if history.with_country > 0 and not history.country_seen:
        reasons.append("new_country")
        evidence["known_countries"] = history.countries
        evidence["succeeded_with_country"] = history.with_country
    if recent.elsewhere > 0:
        reasons.append("impossible_travel")
        evidence["other_country"] = recent.other_country or ""
        evidence["payments_elsewhere"] = recent.elsewhere
        evidence["window_seconds"] = int(rules.location_travel_window_seconds)
    if not reasons:
        return None
    evidence["reason"] = ",".join(reasons)
    return RiskFactor(name="location_anomaly", weight=rules.location_weight, evidence=evidence)


def card_testing(
    rules: RiskRules,
    request: PaymentRequest,
    customer: queries.CustomerRecent,
    method: queries.MethodRecent,
) -> RiskFactor | None:
    """Several tiny amounts or declines on the payment method or the customer, minutes apart."""
    least = rules.card_testing_min_attempts
    counts = (method.small, method.declines, customer.small, customer.declines)
    if max(counts) < least:
        return None
    return RiskFactor(
        name="card_testing",
        weight=rules.card_testing_weight,
        evidence={
            "small_by_method": method.small,
            "declines_by_method": method.declines,
            "small_by_customer": customer.small,
            "declines_by_customer": customer.declines,
            "min_attempts": least,
            "small_amount_minor": major_units_threshold(
                rules.card_testing_small_amount_major, request.currency
            ),
            "window_seconds": int(rules.card_testing_window_seconds),
        },
    )


# Signals the rules read from the request, and the rules that cannot fire without each.
SIGNAL_RULES: dict[str, tuple[str, ...]] = {
    "device_id": ("unknown_device",),
    "country": ("location_anomaly",),
}


def missing_signals(request: PaymentRequest) -> RiskFactor | None:
    """Zero weight: an absent signal is unknown, neither safe nor suspicious; name it."""
    given = {"device_id": request.risk.device_id, "country": request.risk.country}
    missing = [name for name in SIGNAL_RULES if not given[name]]
    if not missing:
        return None
    return RiskFactor(
        name="missing_signals",
        weight=0,
        evidence={
            "missing": ",".join(missing),
            "rules_not_scored": ",".join(rule for name in missing for rule in SIGNAL_RULES[name]),
        },
    )


class RiskActivities:
    def __init__(self, sessions: SessionFactory, rules: RiskRules | None = None) -> None:
        self._sessions = sessions
        self._rules = rules or RiskRules()
        # Built once: every score runs the same compiled statement with new parameters.
        self._query = queries.scoring_query(
            small_amount_major=self._rules.card_testing_small_amount_major,
            decline_codes=self._rules.card_testing_decline_codes,
            history_limit=self._rules.history_max_payments,
        )

    @classmethod
    def from_settings(cls, sessions: SessionFactory, settings: Settings) -> RiskActivities:
        return cls(sessions, RiskRules.from_settings(settings))

    @activity.defn(name="score_risk")
    def score_risk(self, risk_input: RiskInput) -> RiskAssessment:
        with ledger_transaction(self._sessions) as session:
            return self.score_in(session, risk_input.request)

    def score_in(self, session: Session, request: PaymentRequest) -> RiskAssessment:
        """Score ``request`` and save the assessment, inside the caller's transaction."""
        subject = queries.Subject(
            payment_id=request.payment_id,
            merchant_id=request.merchant_id,
            customer_id=request.customer_id,
            payment_method=request.payment_method,
            currency=request.currency,
            device_id=request.risk.device_id or None,
            country=request.risk.country or None,
        )
        windows = self._rules.windows(utcnow())
        signals = queries.read_signals(session, self._query, subject, windows)
        factors = evaluate(self._rules, request, signals)
        total = score(factors)
        queries.save_assessment(
            session,
            payment_id=request.payment_id,
            score=total,
            factors=[asdict(factor) for factor in factors],
            model_version=MODEL_VERSION,
        )
        activity.logger.info(
            "risk scored",
            extra={
                "payment_id": request.payment_id,
                "risk_score": total,
                "risk_factors": [factor.name for factor in factors],
            },
        )
        return RiskAssessment(score=total, factors=factors)
