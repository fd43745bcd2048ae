"""Gateway calls: the one place where gateway exceptions become Temporal retry decisions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateways.base import Gateway, GatewayError
from workflows.contract import (
    CancelRequest,
    CaptureRequest,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    GatewayName,
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
        outcome = await _translated(lambda: gateway.charge(request))
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


async def _translated(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except GatewayError as error:
        raise ApplicationError(
            str(error),
            type=type(error).__name__,
            non_retryable=not error.retryable,
            next_retry_delay=timedelta(seconds=error.retry_after) if error.retry_after else None,
        ) from error
