"""``/payments/{id}/refunds``: refund a payment (update-with-start), list and read its refunds."""

from __future__ import annotations

import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api import idempotency
from api.auth import merchant_of, state_of
from api.body import read_json, validate
from api.errors import ApiError
from api.payments import REPLAY_HEADER, find_payment
from api.schemas import CreateRefund
from api.state import ApiState
from api.workflow_start import AlreadyClosed, NoAnswerYet, execute_update_with_start
from ledger import refunds as ledger
from ledger.engine import transaction
from ledger.models import RefundRecord
from paytide.logging import get_logger
from paytide.money import format_amount
from workflows.contract import RefundState
from workflows.public import public_refund
from workflows.refund import RefundWorkflow
from workflows.refund_contract import (
    RefundInitiate,
    RefundInput,
    RefundRequestInput,
    RefundResult,
    RefundSettings,
    RefundView,
)

log = get_logger("paytide.api.refunds")
FINAL_REFUND_STATES = frozenset({RefundState.SUCCEEDED, RefundState.FAILED})


def _settings(state: ApiState) -> RefundSettings:
    s = state.settings
    return RefundSettings(
        webhook_timeout_seconds=s.webhook_timeout,
        max_wait_seconds=s.max_webhook_wait,
        gateway_call_timeout_seconds=s.gateway_call_timeout,
        gateway_max_attempts=s.gateway_max_attempts,
    )


def _key_reused() -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was already used with a different request; use a new key for a "
        "new refund",
    )


def _refused(code: str, message: str, refundable: int | None) -> ApiError:
    if code == "refund_exceeds_refundable":
        return ApiError(422, code, message, details={"refundable": refundable or 0})
    if code == "payment_not_found":
        return ApiError(404, code, message)
    # payment_not_refundable: the payment's state does not allow it (yet).
    return ApiError(409, code, message)


def _answer(view: RefundView, *, created: bool) -> JSONResponse:
    headers = {} if created else {REPLAY_HEADER: "true"}
    return JSONResponse(public_refund(view), status_code=201 if created else 200, headers=headers)


async def _by_key(state: ApiState, merchant: str, key: str) -> RefundRecord | None:
    def read() -> RefundRecord | None:
        with transaction(state.sessions) as session:
            return ledger.get_by_key(session, merchant, key)

    return await run_in_threadpool(read)


async def create_refund(request: Request) -> Response:
    state = state_of(request)
    merchant = merchant_of(request)
    payment = await find_payment(state, merchant, request.path_params["payment_id"])
    body = validate(CreateRefund, await read_json(request, state.settings.max_body_bytes))
    key = idempotency.checked_key(request.headers.get("idempotency-key"))
    if key is None:
        # Two partial refunds of the same amount are both legitimate: nothing in the body can
        # tell a retry from a second refund, so the key cannot be derived.
        raise ApiError(
            400,
            "idempotency_key_required",
            "send an Idempotency-Key header, unique per refund, so a retry never refunds twice",
        )
    fingerprint = idempotency.fingerprint(body, payment_id=payment.id)

    existing = await _by_key(state, merchant, key)
    if existing is not None:
        if existing.fingerprint != fingerprint:
            raise _key_reused()
        if RefundState(existing.status) in FINAL_REFUND_STATES:
            return _answer(ledger.to_view(existing), created=False)

    workflow_id = idempotency.refund_workflow_id(merchant, key)
    refund = RefundRequestInput(
        refund_id=idempotency.refund_id(workflow_id),
        merchant_id=merchant,
        payment_id=payment.id,
        idempotency_key=key,
        fingerprint=fingerprint,
        amount_minor=body.amount,
        reason=body.reason,
        metadata=dict(body.metadata),
        request_id=uuid.uuid4().hex,
    )

    def start() -> WithStartWorkflowOperation[RefundWorkflow, RefundResult]:
        amount = (
            "the rest"
            if refund.amount_minor is None
            else format_amount(refund.amount_minor, payment.currency)
        )
        return WithStartWorkflowOperation(
            RefundWorkflow.run,
            RefundInput(request=refund, settings=_settings(state)),
            id=workflow_id,
            task_queue=state.settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"refund {amount} of {payment.id}",
            memo={"payment_id": payment.id, "refund_id": refund.refund_id},
        )

    try:
        result = await execute_update_with_start(
            state.temporal,
            RefundWorkflow.initiate,
            RefundInitiate(fingerprint=fingerprint),
            start,
            wait_seconds=state.settings.initiate_wait,
        )
    except NoAnswerYet:
        return await _accepted_after_check(state, refund, merchant, key)
    except AlreadyClosed:
        return await _replay_closed(state, refund, merchant, key, workflow_id)
    except WorkflowUpdateFailedError as error:
        raise _from_update_failure(error) from None
    created = result.started_by == refund.request_id
    log.info(
        "refund_initiated" if created else "refund_replayed",
        refund_id=refund.refund_id,
        payment_id=payment.id,
        status=result.refund.status.value,
    )
    return _answer(result.refund, created=created)


def _from_update_failure(error: WorkflowUpdateFailedError) -> ApiError:
    cause = error.cause
    if not isinstance(cause, ApplicationError) or cause.type is None:
        raise error
    if cause.type == "idempotency_key_reused":
        return _key_reused()
    refundable = cause.details[0] if cause.details and isinstance(cause.details[0], int) else None
    return _refused(cause.type, cause.message, refundable)


async def _accepted_after_check(
    state: ApiState, refund: RefundRequestInput, merchant: str, key: str
) -> Response:
    """202 without the workflow's word, once the ledger has the refund: its Location must be
    found by GET, which reads the ledger. Until the workflow's reserve step has run (no worker
    yet, or a loaded one), the answer is 409 refund_in_progress: the same request again joins the
    same workflow, and then gets the refund, or the refusal (a refused refund has no row)."""
    row = await _by_key(state, merchant, key)
    if row is None:
        raise _in_progress()
    if row.fingerprint != refund.fingerprint:
        raise _key_reused()
    return JSONResponse(
        {
            "id": refund.refund_id,
            "object": "refund",
            "payment_id": refund.payment_id,
            "status": RefundState.PENDING.value,
            "amount": refund.amount_minor,
        },
        status_code=202,
        headers={"Location": f"/payments/{refund.payment_id}/refunds/{refund.refund_id}"},
    )


async def _replay_closed(
    state: ApiState, refund: RefundRequestInput, merchant: str, key: str, workflow_id: str
) -> Response:
    """The refund's workflow has closed: the ledger has the refund, or the workflow's result
    says why it was refused (a refused refund leaves no ledger row)."""
    row = await _by_key(state, merchant, key)
    if row is not None:
        if row.fingerprint != refund.fingerprint:
            raise _key_reused()
        return _answer(ledger.to_view(row), created=False)
    try:
        closed: RefundResult = await state.temporal.get_workflow_handle(
            workflow_id, result_type=RefundResult
        ).result()
    except RPCError:
        closed = RefundResult()
    if closed.fingerprint and closed.fingerprint != refund.fingerprint:
        raise _key_reused()
    if closed.refusal is None:
        raise _in_progress()
    raise _refused(closed.refusal.code, closed.refusal.message, closed.refundable_minor)


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "refund_in_progress",
        "a refund with this Idempotency-Key exists but is not readable yet; send the same "
        "request again shortly",
        headers={"Retry-After": "1"},
    )


async def list_refunds(request: Request) -> Response:
    state = state_of(request)
    payment = await find_payment(state, merchant_of(request), request.path_params["payment_id"])

    def read() -> list[RefundView]:
        with transaction(state.sessions) as session:
            return [ledger.to_view(row) for row in ledger.list_for_payment(session, payment.id)]

    views = await run_in_threadpool(read)
    return JSONResponse({"object": "list", "data": [public_refund(view) for view in views]})


async def get_refund(request: Request) -> Response:
    state = state_of(request)
    payment = await find_payment(state, merchant_of(request), request.path_params["payment_id"])
    refund_id = request.path_params["refund_id"]

    def read() -> RefundView | None:
        with transaction(state.sessions) as session:
            row = session.get(RefundRecord, refund_id)
            return ledger.to_view(row) if row is not None and row.payment_id == payment.id else None

    view = await run_in_threadpool(read)
    if view is None:
        raise ApiError(404, "refund_not_found", f"no refund {refund_id!r} on this payment")
    return JSONResponse(public_refund(view))
