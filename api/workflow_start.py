"""Update-with-start under the API's time budget, shared by every endpoint that starts a workflow
keyed by an Idempotency-Key (payments, refunds).

USE_EXISTING + REJECT_DUPLICATE: a retry joins the running workflow, never a second run, and a
closed one is never started again. The caller maps the three ways this can end without the
update's answer: `NoAnswerYet` (202), `AlreadyClosed` (answer from the ledger) and the update's
own failure (`WorkflowUpdateFailedError`, raised as is).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

S = TypeVar("S")
P = TypeVar("P")
R = TypeVar("R")
Update = UpdateMethodMultiParam[[S, P], R]


class NoAnswerYet(Exception):
    """The workflow did not answer within the API's wait (or no worker is polling yet)."""


class AlreadyClosed(Exception):
    """The workflow id names a run that has closed: its outcome is in the ledger."""


async def execute_update_with_start(
    client: Client,
    update: Update[S, P, R],
    argument: P,
    start: Callable[[], WithStartWorkflowOperation[S, Any]],
    *,
    wait_seconds: float,
) -> R:
    """Start (or join) the workflow ``start()`` describes and run ``update`` on it; its answer.

    ``start`` builds a fresh operation per try: an operation can be sent only once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    backoff = 0.02
    while True:
        try:
            # Bounded: with no worker polling, the server would hold this call open.
            handle: WorkflowUpdateHandle[R] = await asyncio.wait_for(
                _start_update(client, update, argument, start()),
                timeout=max(0.05, deadline - loop.time()),
            )
            break
        except TimeoutError:
            raise NoAnswerYet from None
        except (WorkflowAlreadyStartedError, RPCError) as error:
            if isinstance(error, RPCError) and error.status is RPCStatusCode.RESOURCE_EXHAUSTED:
                # Temporal caps in-flight updates per workflow (10 by default): copies of one
                # request arriving at other API processes (copies within one are coalesced)
                # wait their turn within the same time budget, backing off so that they do not
                # keep the server busy refusing them.
                if loop.time() < deadline:
                    await asyncio.sleep(random.uniform(backoff / 2, backoff))
                    backoff = min(backoff * 2, 0.5)
                    continue
                raise NoAnswerYet from None
            if isinstance(error, RPCError) and error.status is not RPCStatusCode.ALREADY_EXISTS:
                raise
            raise AlreadyClosed from None
    try:
        return await asyncio.wait_for(handle.result(), timeout=max(0.0, deadline - loop.time()))
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        # The SDK reports the cancelled poll as its own error rather than CancelledError.
        raise NoAnswerYet from None


async def _start_update(
    client: Client,
    update: Update[S, P, R],
    argument: P,
    start: WithStartWorkflowOperation[S, Any],
) -> WorkflowUpdateHandle[R]:
    try:
        return await client.start_update_with_start_workflow(
            update,
            argument,
            start_workflow_operation=start,
            wait_for_stage=WorkflowUpdateStage.COMPLETED,
        )
    except Exception:
        # The start half carries the same failure; read it so it is not reported as unretrieved.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(start.workflow_handle(), timeout=0.1)
        raise
