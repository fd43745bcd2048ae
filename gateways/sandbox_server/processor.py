"""What the sandbox does with charges, refunds and disputes: scripted outcomes, settlement,
captures and the webhooks it sends.

This module is the card processor; `app` is only its HTTP face.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog

from gateways.sandbox_server.charges import (
    CANCELABLE,
    Charge,
    ChargeFailure,
    ChargeStatus,
    ChargeStore,
    new_id,
)
from gateways.sandbox_server.config import SandboxConfig
from gateways.sandbox_server.disputes import Dispute, DisputeStatus, DisputeStore
from gateways.sandbox_server.errors import SandboxError
from gateways.sandbox_server.refunds import Refund, RefundStatus, RefundStore
from gateways.sandbox_server.scenarios import Scenario, scenario_for
from gateways.sandbox_server.schemas import (
    CaptureBody,
    CloseDisputeBody,
    CreateChargeBody,
    CreateRefundBody,
    OpenDisputeBody,
)
from gateways.sandbox_server.tasks import TaskTracker
from gateways.sandbox_server.webhooks import WebhookDispatcher, build_event

logger = structlog.get_logger(__name__)

RedirectUrlFor = Callable[[str], str]

CARD_DECLINED = ChargeFailure(code="card_declined", message="The card was declined.")
PROCESSOR_UNAVAILABLE = ChargeFailure(
    code="processor_unavailable",
    message="The card network did not answer; a new charge attempt may succeed.",
    retryable=True,
)
AUTHENTICATION_FAILED = ChargeFailure(
    code="authentication_failed", message="The customer failed the 3-D Secure challenge."
)
REFUND_DECLINED = ChargeFailure(
    code="refund_declined", message="The card issuer refused to take the refund."
)
# Scenarios whose charge settles in the answer to the charge request itself.
SETTLED_AT_ONCE = frozenset({Scenario.INSTANT, Scenario.REFUND_FAILS})


def _idempotency_conflict(what: str) -> SandboxError:
    return SandboxError(
        409,
        "idempotency_conflict",
        f"this Idempotency-Key was already used with a different request body; "
        f"use a new key for a new {what}",
    )


class Processor:
    def __init__(
        self,
        *,
        config: SandboxConfig,
        store: ChargeStore,
        refunds: RefundStore,
        dispatcher: WebhookDispatcher,
        tasks: TaskTracker,
        disputes: DisputeStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._disputes = disputes or DisputeStore()
        self._config = config
        self._store = store
        self._refunds = refunds
        self._dispatcher = dispatcher
        self._tasks = tasks
        self._clock = clock

    async def create_charge(
        self,
        body: CreateChargeBody,
        idempotency_key: str,
        redirect_url_for: RedirectUrlFor,
    ) -> tuple[Charge, bool]:
        """Create the charge for a key, or replay the one it already made (then True)."""
        scenario = scenario_for(body.payment_method)
        if scenario is None:
            raise SandboxError(
                400,
                "invalid_payment_method",
                "payment_method must be a payment-method token starting with 'pm_'",
            )
        if scenario is Scenario.UNAVAILABLE:
            raise SandboxError(503, "service_unavailable", "the sandbox processor is down; retry")
        fingerprint = body.fingerprint()
        async with self._store.key_lock(idempotency_key):
            existing = self._store.for_key(idempotency_key)
            if existing is not None:
                charge, original = existing
                if not hmac.compare_digest(original, fingerprint):
                    raise _idempotency_conflict("charge")
                logger.info("charge_replayed", charge_id=charge.id, reference=charge.reference)
                return charge, True
            if scenario is Scenario.FLAKY and (
                self._store.requests_by_key[idempotency_key] <= self._config.flaky_failures
            ):
                # Refused before anything is recorded, so a retry with the same key is safe.
                raise SandboxError(503, "service_unavailable", "the sandbox is flaky; retry")
            charge = self._open(body, scenario, redirect_url_for)
            self._store.add(charge, idempotency_key, fingerprint)
            if scenario is Scenario.SLOW:
                # The charge exists before the answer leaves: a caller that gives up or dies
                # meanwhile must find it again with the same key, never make a second one.
                await asyncio.sleep(self._config.slow_delay)
        logger.info(
            "charge_created",
            charge_id=charge.id,
            reference=charge.reference,
            status=str(charge.status),
            scenario=str(scenario),
        )
        self._follow_up(charge, scenario)
        return charge, False

    def _open(
        self, body: CreateChargeBody, scenario: Scenario, redirect_url_for: RedirectUrlFor
    ) -> Charge:
        charge = Charge(
            id=new_id("ch"),
            status=ChargeStatus.PENDING,
            amount=body.amount,
            currency=body.currency,
            capture=body.capture,
            payment_method=body.payment_method,
            reference=body.reference,
            metadata=dict(body.metadata),
            created=int(self._clock()),
        )
        if scenario is Scenario.DECLINE:
            charge.status = ChargeStatus.DECLINED
            charge.failure = CARD_DECLINED
        elif scenario is Scenario.THREE_DS:
            charge.status = ChargeStatus.REQUIRES_ACTION
            charge.client_secret = f"{charge.id}_secret_{secrets.token_hex(12)}"
            charge.redirect_url = redirect_url_for(charge.id)
        elif (
            scenario is Scenario.RETRYABLE and self._store.charges_by_reference[body.reference] == 0
        ):
            charge.status = ChargeStatus.FAILED
            charge.failure = PROCESSOR_UNAVAILABLE
        elif scenario in SETTLED_AT_ONCE:
            self._succeed(charge)
        return charge

    def _follow_up(self, charge: Charge, scenario: Scenario) -> None:
        if charge.status is ChargeStatus.PENDING and scenario is not Scenario.SILENT:
            self._tasks.spawn(self._settle(charge.id), name=f"settle-{charge.id}")
        elif charge.status in {ChargeStatus.DECLINED, ChargeStatus.FAILED}:
            # Sent for immediate failures too, as Stripe does, so the webhook path sees every
            # final state; receivers deduplicate by event id.
            self._announce(charge.to_json(), "charge.failed")
        elif charge.status is ChargeStatus.SUCCEEDED:
            # Settled in the answer; the webhook follows anyway, as for every final state.
            self._announce(charge.to_json(), "charge.succeeded")
        elif charge.status is ChargeStatus.AUTHORIZED:
            self._announce(charge.to_json(), "charge.authorized")

    def _succeed(self, charge: Charge) -> str:
        """Move an approved charge to its success state; return the event that announces it."""
        if charge.capture == "manual":
            charge.status = ChargeStatus.AUTHORIZED
            return "charge.authorized"
        charge.status = ChargeStatus.SUCCEEDED
        charge.amount_captured = charge.amount
        return "charge.succeeded"

    async def _settle(self, charge_id: str) -> None:
        await asyncio.sleep(self._config.webhook_delay)
        charge = self._store.get(charge_id)
        if charge is None or charge.status is not ChargeStatus.PENDING:
            return  # Canceled while pending: the cancellation already told the receiver.
        event_type = self._succeed(charge)
        logger.info("charge_settled", charge_id=charge.id, status=str(charge.status))
        await self._dispatcher.deliver(
            build_event(charge.to_json(), event_type, int(self._clock()))
        )

    def _announce(self, data: dict[str, Any], event_type: str) -> None:
        # The snapshot is taken now, at the transition, so every retry sends the same payload.
        event = build_event(data, event_type, int(self._clock()))

        async def send_later() -> None:
            await asyncio.sleep(self._config.webhook_delay)
            await self._dispatcher.deliver(event)

        self._tasks.spawn(send_later(), name=f"webhook-{event['id']}")

    def get(self, charge_id: str) -> Charge:
        charge = self._store.get(charge_id)
        if charge is None:
            raise SandboxError(404, "not_found", f"no charge {charge_id!r}")
        return charge

    def for_key(self, idempotency_key: str) -> Charge:
        found = self._store.for_key(idempotency_key)
        if found is None:
            raise SandboxError(404, "not_found", "no charge was created with this idempotency key")
        return found[0]

    def complete_3ds(self, charge_id: str, client_secret: str, succeeded: bool) -> Charge:
        charge = self.get(charge_id)
        if charge.client_secret is None or not hmac.compare_digest(
            charge.client_secret.encode(), client_secret.encode()
        ):
            raise SandboxError(403, "invalid_client_secret", "client_secret does not match")
        if charge.status is not ChargeStatus.REQUIRES_ACTION:
            raise SandboxError(
                409,
                "charge_not_actionable",
                f"the charge is {charge.status}, no challenge is waiting",
                details={"charge": charge.to_json()},
            )
        if succeeded:
            event_type = self._succeed(charge)
        else:
            charge.status, event_type = ChargeStatus.DECLINED, "charge.failed"
            charge.failure = AUTHENTICATION_FAILED
        logger.info("charge_authenticated", charge_id=charge.id, status=str(charge.status))
        self._announce(charge.to_json(), event_type)
        return charge

    def cancel(self, charge_id: str) -> Charge:
        charge = self.get(charge_id)
        if charge.status is ChargeStatus.CANCELED:
            return charge
        if charge.status not in CANCELABLE:
            raise SandboxError(
                409,
                "charge_not_cancelable",
                f"the charge is already {charge.status} and can no longer be canceled",
                details={"charge": charge.to_json()},
            )
        charge.status = ChargeStatus.CANCELED
        logger.info("charge_canceled", charge_id=charge.id)
        self._announce(charge.to_json(), "charge.canceled")
        return charge

    async def capture(
        self, charge_id: str, body: CaptureBody, idempotency_key: str
    ) -> tuple[Charge, bool]:
        """Capture an authorized charge, or replay the capture a key already made (then True)."""
        fingerprint = body.fingerprint(charge_id)
        async with self._store.key_lock(idempotency_key):
            keyed = self._store.capture_for_key(idempotency_key)
            if keyed is not None:
                if not hmac.compare_digest(keyed.fingerprint, fingerprint):
                    raise _idempotency_conflict("capture")
                return self.get(keyed.object_id), True
            charge = self.get(charge_id)
            if charge.status is not ChargeStatus.AUTHORIZED:
                raise SandboxError(
                    409,
                    "charge_not_capturable",
                    f"the charge is {charge.status}; only an authorized charge can be captured",
                    details={"charge": charge.to_json()},
                )
            _same_currency(charge, body.currency)
            amount = charge.amount if body.amount is None else body.amount
            if amount > charge.amount:
                raise SandboxError(
                    400,
                    "amount_exceeds_authorized",
                    f"cannot capture {amount}; the charge authorized {charge.amount}",
                )
            charge.status = ChargeStatus.SUCCEEDED
            charge.amount_captured = amount
            self._store.add_capture(charge.id, idempotency_key, fingerprint)
        logger.info("charge_captured", charge_id=charge.id, amount_captured=amount)
        self._announce(charge.to_json(), "charge.succeeded")
        return charge, False

    async def create_refund(
        self, body: CreateRefundBody, idempotency_key: str
    ) -> tuple[Refund, bool]:
        """Refund part or all of a succeeded charge, or replay a key's refund (then True)."""
        fingerprint = body.fingerprint()
        async with self._refunds.key_lock(idempotency_key):
            existing = self._refunds.for_key(idempotency_key)
            if existing is not None:
                refund, original = existing
                if not hmac.compare_digest(original, fingerprint):
                    raise _idempotency_conflict("refund")
                logger.info("refund_replayed", refund_id=refund.id, charge_id=refund.charge)
                return refund, True
            charge = self.get(body.charge)
            self._check_refundable(charge, body)
            refund = Refund(
                id=new_id("re"),
                status=RefundStatus.PENDING,
                charge=charge.id,
                amount=body.amount,
                currency=charge.currency,
                reason=body.reason,
                metadata=dict(body.metadata),
                created=int(self._clock()),
            )
            # Recorded before the lock is released, so the next refund counts this one.
            self._refunds.add(refund, idempotency_key, fingerprint)
        logger.info(
            "refund_created", refund_id=refund.id, charge_id=charge.id, amount=refund.amount
        )
        fails = scenario_for(charge.payment_method) is Scenario.REFUND_FAILS
        self._tasks.spawn(self._settle_refund(refund.id, fails), name=f"refund-{refund.id}")
        return refund, False

    def _check_refundable(self, charge: Charge, body: CreateRefundBody) -> None:
        if charge.status is not ChargeStatus.SUCCEEDED:
            raise SandboxError(
                409,
                "charge_not_refundable",
                f"the charge is {charge.status}; only a succeeded charge can be refunded",
                details={"charge": charge.to_json()},
            )
        _same_currency(charge, body.currency)
        already = self._refunds.committed(charge.id)
        if already + body.amount > charge.amount_captured:
            raise SandboxError(
                400,
                "refund_exceeds_charge",
                f"refunding {body.amount} would exceed the charge: {already} of "
                f"{charge.amount_captured} is already refunded or being refunded",
                details={"refundable": charge.amount_captured - already},
            )

    async def _settle_refund(self, refund_id: str, fails: bool) -> None:
        await asyncio.sleep(self._config.webhook_delay)
        refund = self.get_refund(refund_id)
        if fails:
            refund.status, refund.failure = RefundStatus.FAILED, REFUND_DECLINED
            event_type = "refund.failed"
        else:
            refund.status, event_type = RefundStatus.SUCCEEDED, "refund.succeeded"
        logger.info("refund_settled", refund_id=refund.id, status=str(refund.status))
        await self._dispatcher.deliver(
            build_event(refund.to_json(), event_type, int(self._clock()))
        )

    def get_refund(self, refund_id: str) -> Refund:
        refund = self._refunds.get(refund_id)
        if refund is None:
            raise SandboxError(404, "not_found", f"no refund {refund_id!r}")
        return refund

    def open_dispute(self, charge_id: str, body: OpenDisputeBody) -> Dispute:
        """The cardholder disputes a succeeded charge; announced by ``dispute.created``."""
        charge = self.get(charge_id)
        if charge.status is not ChargeStatus.SUCCEEDED:
            raise SandboxError(
                409,
                "charge_not_disputable",
                f"the charge is {charge.status}; only a succeeded charge can be disputed",
            )
        if self._disputes.for_charge(charge.id) is not None:
            raise SandboxError(409, "charge_already_disputed", "this charge has a dispute already")
        amount = charge.amount_captured if body.amount is None else body.amount
        if amount > charge.amount_captured:
            raise SandboxError(
                400,
                "amount_exceeds_charge",
                f"cannot dispute {amount}; the charge captured {charge.amount_captured}",
            )
        now = int(self._clock())
        dispute = Dispute(
            id=new_id("dp"),
            status=DisputeStatus.NEEDS_RESPONSE,
            charge=charge.id,
            amount=amount,
            currency=charge.currency,
            reason=body.reason,
            evidence_due_by=now + body.evidence_due_in_seconds,
            metadata=dict(charge.metadata),
            created=now,
        )
        self._disputes.add(dispute)
        logger.info("dispute_opened", dispute_id=dispute.id, charge_id=charge.id, amount=amount)
        self._announce(dispute.to_json(), "dispute.created")
        return dispute

    def close_dispute(self, dispute_id: str, body: CloseDisputeBody) -> Dispute:
        """The network decides; announced by ``dispute.closed``. Deciding again is refused."""
        dispute = self._disputes.get(dispute_id)
        if dispute is None:
            raise SandboxError(404, "not_found", f"no dispute {dispute_id!r}")
        if dispute.status is not DisputeStatus.NEEDS_RESPONSE:
            raise SandboxError(
                409, "dispute_closed", f"the dispute was already decided: {dispute.status}"
            )
        dispute.status = DisputeStatus(body.outcome)
        logger.info("dispute_closed", dispute_id=dispute.id, status=str(dispute.status))
        self._announce(dispute.to_json(), "dispute.closed")
        return dispute

    def get_dispute(self, dispute_id: str) -> Dispute:
        dispute = self._disputes.get(dispute_id)
        if dispute is None:
            raise SandboxError(404, "not_found", f"no dispute {dispute_id!r}")
        return dispute


def _same_currency(charge: Charge, currency: str | None) -> None:
    """A capture or refund names the charge's currency, or none at all."""
    if currency is not None and currency != charge.currency:
        raise SandboxError(
            400, "currency_mismatch", f"the charge is in {charge.currency}, not {currency}"
        )
