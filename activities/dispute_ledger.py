"""Ledger writes run by the dispute workflow: each dispute event, and the payment's status."""

from __future__ import annotations

from temporalio import activity

from activities.ledger_errors import ledger_transaction
from ledger import disputes
from ledger.engine import SessionFactory
from workflows.dispute_contract import DisputeChange, DisputeRecorded


class DisputeLedgerActivities:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn(name="record_dispute_change")
    def record_change(self, change: DisputeChange) -> DisputeRecorded:
        with ledger_transaction(self._sessions) as session:
            return disputes.apply_change(session, change)
