"""A `Gateway` whose answers a test scripts. Unit and workflow tests only: every flow also has
a test against the real sandbox service over HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from workflows.contract import (
    CancelRequest,
    CaptureRequest,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    ChargeState,
    GatewayName,
    RefundLookup,
    RefundOutcome,
    RefundRequest,
    RefundState,
)

RefundStep = RefundOutcome | Exception

Step = ChargeOutcome | Exception


@dataclass
class ScriptedGateway:
    charges: list[Step] = field(default_factory=list)
    lookups: list[Step] = field(default_factory=list)
    cancel_outcome: ChargeOutcome = field(
        default_factory=lambda: ChargeOutcome(state=ChargeState.CANCELED)
    )
    # When set, `charge` waits for it before answering (to race signals against the call).
    hold_charge: asyncio.Event | None = None
    charge_started: asyncio.Event = field(default_factory=asyncio.Event)
    charge_calls: list[ChargeRequest] = field(default_factory=list)
    lookup_calls: list[ChargeLookup] = field(default_factory=list)
    cancel_calls: list[CancelRequest] = field(default_factory=list)
    gateway_name: GatewayName = GatewayName.SANDBOX
    capture_calls: list[CaptureRequest] = field(default_factory=list)
    # The answer to `capture`; None: succeeded, without saying how much was captured.
    capture_outcome: ChargeOutcome | None = None
    refund_calls: list[RefundRequest] = field(default_factory=list)
    # Answers to `refund` and `retrieve_refund`, in order; the last one repeats.
    refunds: list[RefundStep] = field(default_factory=list)
    refund_lookups: list[RefundStep] = field(default_factory=list)
    refund_lookup_calls: list[RefundLookup] = field(default_factory=list)

    @property
    def name(self) -> GatewayName:
        return self.gateway_name

    @staticmethod
    def _next(script: list[Step], default: Step) -> ChargeOutcome:
        step = script.pop(0) if len(script) > 1 else (script[0] if script else default)
        if isinstance(step, Exception):
            raise step
        return step

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.charge_calls.append(request)
        self.charge_started.set()
        if self.hold_charge is not None:
            await self.hold_charge.wait()
        return self._next(self.charges, ChargeOutcome(state=ChargeState.PENDING))

    async def retrieve(self, lookup: ChargeLookup) -> ChargeOutcome:
        self.lookup_calls.append(lookup)
        return self._next(self.lookups, ChargeOutcome(state=ChargeState.NOT_FOUND))

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        self.cancel_calls.append(request)
        return self.cancel_outcome

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        self.capture_calls.append(request)
        if self.capture_outcome is not None:
            return self.capture_outcome
        return ChargeOutcome(
            state=ChargeState.SUCCEEDED, gateway_reference=request.gateway_reference
        )

    @staticmethod
    def _next_refund(script: list[RefundStep], default: RefundOutcome) -> RefundOutcome:
        step = script.pop(0) if len(script) > 1 else (script[0] if script else default)
        if isinstance(step, Exception):
            raise step
        return step

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        self.refund_calls.append(request)
        return self._next_refund(
            self.refunds,
            RefundOutcome(
                state=RefundState.PENDING, refund_reference=f"re_{len(self.refund_calls)}"
            ),
        )

    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        self.refund_lookup_calls.append(lookup)
        return self._next_refund(
            self.refund_lookups,
            RefundOutcome(state=RefundState.PENDING, refund_reference=lookup.refund_reference),
        )
