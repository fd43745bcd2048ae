"""``/webhook-deliveries``: what was sent to the merchant's endpoints, the dead letters among it,
and the re-drive of one dead letter."""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.service import RPCError

from api.auth import merchant_of, state_of
from api.errors import ApiError
from api.payments import query_int
from ledger import webhook_deliveries as ledger
from ledger.engine import transaction
from ledger.merchants import aware
from paytide.logging import get_logger
from paytide.webhook_dispatch import NotRedrivable, redrive

log = get_logger("paytide.api.webhook_deliveries")
# Ids are ours (whd_ + hex): anything else is unknown without asking the database.
DELIVERY_ID = re.compile(r"^whd_[0-9a-f]{1,36}$")


def public_delivery(view: ledger.DeliveryView) -> dict[str, Any]:
    return {
        "id": view.id,
        "object": "webhook_delivery",
        "event_id": view.event_id,
        "event_type": view.event_type,
        "endpoint_id": view.endpoint_id,
        "status": view.status,
        "attempts": view.attempts,
        "redrives": view.redrives,
        "last_status_code": view.last_status_code,
        "last_error": view.last_error,
        "created_at": view.created_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "delivered_at": view.delivered_at.isoformat() if view.delivered_at else None,
    }


async def list_deliveries(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)
    params = request.query_params
    unknown = set(params) - {"status", "limit", "cursor"}
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown query parameters: {sorted(unknown)}")
    status = params.get("status")
    if status is not None and status not in ledger.STATUSES:
        raise ApiError(400, "invalid_query", f"status must be one of {list(ledger.STATUSES)}")
    limit = query_int(params.get("limit"), "limit", 20, 1, 100)
    cursor = params.get("cursor") or None
    if cursor is not None and not DELIVERY_ID.match(cursor):
        raise ApiError(400, "invalid_query", "cursor must be the next_cursor of a previous page")

    def read() -> list[ledger.DeliveryView]:
        with transaction(state.sessions) as session:
            return ledger.list_for(session, merchant, status=status, limit=limit + 1, before=cursor)

    rows = await run_in_threadpool(read)
    page = rows[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [public_delivery(view) for view in page],
            "next_cursor": page[-1].id if len(rows) > limit else None,
        }
    )


async def get_delivery(request: Request) -> Response:
    """One delivery with every attempt the ledger logged, oldest first."""
    state = state_of(request)
    merchant = merchant_of(request)
    delivery_id = request.path_params["delivery_id"]
    if not DELIVERY_ID.match(delivery_id):
        raise ApiError(404, "webhook_delivery_not_found", f"no webhook delivery {delivery_id!r}")

    def read() -> dict[str, Any] | None:
        with transaction(state.sessions) as session:
            row = ledger.get(session, delivery_id)
            if row is None or row.merchant_id != merchant:
                return None
            attempts = [
                {
                    "attempt": attempt.attempt,
                    "status_code": attempt.status_code,
                    "latency_ms": attempt.latency_ms,
                    "error": attempt.error,
                    "at": (aware(attempt.created_at) or attempt.created_at).isoformat(),
                }
                for attempt in ledger.attempts_of(session, delivery_id)
            ]
            return {**public_delivery(ledger.view_of(row)), "attempt_log": attempts}

    found = await run_in_threadpool(read)
    if found is None:
        raise ApiError(404, "webhook_delivery_not_found", f"no webhook delivery {delivery_id!r}")
    return JSONResponse(found)


async def retry_delivery(request: Request) -> Response:
    """Re-drive one dead letter: a new round of the same delivery, with a fresh retry window."""
    state = state_of(request)
    merchant = merchant_of(request)
    delivery_id = request.path_params["delivery_id"]
    if not DELIVERY_ID.match(delivery_id):
        raise ApiError(404, "webhook_delivery_not_found", f"no webhook delivery {delivery_id!r}")
    try:
        view = await redrive(
            state.temporal, state.settings, state.sessions, delivery_id, merchant_id=merchant
        )
    except NotRedrivable as refused:
        if refused.status is None:
            raise ApiError(
                404, "webhook_delivery_not_found", f"no webhook delivery {delivery_id!r}"
            ) from None
        raise ApiError(
            409,
            "webhook_delivery_not_failed",
            f"this delivery is {refused.status}; only a failed delivery (a dead letter) can be "
            "retried",
        ) from None
    except RPCError as error:
        raise ApiError(
            503,
            "temporal_unavailable",
            "the re-drive could not be started; the delivery is still failed, retry shortly",
            headers={"Retry-After": "2"},
        ) from error
    log.info("webhook_delivery_redriven", delivery_id=delivery_id, round=view.redrives)
    return JSONResponse(public_delivery(view), status_code=202)
