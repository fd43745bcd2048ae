"""``/healthz`` (the process is alive) and ``/readyz`` (each part paytide needs is usable).

``/readyz`` answers anyone with its status alone (``{"ready": ...}``, 200 or 503): probes need no
more. Its details name internal addresses (Temporal, the sandbox, task queues, configured
gateways), so only a caller with an operator key gets them; a merchant key gets the status alone,
as an anonymous probe does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, GetSystemInfoRequest

from api.auth import optional_caller, state_of
from api.state import ApiState
from gateways.registry import available_gateways, routed, usable
from paytide.api_keys import Role
from workflows.contract import GatewayName

CHECK_TIMEOUT = 3.0
# The server records a poller's last access; one unseen for this long is not polling any more.
POLLER_FRESHNESS = timedelta(minutes=2)


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _temporal(state: ApiState) -> str:
    await state.temporal.workflow_service.get_system_info(GetSystemInfoRequest())
    return f"reachable at {state.settings.temporal_address}"


async def _database(state: ApiState) -> str:
    def ping() -> None:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    await run_in_threadpool(ping)
    return f"reachable ({state.engine.dialect.name})"


async def _worker(state: ApiState) -> str:
    queue = state.settings.temporal_task_queue
    response = await state.temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=state.temporal.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    now = datetime.now(UTC)
    live = [
        poller
        for poller in response.pollers
        if now - poller.last_access_time.ToDatetime(tzinfo=UTC) < POLLER_FRESHNESS
    ]
    if not live:
        raise RuntimeError(f"no worker is polling task queue {queue!r}; start `paytide worker`")
    return f"{len(live)} poller(s) on {queue}"


async def _sandbox(state: ApiState) -> str:
    url = f"{state.settings.effective_sandbox_url}/healthz"
    response = await state.http.get(url, timeout=CHECK_TIMEOUT)
    response.raise_for_status()
    return f"reachable at {state.settings.effective_sandbox_url}"


async def _run(check: Callable[[ApiState], Awaitable[str]], state: ApiState) -> dict[str, object]:
    try:
        detail = await asyncio.wait_for(check(state), timeout=CHECK_TIMEOUT)
    except Exception as error:
        return {"ready": False, "detail": f"{type(error).__name__}: {error}"}
    return {"ready": True, "detail": detail}


async def readyz(request: Request) -> Response:
    state = state_of(request)
    checks = {"temporal": _temporal, "database": _database, "worker": _worker}
    if GatewayName.SANDBOX in routed(state.settings) & usable(state.settings):
        # The sandbox is a service of ours; the real gateways are checked by their calls.
        checks["gateway_sandbox"] = _sandbox
    results = await asyncio.gather(*(_run(check, state) for check in checks.values()))
    parts = dict(zip(checks, results, strict=True))
    ready = all(part["ready"] for part in parts.values())
    status = 200 if ready else 503
    caller = optional_caller(request)
    if caller is None or caller.role is not Role.OPERATOR:
        return JSONResponse({"ready": ready}, status_code=status)
    # A gateway without credentials is not a failure, only unavailable to routing.
    gateways = {
        name.value: "available" if not why_not else f"not available: {why_not}"
        for name, why_not in available_gateways(state.settings).items()
    }
    return JSONResponse({"ready": ready, "parts": parts, "gateways": gateways}, status_code=status)
