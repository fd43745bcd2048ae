"""A payment's admission: ``received`` and ``risk_check`` recorded and the risk scored, at once,
and ``charging`` too when the score sends the payment straight to the gateway.

One local activity and one transaction instead of three of each, because every local activity
before the charge is time the merchant's POST /payments waits (docs/performance.md). The ledger
writes are the same idempotent transitions the workflow records one by one elsewhere, so a retry
after a crash rewrites nothing and scores again only if the transaction never committed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ledger_errors import ledger_transaction
from ledger import payments
from ledger.engine import SessionFactory
from workflows.contract import Admission, PaymentRequest, RiskAssessment


class Scorer(Protocol):
    def score_in(self, session: Session, request: PaymentRequest) -> RiskAssessment: ...


class AdmissionActivities:
    def __init__(self, sessions: SessionFactory, risk: Scorer) -> None:
        self._sessions = sessions
        self._risk = risk

    @activity.defn(name="admit_payment")
    def admit_payment(self, admission: Admission) -> RiskAssessment:
        request = admission.received.request
        if request is None:
            # Our own bug, and no retry would mend it.
            raise ApplicationError(
                "the received transition must carry the payment request",
                type="admission_without_request",
                non_retryable=True,
            )
        with ledger_transaction(self._sessions) as session:
            payments.apply_transition(session, admission.received)
            payments.apply_transition(session, admission.risk_check)
            risk = self._risk.score_in(session, request)
            if admission.charging is not None and admission.charges_at_once(risk.score):
                # The workflow follows the same rule on the score it gets back.
                payments.apply_transition(session, replace(admission.charging, risk=risk))
            return risk
