"""One bare payment through Temporal, as the API starts a real one."""

from __future__ import annotations

import time
import uuid

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateStage
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from bench.bare import TASK_QUEUE, BareEvent, BareInitiate, BareInput, BareWorkflow
from bench.load import One
from bench.phase import Phase


def bare_payment(client: Client, ids: list[str] | None = None) -> One:
    """``ids`` collects the workflow ids started, in order, to read a history afterwards."""

    async def one(phase: Phase) -> None:
        payment_id = f"bare_{uuid.uuid4().hex}"
        if ids is not None:
            ids.append(payment_id)
        start = WithStartWorkflowOperation(
            BareWorkflow.run,
            BareInput(payment_id=payment_id),
            id=payment_id,
            task_queue=TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        started = time.perf_counter()
        try:
            update = await client.start_update_with_start_workflow(
                BareWorkflow.initiate,
                BareInitiate(payment_id=payment_id),
                start_workflow_operation=start,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
            await update.result()
            phase.first_ms.append((time.perf_counter() - started) * 1000)
            # The webhook's part: the API signals the workflow.
            handle = await start.workflow_handle()
            await handle.signal(BareWorkflow.gateway_event, BareEvent(payment_id=payment_id))
            outcome = await handle.result()
        except Exception:
            phase.errors += 1
            return
        if outcome != "succeeded":
            phase.errors += 1
            return
        phase.settle_ms.append((time.perf_counter() - started) * 1000)

    return one
