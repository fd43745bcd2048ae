"""A client interceptor that holds each workflow update at the client until the test lets it go.

With it a test puts a request exactly where a race would: the API has read the ledger and is about
to send its update, and the test decides what the workflow looks like when the update arrives.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import (
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowUpdateHandle,
)


class UpdateGate(Interceptor):
    """``arrived`` yields, for each update a client starts, the event that lets it go on."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Held(next, self)


class _Held(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, gate: UpdateGate) -> None:
        super().__init__(next)
        self._gate = gate

    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        release = asyncio.Event()
        await self._gate.arrived.put(release)
        await release.wait()
        return await super().start_workflow_update(input)
