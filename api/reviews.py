"""Manual review: the queue of risky payments, and an operator's decision on one of them.

Both need an operator's API key, and both see every merchant's payments: a merchant must not be
able to wave its own risky payments through.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import require_operator, state_of
from api.body import read_json, validate
from api.errors import ApiError
from api.payments import operate, query_int, still_working
from api.schemas import ReviewBody
from ledger import payments as ledger
from ledger.engine import transaction
from ledger.models import Payment
from workflows.contract import ReviewDecision, ReviewVerdict
from workflows.payment import PaymentWorkflow
from workflows.public import public_payment


async def list_reviews(request: Request) -> Response:
    require_operator(request)
    state = state_of(request)
    unknown = set(request.query_params) - {"limit"}
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown query parameters: {sorted(unknown)}")
    limit = query_int(request.query_params.get("limit"), "limit", 50, 1, 200)

    def read() -> list[Payment]:
        with transaction(state.sessions) as session:
            return ledger.in_review(session, merchant_id=None, limit=limit)

    rows = await run_in_threadpool(read)
    return JSONResponse(
        {"object": "list", "data": [public_payment(ledger.to_view(row)) for row in rows]}
    )


async def review_payment(request: Request) -> Response:
    require_operator(request)
    state = state_of(request)
    payment_id = request.path_params["payment_id"]

    def read() -> Payment | None:
        with transaction(state.sessions) as session:
            return ledger.get_any_payment(session, payment_id)

    row = await run_in_threadpool(read)
    if row is None:
        raise ApiError(404, "payment_not_found", f"no payment {payment_id!r}")
    body = validate(ReviewBody, await read_json(request, state.settings.max_body_bytes))
    decision = ReviewDecision(
        verdict=ReviewVerdict(body.decision), reviewer=body.reviewer, reason=body.reason
    )
    view = await operate(state, row, PaymentWorkflow.review, decision, "payment_not_in_review")
    if view is None:
        return still_working(row)
    return JSONResponse(public_payment(view))
