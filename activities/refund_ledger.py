"""Ledger writes run by the refund workflow: the reservation, the reference, the outcome."""

from __future__ import annotations

from temporalio import activity

from activities.ledger_errors import ledger_transaction
from ledger import refunds
from ledger.engine import SessionFactory
from workflows.refund_contract import (
    RefundSettlement,
    RefundView,
    Reservation,
    ReservationResult,
)


class RefundLedgerActivities:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    @activity.defn(name="reserve_refund")
    def reserve(self, reservation: Reservation) -> ReservationResult:
        with ledger_transaction(self._sessions) as session:
            return refunds.reserve(session, reservation)

    @activity.defn(name="record_refund_reference")
    def record_reference(self, settlement: RefundSettlement) -> None:
        if settlement.refund_reference is None:
            return
        with ledger_transaction(self._sessions) as session:
            refunds.record_reference(session, settlement.refund_id, settlement.refund_reference)

    @activity.defn(name="settle_refund")
    def settle(self, settlement: RefundSettlement) -> RefundView:
        with ledger_transaction(self._sessions) as session:
            return refunds.settle(session, settlement)
