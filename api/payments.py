"""``/payments``: start a payment (update-with-start), read it, list them, cancel one."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.auth import merchant_of, state_of
from api.body import parse_json, read_bytes, read_json, validate
from api.errors import ApiError
from api.schemas import CancelBody, CaptureBody, CreatePayment
from api.state import ApiState
from api.workflow_start import AlreadyClosed, NoAnswerYet, execute_update_with_start
from gateways.registry import usable
from gateways.router import NoGatewayAvailable, route
from ledger import disputes as dispute_ledger
from ledger import payments as ledger
from ledger import refunds as refund_ledger
from ledger.engine import transaction
from ledger.models import Payment
from paytide.logging import get_logger
from paytide.money import format_amount
from paytide.search_attributes import customer_search_value
from workflows.contract import (
    CLOSED_STATUSES,
    CancelPayment,
    CaptureMethod,
    CapturePayment,
    GatewayName,
    InitiateRequest,
    PaymentInput,
    PaymentRequest,
    PaymentStatus,
    PaymentView,
    RiskContext,
    WorkflowSettings,
)
from workflows.payment import PaymentWorkflow
from workflows.public import public_dispute, public_payment, public_refund

log = get_logger("paytide.api.payments")
# The payment workflow's error when the ledger would not admit the payment (workflows/payment.py).
NOT_ADMITTED = "payment_not_admitted"
REPLAY_HEADER = "Idempotent-Replayed"


def _route(state: ApiState, body: CreatePayment, merchant: str) -> list[GatewayName]:
    try:
        return route(
            state.settings.routing,
            usable(state.settings),
            merchant=merchant,
            currency=body.currency,
            amount_minor=body.amount,
            requested=body.gateway,
        )
    except NoGatewayAvailable as error:
        raise ApiError(
            422,
            "gateway_unavailable",
            str(error),
            details=[{"field": "gateway", "code": "gateway_unavailable", "message": str(error)}],
        ) from None


def _payment_request(
    body: CreatePayment,
    *,
    merchant: str,
    key: str,
    request_id: str,
    gateways: list[GatewayName],
    search_key: str,
) -> PaymentRequest:
    workflow = idempotency.workflow_id(merchant, key)
    return PaymentRequest(
        payment_id=idempotency.payment_id(workflow),
        merchant_id=merchant,
        idempotency_key=key,
        fingerprint=idempotency.fingerprint(body),
        amount_minor=body.amount,
        currency=body.currency,
        customer_id=body.customer_id,
        payment_method=body.payment_method,
        order_id=body.order_id,
        description=body.description,
        metadata=dict(body.metadata),
        capture=CaptureMethod(body.capture),
        gateway=body.gateway,
        risk=RiskContext(
            ip_address=str(body.ip_address) if body.ip_address else None,
            device_id=body.device_id,
            country=body.location.country if body.location else None,
            city=body.location.city if body.location else None,
        ),
        request_id=request_id,
        route=gateways,
        customer_search_key=customer_search_value(body.customer_id, search_key),
        customer_email=body.customer_email,
    )


def _workflow_settings(state: ApiState, *, default_gateway: GatewayName) -> WorkflowSettings:
    s = state.settings
    return WorkflowSettings(
        # The routed gateway, never a built-in one: the sandbox may not exist on this deployment.
        default_gateway=default_gateway,
        webhook_timeout_seconds=s.webhook_timeout,
        max_webhook_wait_seconds=s.max_webhook_wait,
        max_charge_attempts=s.max_charge_attempts,
        charge_retry_backoff_seconds=s.charge_retry_backoff,
        risk_block_score=s.risk_block_score,
        risk_review_score=s.risk_review_score,
        review_timeout_seconds=s.review_timeout,
        notification_redrive_seconds=s.notification_redrive_window,
        gateway_call_timeout_seconds=s.gateway_call_timeout,
        gateway_max_attempts=s.gateway_max_attempts,
    )


def _answer(view: PaymentView, *, created: bool) -> JSONResponse:
    headers = {} if created else {REPLAY_HEADER: "true"}
    return JSONResponse(public_payment(view), status_code=201 if created else 200, headers=headers)


def _key_reused() -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request; use a new key for a "
        "new payment",
    )


async def _ledger_row(state: ApiState, merchant: str, key: str) -> Payment | None:
    def read() -> Payment | None:
        with transaction(state.sessions) as session:
            return ledger.get_by_idempotency_key(session, merchant, key)

    return await run_in_threadpool(read)


@dataclass(frozen=True, kw_only=True)
class _Initiated:
    """The workflow's (or the ledger's) word on a payment, before it becomes an HTTP answer."""

    view: PaymentView
    created: bool


# A 202 carries nothing request-specific, so every waiting copy can be sent the same one.
_Initiation = _Initiated | JSONResponse


async def create_payment(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)
    body = validate(CreatePayment, await read_json(request, state.settings.max_body_bytes))
    key = idempotency.checked_key(request.headers.get("idempotency-key"))
    key = key or idempotency.derived_key(merchant, body)

    outcome, leader = await state.initiations.run(
        (merchant, key, idempotency.fingerprint(body)),
        lambda: _initiate(state, body, merchant, key),
    )
    if isinstance(outcome, JSONResponse):
        return outcome
    # Only the copy that did the work can have created the payment; the others are replays.
    return _answer(outcome.view, created=outcome.created and leader)


async def _initiate(state: ApiState, body: CreatePayment, merchant: str, key: str) -> _Initiation:
    # A payment that has already ended answers from the ledger: no Temporal round trip, and it
    # still works after the workflow has left the namespace's retention (or routing changed).
    existing = await _ledger_row(state, merchant, key)
    if existing is not None:
        if existing.fingerprint != idempotency.fingerprint(body):
            raise _key_reused()
        if PaymentStatus(existing.status) in CLOSED_STATUSES:
            return _Initiated(view=ledger.to_view(existing), created=False)

    payment = _payment_request(
        body,
        merchant=merchant,
        key=key,
        request_id=uuid.uuid4().hex,
        gateways=_route(state, body, merchant),
        search_key=state.settings.search_hash_key.get_secret_value(),
    )

    try:
        result = await execute_update_with_start(
            state.temporal,
            PaymentWorkflow.initiate,
            InitiateRequest(fingerprint=payment.fingerprint),
            lambda: _start_operation(state, payment, merchant, key),
            wait_seconds=state.settings.initiate_wait,
        )
    except NoAnswerYet:
        return await _accepted_after_check(state, payment, merchant, key)
    except AlreadyClosed:
        # The workflow closed between our ledger read and the start: the ledger has it now.
        return await _replay_from_ledger(state, merchant, key, payment.fingerprint)
    except WorkflowUpdateFailedError as error:
        raise _from_update_failure(error) from None
    created = result.started_by == payment.request_id
    log.info(
        "payment_initiated" if created else "payment_replayed",
        payment_id=payment.payment_id,
        status=result.payment.status.value,
    )
    return _Initiated(view=result.payment, created=created)


def _start_operation(
    state: ApiState, payment: PaymentRequest, merchant: str, key: str
) -> WithStartWorkflowOperation[PaymentWorkflow, PaymentView]:
    return WithStartWorkflowOperation(
        PaymentWorkflow.run,
        PaymentInput(
            request=payment, settings=_workflow_settings(state, default_gateway=payment.route[0])
        ),
        id=idempotency.workflow_id(merchant, key),
        task_queue=state.settings.temporal_task_queue,
        # Join the running payment on a retry; never start a second run once it has closed.
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        # What an operator sees first in the Web UI (encrypted like every payload).
        static_summary=f"{format_amount(payment.amount_minor, payment.currency)} "
        f"from {payment.customer_id}",
        static_details=(
            f"payment {payment.payment_id} · order {payment.order_id} · "
            f"merchant {payment.merchant_id} · capture {payment.capture.value}"
        ),
        memo={"payment_id": payment.payment_id, "order_id": payment.order_id},
    )


async def _accepted_after_check(
    state: ApiState, payment: PaymentRequest, merchant: str, key: str
) -> JSONResponse:
    """202 without the workflow's word, once the ledger has the payment: its Location must be
    found by GET, cancel and capture, which read the ledger (and the payment id does not name the
    workflow). Until the workflow's first task has admitted it (no worker yet, or a loaded one),
    the answer is 409 payment_in_progress: the same request again joins the same workflow."""
    row = await _ledger_row(state, merchant, key)
    if row is None:
        raise _in_progress()
    if row.fingerprint != payment.fingerprint:
        raise _key_reused()
    return _accepted(payment)


def _from_update_failure(error: WorkflowUpdateFailedError) -> ApiError:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == "idempotency_key_reused":
        return _key_reused()
    if isinstance(cause, ApplicationError) and cause.type == NOT_ADMITTED:
        return _not_admitted(cause.message)
    if isinstance(cause, ApplicationError) and cause.type in (
        "payment_not_cancelable",
        "payment_not_capturable",
        "payment_not_in_review",
        "review_conflict",
    ):
        return ApiError(409, cause.type, cause.message)
    if isinstance(cause, ApplicationError) and cause.type == "invalid_capture_amount":
        return ApiError(
            422,
            "validation_failed",
            cause.message,
            details=[
                {"field": "amount", "code": "invalid_capture_amount", "message": cause.message}
            ],
        )
    raise error


def _not_admitted(message: str) -> ApiError:
    return ApiError(
        422,
        NOT_ADMITTED,
        f"{message}. Send a corrected request with a new Idempotency-Key.",
    )


async def _admission_failure(state: ApiState, merchant: str, key: str) -> ApiError | None:
    """The error of this key's closed workflow when it ended without admitting the payment (the
    same answer as the first POST's, instead of a payment that never appears)."""
    handle = state.temporal.get_workflow_handle(idempotency.workflow_id(merchant, key))
    try:
        await asyncio.wait_for(handle.result(follow_runs=False), timeout=5)
    except WorkflowFailureError as error:
        cause = error.cause
        if isinstance(cause, ApplicationError) and cause.type == NOT_ADMITTED:
            return _not_admitted(cause.message)
    except (TimeoutError, RPCError):
        pass
    return None


async def _replay_from_ledger(state: ApiState, merchant: str, key: str, fp: str) -> _Initiated:
    row = await _ledger_row(state, merchant, key)
    if row is None:
        failed = await _admission_failure(state, merchant, key)
        if failed is not None:
            raise failed
        raise _in_progress()
    if row.fingerprint != fp:
        raise _key_reused()
    return _Initiated(view=ledger.to_view(row), created=False)


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "payment_in_progress",
        "a payment with this Idempotency-Key exists but is not readable yet; send the same "
        "request again shortly",
        headers={"Retry-After": "1"},
    )


def _accepted(payment: PaymentRequest) -> JSONResponse:
    location = f"/payments/{payment.payment_id}"
    return JSONResponse(
        {
            "id": payment.payment_id,
            "object": "payment",
            "status": PaymentStatus.RECEIVED.value,
            "amount": payment.amount_minor,
            "currency": payment.currency,
        },
        status_code=202,
        headers={"Location": location},
    )


async def find_payment(state: ApiState, merchant: str, payment_id: str) -> Payment:
    def read() -> Payment | None:
        with transaction(state.sessions) as session:
            return ledger.get_payment(session, merchant, payment_id)

    row = await run_in_threadpool(read)
    if row is None:
        raise ApiError(404, "payment_not_found", f"no payment {payment_id!r} for this merchant")
    return row


async def get_payment(request: Request) -> Response:
    state = state_of(request)
    row = await find_payment(state, merchant_of(request), request.path_params["payment_id"])
    view = ledger.to_view(row)
    if view.status is PaymentStatus.REQUIRES_ACTION:
        # The client secret lives only in the workflow (never in the ledger): ask it.
        try:
            handle = state.temporal.get_workflow_handle(row.workflow_id)
            view = await asyncio.wait_for(handle.query(PaymentWorkflow.status), timeout=2.0)
        except (TimeoutError, RPCError) as error:
            log.warning("payment_query_failed", payment_id=row.id, error=str(error))
    return JSONResponse({**public_payment(view), **await _refunds_and_disputes(state, row.id)})


async def _refunds_and_disputes(state: ApiState, payment_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with transaction(state.sessions) as session:
            return {
                "refunds": [
                    public_refund(refund_ledger.to_view(row))
                    for row in refund_ledger.list_for_payment(session, payment_id)
                ],
                "disputes": [
                    public_dispute(dispute_ledger.to_view(row))
                    for row in dispute_ledger.list_for_payment(session, payment_id)
                ],
            }

    return await run_in_threadpool(read)


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, _, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created), last_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None


def _encode_cursor(row: Payment) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def query_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise ApiError(400, "invalid_query", f"{name} must be an integer from {low} to {high}")
    return int(value)


async def list_payments(request: Request) -> Response:
    state = state_of(request)
    params = request.query_params
    unknown = set(params) - {"customer_id", "status", "created_after", "limit", "cursor"}
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown query parameters: {sorted(unknown)}")
    limit = query_int(params.get("limit"), "limit", 20, 1, 100)
    status = params.get("status")
    if status is not None and status not in {s.value for s in PaymentStatus}:
        raise ApiError(
            400, "invalid_query", f"status must be one of {[s.value for s in PaymentStatus]}"
        )
    created_after: datetime | None = None
    if params.get("created_after"):
        try:
            created_after = datetime.fromisoformat(params["created_after"])
        except ValueError:
            raise ApiError(400, "invalid_query", "created_after must be an ISO 8601 time") from None
    after = _decode_cursor(params["cursor"]) if params.get("cursor") else None
    merchant = merchant_of(request)

    def read() -> list[Payment]:
        with transaction(state.sessions) as session:
            return ledger.list_payments(
                session,
                merchant_id=merchant,
                customer_id=params.get("customer_id"),
                status=status,
                created_after=created_after,
                after=after,
                limit=limit + 1,
            )

    rows = await run_in_threadpool(read)
    page = rows[:limit]
    body: dict[str, Any] = {
        "object": "list",
        "data": [public_payment(ledger.to_view(row)) for row in page],
        "next_cursor": _encode_cursor(page[-1]) if len(rows) > limit else None,
    }
    return JSONResponse(body)


async def _optional_body(request: Request, state: ApiState) -> Any:
    # Capped like every body: an empty one means "no options", anything else must be JSON.
    raw = await read_bytes(request, state.settings.max_body_bytes)
    return parse_json(raw) if raw else {}


async def operate(
    state: ApiState, row: Payment, update: Any, argument: Any, not_allowed: str
) -> PaymentView | None:
    """Run an update on a payment's workflow.

    A payment that has ended gets one answer, 409 ``not_allowed`` with the final payment in
    ``details`` (see ``_ended``), however Temporal put it: the ledger already says so; the
    workflow, still finishing, refused the update; or the server did, as the workflow closed
    ("workflow update was aborted by closing workflow", "workflow operation can not be applied
    because workflow is closing") or after ("workflow execution already completed"). The ledger
    is read again to tell these from other refusals: it is final before the workflow closes.

    None when the workflow has not answered within the API's wait (``PAYTIDE_INITIATE_WAIT``):
    a cancel or capture may wait for the gateway for minutes, and an HTTP request must not. The
    update goes on in the workflow; the caller answers 202 and the client reads the payment."""
    if PaymentStatus(row.status) in CLOSED_STATUSES:
        raise _ended(row, not_allowed)
    handle = state.temporal.get_workflow_handle(row.workflow_id)

    async def run() -> PaymentView:
        started = await handle.start_update(
            update, argument, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        view: PaymentView = await started.result()
        return view

    try:
        return await asyncio.wait_for(run(), timeout=state.settings.initiate_wait)
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        return None
    except WorkflowUpdateFailedError as error:
        refusal = _from_update_failure(error)
        if refusal.status != 409:
            raise refusal from None
        raise await _ended_since(state, row, not_allowed) or refusal from None
    except RPCError as error:
        if error.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.RESOURCE_EXHAUSTED):
            raise
        if (answer := await _ended_since(state, row, not_allowed)) is not None:
            raise answer from None
        if error.status is RPCStatusCode.RESOURCE_EXHAUSTED:
            raise
        # Closed while the ledger shows it open: terminated by hand (docs/operations.md).
        raise ApiError(
            409,
            not_allowed,
            f"the payment's workflow has closed while the ledger shows it {row.status}: "
            "an operator must settle it",
        ) from None


def _ended(row: Payment, code: str) -> ApiError:
    """409 for a request that needs a payment still in flight: it has ended; ``details`` is it."""
    return ApiError(
        409,
        code,
        f"payment has ended: it is {row.status}",
        details=public_payment(ledger.to_view(row)),
    )


async def _ended_since(state: ApiState, row: Payment, code: str) -> ApiError | None:
    """``_ended`` when the ledger now shows the payment final, else None."""

    def read() -> Payment | None:
        with transaction(state.sessions) as session:
            return ledger.get_payment(session, row.merchant_id, row.id)

    now = await run_in_threadpool(read)
    if now is None or PaymentStatus(now.status) not in CLOSED_STATUSES:
        return None
    return _ended(now, code)


def still_working(row: Payment) -> JSONResponse:
    """202: the request was handed to the payment's workflow, which has not finished it yet."""
    return JSONResponse(
        public_payment(ledger.to_view(row)),
        status_code=202,
        headers={"Location": f"/payments/{row.id}"},
    )


async def cancel_payment(request: Request) -> Response:
    state = state_of(request)
    row = await find_payment(state, merchant_of(request), request.path_params["payment_id"])
    body = validate(CancelBody, await _optional_body(request, state))
    view = await operate(
        state,
        row,
        PaymentWorkflow.cancel,
        CancelPayment(reason=body.reason),
        "payment_not_cancelable",
    )
    if view is None:
        return still_working(row)
    if view.status is not PaymentStatus.CANCELED:
        raise ApiError(
            409,
            "payment_not_cancelable",
            f"the gateway had already settled this payment: it is {view.status.value}",
            details=public_payment(view),
        )
    return JSONResponse(public_payment(view))


async def capture_payment(request: Request) -> Response:
    state = state_of(request)
    row = await find_payment(state, merchant_of(request), request.path_params["payment_id"])
    body = validate(CaptureBody, await _optional_body(request, state))
    view = await operate(
        state,
        row,
        PaymentWorkflow.capture,
        CapturePayment(amount_minor=body.amount),
        "payment_not_capturable",
    )
    if view is None:
        return still_working(row)
    # A capture the gateway refused is an outcome: the payment says failed, with the reason.
    return JSONResponse(public_payment(view))
