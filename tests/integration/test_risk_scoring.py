"""Fraud scoring on crafted ledger histories, on SQLite and PostgreSQL: each rule fires at its
threshold and not just below it, the score is capped, missing signals are named, and the
assessment is stored once per payment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio.testing import ActivityEnvironment

from activities.admission import AdmissionActivities
from activities.risk import MODEL_VERSION, RiskActivities, RiskRules
from ledger.engine import session_factory
from ledger.models import Payment, PaymentEvent, RiskAssessmentRecord, utcnow
from ledger.risk import get_assessment
from workflows.contract import (
    Admission,
    PaymentRequest,
    PaymentStatus,
    RiskAssessment,
    RiskContext,
    RiskFactor,
    RiskInput,
    Transition,
)

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class Ledger:
    """One customer and one payment method no other test uses, and a way to score for them."""

    engine: Engine
    merchant_id: str = field(default_factory=lambda: unique("m"))
    customer_id: str = field(default_factory=lambda: unique("cus"))
    payment_method: str = field(default_factory=lambda: unique("pm"))

    def add(
        self,
        count: int = 1,
        *,
        ago: timedelta = HOUR,
        amount: int = 2500,
        currency: str = "EUR",
        status: PaymentStatus = PaymentStatus.SUCCEEDED,
        failure_code: str | None = None,
        device: str | None = None,
        country: str | None = None,
        customer_id: str | None = None,
        payment_method: str | None = None,
        merchant_id: str | None = None,
    ) -> None:
        """Insert ``count`` past payments created ``ago`` (defaults: this customer, card, shop)."""
        created = utcnow() - ago
        with Session(self.engine) as session:
            for _ in range(count):
                key = unique("key")
                session.add(
                    Payment(
                        id=unique("pay"),
                        merchant_id=merchant_id or self.merchant_id,
                        idempotency_key=key,
                        fingerprint=key[:64],
                        workflow_id=f"payment:{merchant_id or self.merchant_id}:{key}",
                        status=status.value,
                        amount_minor=amount,
                        currency=currency,
                        customer_id=customer_id or self.customer_id,
                        order_id=unique("order"),
                        payment_method=payment_method or self.payment_method,
                        capture_method="automatic",
                        device_id=device,
                        country=country,
                        failure_code=failure_code,
                        created_at=created,
                        updated_at=created,
                    )
                )
            session.commit()

    def request(
        self,
        *,
        amount: int = 2500,
        currency: str = "EUR",
        device: str | None = "dev_home",
        country: str | None = "FR",
    ) -> PaymentRequest:
        key = unique("key")
        return PaymentRequest(
            payment_id=unique("pay"),
            merchant_id=self.merchant_id,
            idempotency_key=key,
            fingerprint=key[:64],
            amount_minor=amount,
            currency=currency,
            customer_id=self.customer_id,
            payment_method=self.payment_method,
            order_id=unique("order"),
            risk=RiskContext(ip_address="203.0.113.7", device_id=device, country=country),
        )

    def record(self, request: PaymentRequest) -> None:
        """The payment being scored, as the workflow left it in the ledger: ``risk_check``."""
        now = utcnow()
        with Session(self.engine) as session:
            session.add(
                Payment(
                    id=request.payment_id,
                    merchant_id=request.merchant_id,
                    idempotency_key=request.idempotency_key,
                    fingerprint=request.fingerprint,
                    workflow_id=f"payment:{request.merchant_id}:{request.idempotency_key}",
                    status=PaymentStatus.RISK_CHECK.value,
                    amount_minor=request.amount_minor,
                    currency=request.currency,
                    customer_id=request.customer_id,
                    order_id=request.order_id,
                    payment_method=request.payment_method,
                    capture_method="automatic",
                    device_id=request.risk.device_id,
                    country=request.risk.country,
                    created_at=now,
                    updated_at=now,
                )
            )
            session.commit()

    def run(self, request: PaymentRequest, rules: RiskRules | None = None) -> RiskAssessment:
        activities = RiskActivities(session_factory(self.engine), rules)
        result: RiskAssessment = ActivityEnvironment().run(
            activities.score_risk, RiskInput(request=request)
        )
        return result

    def score(
        self,
        *,
        amount: int = 2500,
        currency: str = "EUR",
        device: str | None = "dev_home",
        country: str | None = "FR",
    ) -> RiskAssessment:
        """Record a new payment of this customer and card, and score it."""
        request = self.request(amount=amount, currency=currency, device=device, country=country)
        self.record(request)
        return self.run(request)


@pytest.fixture
def ledger(ledger_engine: Engine) -> Iterator[Ledger]:
    yield Ledger(ledger_engine)


def factor(assessment: RiskAssessment, name: str) -> RiskFactor | None:
    return next((f for f in assessment.factors if f.name == name), None)


def names(assessment: RiskAssessment) -> set[str]:
    return {f.name for f in assessment.factors}


# ---- initiation rules ------------------------------------------------------------------------


def test_large_amount_fires_above_ten_thousand_major_units(ledger: Ledger) -> None:
    """10,000.01 EUR scores large_amount (+20); 10,000.00 EUR does not."""
    assert "large_amount" not in names(ledger.score(amount=1_000_000))
    fired = factor(ledger.score(amount=1_000_001), "large_amount")
    assert fired is not None
    assert fired.weight == 20
    assert fired.evidence == {"amount_minor": 1_000_001, "threshold_minor": 1_000_000}


def test_daily_volume_fires_above_five_payments_in_24h(ledger: Ledger) -> None:
    """Six earlier payments in 24 h score daily_volume; five do not, nor any older than 24 h."""
    ledger.add(5, ago=20 * HOUR)
    ledger.add(3, ago=25 * HOUR)
    assert "daily_volume" not in names(ledger.score())
    ledger.add(1, ago=2 * HOUR)
    fired = factor(ledger.score(), "daily_volume")
    # The first scored payment is in the ledger now too: it counts for the second.
    assert fired is not None
    assert fired.weight == 30
    assert fired.evidence["payments"] == 7
    assert fired.evidence["limit"] == 5


def test_velocity_fires_above_five_payments_in_five_minutes(ledger: Ledger) -> None:
    """Six earlier payments in 5 minutes score velocity (+30); five do not, older ones never."""
    ledger.add(4, ago=3 * MINUTE)
    ledger.add(1, ago=4 * MINUTE)
    ledger.add(10, ago=7 * MINUTE, payment_method=unique("pm"))
    below = ledger.score()
    assert "velocity" not in names(below)
    fired = factor(ledger.score(), "velocity")
    assert fired is not None
    assert fired.weight == 30
    assert fired.evidence == {"payments": 6, "limit": 5, "window_seconds": 300}


# ---- history rules ---------------------------------------------------------------------------


def test_unusual_amount_fires_above_three_times_the_succeeded_average(ledger: Ledger) -> None:
    """Average 10.00 EUR over succeeded payments: 30.01 fires (+25), 30.00 does not."""
    ledger.add(2, amount=500)
    ledger.add(1, amount=2000)
    # Failed payments and other currencies are not part of the average.
    ledger.add(3, amount=1, status=PaymentStatus.FAILED, failure_code="processing_error")
    ledger.add(2, amount=1_000_000, currency="JPY")
    assert "unusual_amount" not in names(ledger.score(amount=3000))
    fired = factor(ledger.score(amount=3001), "unusual_amount")
    assert fired is not None
    assert fired.weight == 25
    assert fired.evidence == {
        "amount_minor": 3001,
        "average_minor": 1000,
        "succeeded_payments": 3,
        "factor": 3,
        "currency": "EUR",
    }


def test_unusual_amount_needs_succeeded_history(ledger: Ledger) -> None:
    """A customer without succeeded payments in the currency cannot look unusual."""
    ledger.add(4, amount=100, status=PaymentStatus.FAILED, failure_code="processing_error")
    ledger.add(1, amount=100, currency="USD")
    assert "unusual_amount" not in names(ledger.score(amount=900_000))


def test_unknown_device_fires_for_a_device_never_seen_on_a_success(ledger: Ledger) -> None:
    """A device absent from the succeeded history scores unknown_device (+15); a known one not."""
    ledger.add(2, device="dev_home")
    # Seen only on a failed payment: still unknown.
    ledger.add(1, device="dev_new", status=PaymentStatus.FAILED, failure_code="card_declined")
    assert "unknown_device" not in names(ledger.score(device="dev_home"))
    fired = factor(ledger.score(device="dev_new"), "unknown_device")
    assert fired is not None
    assert fired.weight == 15
    assert fired.evidence == {
        "device_id": "dev_new",
        "succeeded_with_device": 2,
        "succeeded_payments": 2,
    }


def test_unknown_device_needs_a_device_history(ledger: Ledger) -> None:
    """No succeeded payment, or none that recorded a device: the device cannot be judged."""
    assert "unknown_device" not in names(ledger.score(device="dev_first"))
    ledger.add(3, device=None)
    assert "unknown_device" not in names(ledger.score(device="dev_first"))


def test_new_country_fires_for_a_country_never_paid_from(ledger_engine: Engine) -> None:
    """Succeeded only from FR: a DE payment scores location_anomaly (+20), an FR one does not."""
    scored: dict[str, RiskAssessment] = {}
    for country in ("FR", "DE"):
        # A customer each: a first payment scored from FR would make DE an impossible journey.
        ledger = Ledger(ledger_engine)
        ledger.add(2, country="FR", ago=48 * HOUR)
        ledger.add(1, country="DE", ago=48 * HOUR, status=PaymentStatus.FAILED, failure_code="x")
        scored[country] = ledger.score(country=country)
    assert "location_anomaly" not in names(scored["FR"])
    fired = factor(scored["DE"], "location_anomaly")
    assert fired is not None
    assert fired.weight == 20
    assert fired.evidence == {
        "country": "DE",
        "known_countries": 1,
        "succeeded_with_country": 2,
        "reason": "new_country",
    }


def test_impossible_travel_fires_for_another_country_within_an_hour(ledger: Ledger) -> None:
    """A payment from BR 50 minutes ago makes an FR payment location_anomaly; 70 minutes not."""
    ledger.add(2, country="FR", ago=48 * HOUR)
    ledger.add(1, country="BR", ago=70 * MINUTE, status=PaymentStatus.FAILED, failure_code="x")
    assert "location_anomaly" not in names(ledger.score(country="FR"))
    ledger.add(1, country="BR", ago=50 * MINUTE, status=PaymentStatus.FAILED, failure_code="x")
    fired = factor(ledger.score(country="FR"), "location_anomaly")
    assert fired is not None
    assert fired.evidence == {
        "country": "FR",
        "other_country": "BR",
        "payments_elsewhere": 1,
        "window_seconds": 3600,
        "reason": "impossible_travel",
    }


def test_location_anomaly_counts_once(ledger: Ledger) -> None:
    """A new country that is also an impossible journey scores +20 once, with both reasons."""
    ledger.add(2, country="FR", ago=48 * HOUR)
    ledger.add(1, country="FR", ago=10 * MINUTE, status=PaymentStatus.FAILED, failure_code="x")
    assessment = ledger.score(country="US")
    location = [f for f in assessment.factors if f.name == "location_anomaly"]
    assert len(location) == 1
    assert location[0].weight == 20
    assert location[0].evidence["reason"] == "new_country,impossible_travel"
    assert assessment.score == 20


# ---- card testing ----------------------------------------------------------------------------


def test_card_testing_fires_on_three_small_amounts_on_one_card(ledger: Ledger) -> None:
    """Three payments of at most 2.00 EUR on the card in 10 minutes (any customer) score +40."""
    ledger.add(2, amount=200, ago=5 * MINUTE, customer_id=unique("cus"))
    ledger.add(1, amount=201, ago=5 * MINUTE, customer_id=unique("cus"))
    ledger.add(1, amount=100, ago=11 * MINUTE, customer_id=unique("cus"))
    assert "card_testing" not in names(ledger.score())
    ledger.add(1, amount=150, ago=2 * MINUTE, customer_id=unique("cus"))
    fired = factor(ledger.score(), "card_testing")
    assert fired is not None
    assert fired.weight == 40
    assert fired.evidence["small_by_method"] == 3
    assert fired.evidence["small_amount_minor"] == 200
    assert fired.evidence["window_seconds"] == 600


def test_card_testing_small_amount_follows_the_currency_exponent(ledger: Ledger) -> None:
    """2 JPY is small (no minor unit) and 3 JPY is not: thresholds are in major units."""
    ledger.add(2, amount=2, currency="JPY", ago=MINUTE)
    ledger.add(3, amount=3, currency="JPY", ago=MINUTE)
    assert "card_testing" not in names(ledger.score(currency="JPY", amount=5000))
    ledger.add(1, amount=1, currency="JPY", ago=MINUTE)
    assert "card_testing" in names(ledger.score(currency="JPY", amount=5000))


def test_card_testing_fires_on_three_declines_of_the_customer(ledger: Ledger) -> None:
    """Three declines of the customer (on several cards) in 10 minutes score +40; two do not."""
    for _ in range(2):
        ledger.add(
            ago=3 * MINUTE,
            status=PaymentStatus.FAILED,
            failure_code="card_declined",
            payment_method=unique("pm"),
        )
    # Failures that are not declines, and declines outside the window, do not count.
    ledger.add(3, ago=3 * MINUTE, status=PaymentStatus.FAILED, failure_code="processing_error")
    ledger.add(3, ago=12 * MINUTE, status=PaymentStatus.FAILED, failure_code="card_declined")
    assert "card_testing" not in names(ledger.score())
    ledger.add(
        ago=MINUTE,
        status=PaymentStatus.FAILED,
        failure_code="refused_14",  # Adyen's refusal, matched by the "refused*" prefix
        payment_method=unique("pm"),
    )
    fired = factor(ledger.score(), "card_testing")
    assert fired is not None
    assert fired.evidence["declines_by_customer"] == 3
    assert fired.evidence["declines_by_method"] == 0


def test_card_testing_fires_on_three_declines_of_the_card(ledger: Ledger) -> None:
    """Three declines of one card across customers in 10 minutes score +40."""
    for _ in range(3):
        ledger.add(
            ago=4 * MINUTE,
            amount=5000,
            status=PaymentStatus.FAILED,
            failure_code="insufficient_funds",
            customer_id=unique("cus"),
        )
    fired = factor(ledger.score(), "card_testing")
    assert fired is not None
    assert fired.evidence["declines_by_method"] == 3
    assert fired.evidence["declines_by_customer"] == 0


# ---- the whole assessment --------------------------------------------------------------------


def test_the_payment_being_scored_is_left_out_of_every_count(ledger: Ledger) -> None:
    """The risk_check row itself (small, same card, same customer) never counts against it."""
    ledger.add(2, amount=100, ago=MINUTE)
    ledger.add(3, ago=2 * MINUTE, amount=9000)
    assessment = ledger.score(amount=100)
    assert not {"card_testing", "velocity", "daily_volume"} & names(assessment)


def test_other_merchants_payments_do_not_count(ledger: Ledger) -> None:
    """The same customer and card ids at another merchant are another customer and card."""
    ledger.add(8, amount=100, ago=MINUTE, merchant_id=unique("m"))
    assert ledger.score().score == 0


def test_score_is_capped_at_100(ledger: Ledger) -> None:
    """Every rule at once sums to 200; the score stops at 100 and every factor is kept."""
    ledger.add(3, amount=1000, device="dev_home", country="FR", ago=48 * HOUR)
    ledger.add(6, amount=100, ago=MINUTE, status=PaymentStatus.FAILED, failure_code="do_not_honor")
    ledger.add(1, country="BR", ago=30 * MINUTE, status=PaymentStatus.FAILED, failure_code="x")
    assessment = ledger.score(amount=2_000_000, device="dev_other", country="US")
    assert assessment.score == 100
    assert names(assessment) == {
        "large_amount",
        "unusual_amount",
        "daily_volume",
        "velocity",
        "unknown_device",
        "location_anomaly",
        "card_testing",
    }
    assert sum(f.weight for f in assessment.factors) == 180


def test_missing_signals_are_unknown_not_safe_nor_fraud(ledger: Ledger) -> None:
    """No device and no country: those rules cannot fire, a zero-weight factor names them."""
    ledger.add(3, device="dev_home", country="FR")
    assessment = ledger.score(device=None, country=None)
    assert assessment.score == 0
    assert assessment.factors == [
        RiskFactor(
            name="missing_signals",
            weight=0,
            evidence={
                "missing": "device_id,country",
                "rules_not_scored": "unknown_device,location_anomaly",
            },
        )
    ]
    only_device = ledger.score(device=None, country="FR")
    assert factor(only_device, "missing_signals") == RiskFactor(
        name="missing_signals",
        weight=0,
        evidence={"missing": "device_id", "rules_not_scored": "unknown_device"},
    )
    assert "missing_signals" not in names(ledger.score())


def test_assessment_is_stored_once_when_the_activity_runs_twice(ledger: Ledger) -> None:
    """A retried score_risk upserts the one risk_assessments row of the payment."""
    ledger.add(6, ago=2 * MINUTE, amount=500_000)
    request = ledger.request(amount=1_000_001)
    ledger.record(request)
    first = ledger.run(request)
    second = ledger.run(request)
    assert first.score == second.score == 80
    with Session(ledger.engine) as session:
        total = session.exec(
            select(func.count())
            .select_from(RiskAssessmentRecord)
            .where(col(RiskAssessmentRecord.payment_id) == request.payment_id)
        ).one()
        row = get_assessment(session, request.payment_id)
    assert total == 1
    assert row is not None
    assert row.score == 80
    assert row.model_version == MODEL_VERSION
    assert [f["name"] for f in row.factors] == ["large_amount", "daily_volume", "velocity"]
    assert row.factors[0]["evidence"] == {"amount_minor": 1_000_001, "threshold_minor": 1_000_000}


def test_rules_come_from_settings_values(ledger: Ledger) -> None:
    """Weights and thresholds are the rules' own: a lower velocity limit and weight apply."""
    ledger.add(2, ago=MINUTE)
    request = ledger.request()
    ledger.record(request)
    assessment = ledger.run(request, RiskRules(velocity_max_payments=1, velocity_weight=7))
    assert assessment.score == 7
    assert names(assessment) == {"velocity"}


def test_history_rules_read_only_the_latest_successes(ledger: Ledger) -> None:
    """With a history limit of 2, older large payments no longer lift the average."""
    ledger.add(3, amount=100_000, ago=48 * HOUR)
    ledger.add(2, amount=1000, ago=HOUR)
    request = ledger.request(amount=3001)
    ledger.record(request)
    assert "unusual_amount" not in names(ledger.run(request))
    fired = factor(ledger.run(request, RiskRules(history_max_payments=2)), "unusual_amount")
    assert fired is not None
    assert fired.evidence["average_minor"] == 1000
    assert fired.evidence["succeeded_payments"] == 2


def _admission(request: PaymentRequest) -> Admission:
    workflow_id = f"payment:{request.merchant_id}:{request.idempotency_key}"
    common = {
        "payment_id": request.payment_id,
        "workflow_id": workflow_id,
        "at": utcnow().isoformat(),
    }
    return Admission(
        received=Transition(seq=1, status=PaymentStatus.RECEIVED, request=request, **common),
        risk_check=Transition(seq=2, status=PaymentStatus.RISK_CHECK, **common),
    )


def test_admission_records_both_transitions_and_the_score_once_however_often_it_runs(
    ledger: Ledger,
) -> None:
    """admit_payment writes received, risk_check and one assessment; a retry adds nothing."""
    ledger.add(6, ago=2 * MINUTE, amount=500_000)
    request = ledger.request(amount=1_000_001)
    sessions = session_factory(ledger.engine)
    admit = AdmissionActivities(sessions, RiskActivities(sessions)).admit_payment
    first = ActivityEnvironment().run(admit, _admission(request))
    second = ActivityEnvironment().run(admit, _admission(request))
    assert first.score == second.score == 80
    with Session(ledger.engine) as session:
        events = session.exec(
            select(PaymentEvent.status)
            .where(col(PaymentEvent.payment_id) == request.payment_id)
            .order_by(col(PaymentEvent.seq))
        ).all()
        row = session.get(Payment, request.payment_id)
        assessments = session.exec(
            select(func.count())
            .select_from(RiskAssessmentRecord)
            .where(col(RiskAssessmentRecord.payment_id) == request.payment_id)
        ).one()
    assert list(events) == ["received", "risk_check"]
    assert row is not None
    assert row.status == "risk_check"
    assert row.last_seq == 2
    assert assessments == 1


def test_admission_scores_the_payment_as_score_risk_would(ledger: Ledger) -> None:
    """Scoring inside the admission transaction sees the same history as the separate step."""
    ledger.add(2, ago=MINUTE)
    request = ledger.request()
    sessions = session_factory(ledger.engine)
    rules = RiskRules(velocity_max_payments=1, velocity_weight=7)
    admitted = ActivityEnvironment().run(
        AdmissionActivities(sessions, RiskActivities(sessions, rules)).admit_payment,
        _admission(request),
    )
    assert admitted.score == 7
    assert names(admitted) == {"velocity"}
