"""Gateway calls: the one place where gateway exceptions become Temporal retry decisions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateways.base import Gateway, GatewayError, GatewayRefused, GatewayUnavailable
from workflows.contract import (
    CancelRequest,
    CaptureRequest,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    GatewayName,
    RefundLookup,
    RefundOutcome,
    RefundRequest,
)

T = TypeVar("T")


class GatewayActivities:
    def __init__(self, gateways: Mapping[GatewayName, Gateway]) -> None:
        self._gateways = dict(gateways)

    def _gateway(self, name: GatewayName) -> Gateway:
        gateway = self._gateways.get(name)
        if gateway is None:
            raise ApplicationError(
                f"gateway {name.value!r} is not configured on this worker",
                type="gateway_not_configured",
                non_retryable=True,
            )
        return gateway

    @activity.defn(name="charge_payment")
    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        gateway = self._gateway(request.gateway)
        # A refusal proves nothing was processed only if no earlier try of this key was
        # ambiguous (a timeout may have charged). Earlier tries leave that fact in the heartbeat
        # details, which Temporal hands to the next try of the same activity.
        earlier = activity.info().heartbeat_details
        ambiguous_before = bool(earlier and earlier[0])
        try:
            outcome = await gateway.charge(request)
        except GatewayRefused as error:
            if ambiguous_before:
                raise _application_error(
                    GatewayUnavailable(f"{error} (an earlier try was ambiguous)")
                ) from error
            raise _application_error(error) from error
        except GatewayError as error:
            if error.retryable:
                activity.heartbeat(True)
            raise _application_error(error) from error
        activity.logger.info(
            "gateway answered charge",
            extra={"payment_id": request.payment_id, "charge_state": outcome.state.value},
        )
        return outcome

    @activity.defn(name="reconcile_charge")
    async def reconcile(self, lookup: ChargeLookup) -> ChargeOutcome:
        gateway = self._gateway(lookup.gateway)
        return await _translated(lambda: gateway.retrieve(lookup))

    @activity.defn(name="capture_charge")
    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        gateway = self._gateway(request.gateway)
        return await _translated(lambda: gateway.capture(request))

    @activity.defn(name="cancel_charge")
    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        gateway = self._gateway(request.gateway)
        return await _translated(lambda: gateway.cancel(request))

    @activity.defn(name="refund_charge")
    async def refund(self, request: RefundRequest) -> RefundOutcome:
        gateway = self._gateway(request.gateway)
        outcome = await _translated(lambda: gateway.refund(request))
        activity.logger.info(
            "gateway answered refund",
            extra={"refund_id": request.refund_id, "refund_state": outcome.state.value},
        )
        return outcome

    @activity.defn(name="reconcile_refund")
    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        gateway = self._gateway(lookup.gateway)
        return await _translated(lambda: gateway.retrieve_refund(lookup))


async def _translated(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except GatewayError as error:
        raise _application_error(error) from error


def _application_error(error: GatewayError) -> ApplicationError:
    """The one translation of a gateway error into Temporal's retry decision."""
    return ApplicationError(
        str(error),
        type=type(error).__name__,
        non_retryable=not error.retryable,
        next_retry_delay=timedelta(seconds=error.retry_after) if error.retry_after else None,
    )
