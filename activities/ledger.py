"""Ledger writes run by the payment workflow (as local activities: short, idempotent)."""

from __future__ import annotations

from temporalio import activity

from ledger import payments
from ledger.engine import SessionFactory, transaction
from workflows.contract import NotificationFailure, Transition


class LedgerActivities:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn(name="record_transition")
    def record_transition(self, transition: Transition) -> None:
        with transaction(self._sessions) as session:
            payments.apply_transition(session, transition)

    @activity.defn(name="record_notification_failure")
    def record_notification_failure(self, failure: NotificationFailure) -> None:
        with transaction(self._sessions) as session:
            payments.record_notification_failure(session, failure)
