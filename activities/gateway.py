"""Gateway calls: the one place where gateway exceptions become Temporal retry decisions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateways.base import Gateway, GatewayError, GatewayRefused, GatewayUnavailable
from paytide.metrics import WorkerMetrics
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
    Transition,
    waiting_status,
)

T = TypeVar("T")


class GatewayActivities:
    def __init__(
        self,
        gateways: Mapping[GatewayName, Gateway],
        *,
        metrics: WorkerMetrics | None = None,
        tracer: Tracer | None = None,
        record: Callable[[Transition], None] | None = None,
    ) -> None:
        """``record``: writes a transition to the ledger (blocking); without it the workflow
        records the waiting status itself."""
        self._gateways = dict(gateways)
        self._record = record
        self._metrics = metrics or WorkerMetrics()
        self._tracer = tracer or trace.NoOpTracer()

    @asynccontextmanager
    async def _observed(self, gateway: GatewayName, operation: str) -> AsyncIterator[None]:
        """Time one gateway call and wrap it in a client span, child of the activity's span."""
        outcome = "ok"
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"gateway.{operation}",
            kind=SpanKind.CLIENT,
            attributes={"paytide.gateway": gateway.value, "paytide.operation": operation},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as error:
                # The class, never the message: messages can carry gateway references. A
                # cancelled call (timeout, worker shutdown) is counted as CancelledError.
                outcome = type(error).__name__
                span.set_status(Status(StatusCode.ERROR, outcome))
                span.set_attribute("paytide.error_class", outcome)
                raise
            finally:
                self._metrics.gateway_calls.labels(
                    gateway=gateway.value, operation=operation, outcome=outcome
                ).observe(time.perf_counter() - started)

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
            async with self._observed(request.gateway, "charge"):
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
        return await self._write_waiting(request, outcome)

    async def _write_waiting(self, request: ChargeRequest, outcome: ChargeOutcome) -> ChargeOutcome:
        """Put a "pending" or "requires action" answer on record before reporting it.

        Idempotent like every transition (one event per sequence number), so a retry after a
        crash between the write and the report writes nothing new."""
        template = request.record_waiting
        status = waiting_status(outcome.state)
        if template is None or status is None or self._record is None:
            return outcome
        at = datetime.now(UTC).isoformat()
        transition = replace(
            template,
            status=status,
            gateway_reference=outcome.gateway_reference or template.gateway_reference,
            at=at,
        )
        try:
            await asyncio.to_thread(self._record, transition)
        except ApplicationError as error:
            if not error.non_retryable:
                raise
            # The ledger refused the line for good. The charge happened, so this activity must
            # not fail as if the gateway had refused it: report it unrecorded, and the workflow
            # writes it itself (and escalates when that fails too).
            activity.logger.warning(
                "waiting status not recorded: %s",
                error,
                extra={"payment_id": request.payment_id},
            )
            return outcome
        return replace(outcome, recorded_at=at)

    @activity.defn(name="reconcile_charge")
    async def reconcile(self, lookup: ChargeLookup) -> ChargeOutcome:
        gateway = self._gateway(lookup.gateway)
        return await self._call(lookup.gateway, "retrieve", lambda: gateway.retrieve(lookup))

    @activity.defn(name="capture_charge")
    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        gateway = self._gateway(request.gateway)
        return await self._call(request.gateway, "capture", lambda: gateway.capture(request))

    @activity.defn(name="cancel_charge")
    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        gateway = self._gateway(request.gateway)
        return await self._call(request.gateway, "cancel", lambda: gateway.cancel(request))

    @activity.defn(name="refund_charge")
    async def refund(self, request: RefundRequest) -> RefundOutcome:
        gateway = self._gateway(request.gateway)
        outcome = await self._call(request.gateway, "refund", lambda: gateway.refund(request))
        activity.logger.info(
            "gateway answered refund",
            extra={"refund_id": request.refund_id, "refund_state": outcome.state.value},
        )
        return outcome

    @activity.defn(name="reconcile_refund")
    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        gateway = self._gateway(lookup.gateway)
        return await self._call(
            lookup.gateway, "retrieve_refund", lambda: gateway.retrieve_refund(lookup)
        )

    async def _call(
        self, gateway: GatewayName, operation: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            async with self._observed(gateway, operation):
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
