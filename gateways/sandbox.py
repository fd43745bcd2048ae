"""paytide's adapter for the sandbox gateway: the `Gateway` protocol over its HTTP API.

Transport trouble becomes `GatewayUnavailable` / `GatewayRateLimited` (retry with the same
idempotency key) or `GatewayRequestError` (our bug or bad credentials: do not retry) right here,
where the HTTP status is known. Every answer the sandbox gives about a charge, including a
decline, is a `ChargeOutcome`; every answer about a refund, including the sandbox refusing one,
is a `RefundOutcome`.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from gateways import signing
from gateways.base import (
    GatewayRateLimited,
    GatewayRefused,
    GatewayRequestError,
    GatewayUnavailable,
    WebhookRejected,
    retry_after_seconds,
)
from paytide import untrusted_json
from workflows.contract import (
    CancelRequest,
    CaptureRequest,
    ChargeLookup,
    ChargeOutcome,
    ChargeRequest,
    ChargeState,
    DisputeNotice,
    DisputeState,
    Failure,
    GatewayEvent,
    GatewayName,
    NextAction,
    RefundLookup,
    RefundNotice,
    RefundOutcome,
    RefundRequest,
    RefundState,
)

SIGNATURE_HEADER = "sandbox-signature"

_STATES: dict[str, ChargeState] = {
    "pending": ChargeState.PENDING,
    "requires_action": ChargeState.REQUIRES_ACTION,
    "authorized": ChargeState.AUTHORIZED,
    "succeeded": ChargeState.SUCCEEDED,
    "declined": ChargeState.DECLINED,
    "canceled": ChargeState.CANCELED,
}

_EVENT_STATES: dict[str, ChargeState] = {
    "charge.succeeded": ChargeState.SUCCEEDED,
    "charge.authorized": ChargeState.AUTHORIZED,
    "charge.canceled": ChargeState.CANCELED,
}


_REFUND_STATES: dict[str, RefundState] = {
    "pending": RefundState.PENDING,
    "succeeded": RefundState.SUCCEEDED,
    "failed": RefundState.FAILED,
}

# Refusals of a refund request: outcomes about the charge, not trouble with the request.
_REFUND_REFUSALS = frozenset({"refund_exceeds_charge", "charge_not_refundable"})


def _str(raw: Any) -> str | None:
    return raw if isinstance(raw, str) else None


def _int(raw: Any) -> int | None:
    # bool is an int subclass; `true` is never an amount.
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _failure(raw: Any) -> Failure | None:
    if not isinstance(raw, dict):
        return None
    return Failure(
        code=str(raw.get("code", "unknown")),
        message=str(raw.get("message", "")),
        retryable=bool(raw.get("retryable", False)),
    )


def _state(status: Any, failure: Failure | None) -> ChargeState:
    if status == "failed":
        # The sandbox says whether a new attempt can help; without that, treat it as final.
        retryable = failure is not None and failure.retryable
        return ChargeState.RETRYABLE_FAILURE if retryable else ChargeState.DECLINED
    try:
        return _STATES[status]
    except (KeyError, TypeError):
        raise GatewayRequestError(
            f"the sandbox reported unknown charge status {status!r}; the adapter needs updating"
        ) from None


def _captured(charge: Mapping[str, Any]) -> int | None:
    """What a succeeded charge took from the card (less than its amount after a partial
    capture); None before it succeeded, when the sandbox's 0 means nothing yet."""
    return _int(charge.get("amount_captured")) if charge.get("status") == "succeeded" else None


def _outcome(charge: Mapping[str, Any]) -> ChargeOutcome:
    failure = _failure(charge.get("failure"))
    raw_action = charge.get("next_action")
    next_action = (
        NextAction(
            type=str(raw_action.get("type")), redirect_url=_str(raw_action.get("redirect_url"))
        )
        if isinstance(raw_action, dict)
        else None
    )
    return ChargeOutcome(
        state=_state(charge.get("status"), failure),
        gateway_reference=_str(charge.get("id")),
        client_secret=_str(charge.get("client_secret")),
        next_action=next_action,
        failure=failure,
        amount_minor=_int(charge.get("amount")),
        currency=_str(charge.get("currency")),
        amount_captured=_captured(charge),
    )


def _refund_outcome(refund: Mapping[str, Any]) -> RefundOutcome:
    status = refund.get("status")
    state = _REFUND_STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise GatewayRequestError(
            f"the sandbox reported unknown refund status {status!r}; the adapter needs updating"
        )
    return RefundOutcome(
        state=state,
        refund_reference=_str(refund.get("id")),
        failure=_failure(refund.get("failure")),
    )


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("retry-after"))


def _error_code(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "unknown", response.text[:200]


class SandboxGateway:
    """The sandbox over HTTP; the caller owns ``client`` (its timeouts and its lifetime)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key

    @property
    def name(self) -> GatewayName:
        return GatewayName.SANDBOX

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        metadata = {
            **request.metadata,
            "payment_id": request.payment_id,
            "workflow_id": request.workflow_id,
            "merchant_id": request.merchant_id,
            "customer_id": request.customer_id,
        }
        body = {
            "amount": request.amount_minor,
            "currency": request.currency,
            "payment_method": request.payment_method,
            "capture": str(request.capture),
            "reference": request.payment_id,
            "metadata": metadata,
        }
        response = await self._send(
            "POST", "/v1/charges", json=body, idempotency_key=request.idempotency_key
        )
        return _outcome(self._charge_json(response))

    async def retrieve(self, lookup: ChargeLookup) -> ChargeOutcome:
        if lookup.gateway_reference:
            response = await self._send(
                "GET", f"/v1/charges/{_segment(lookup.gateway_reference)}", allow={404}
            )
        elif lookup.idempotency_key:
            response = await self._send(
                "GET",
                "/v1/charges",
                params={"idempotency_key": lookup.idempotency_key},
                allow={404},
            )
        else:
            raise GatewayRequestError(
                "a charge lookup needs a gateway reference or idempotency key"
            )
        if response.status_code == 404:
            return ChargeOutcome(state=ChargeState.NOT_FOUND)
        return _outcome(self._charge_json(response))

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        response = await self._send(
            "POST",
            f"/v1/charges/{_segment(request.gateway_reference)}/cancel",
            idempotency_key=request.idempotency_key,
            allow={404, 409},
        )
        if response.status_code == 404:
            return ChargeOutcome(state=ChargeState.NOT_FOUND)
        if response.status_code == 409:
            # Too late to cancel: the answer carries the charge's current state, an outcome.
            return _outcome(_refused_charge(response, "cancel"))
        return _outcome(self._charge_json(response))

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        response = await self._send(
            "POST",
            f"/v1/charges/{_segment(request.gateway_reference)}/capture",
            json={"amount": request.amount_minor, "currency": request.currency},
            idempotency_key=request.idempotency_key,
            allow={404, 409},
        )
        if response.status_code == 404:
            return ChargeOutcome(state=ChargeState.NOT_FOUND)
        if response.status_code == 409:
            # Not authorized (any more): the answer carries the charge's current state, an
            # outcome the caller judges (already succeeded, canceled, still pending...).
            return _outcome(_refused_charge(response, "capture"))
        return _outcome(self._charge_json(response))

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        body: dict[str, Any] = {
            "charge": request.gateway_reference,
            "amount": request.amount_minor,
            "currency": request.currency,
            "metadata": {"payment_id": request.payment_id},
        }
        if request.refund_id is not None:
            body["metadata"]["refund_id"] = request.refund_id
        if request.reason is not None:
            body["reason"] = request.reason
        response = await self._send(
            "POST",
            "/v1/refunds",
            json=body,
            idempotency_key=request.idempotency_key,
            allow={400, 409},
        )
        if not response.is_success:
            code, message = _error_code(response)
            if code not in _REFUND_REFUSALS:
                raise GatewayRequestError(
                    f"sandbox answered {response.status_code} {code} on POST /v1/refunds: {message}"
                )
            # Nothing was created, and asking again cannot change the answer.
            return RefundOutcome(
                state=RefundState.FAILED,
                failure=Failure(code=code, message=message, retryable=False),
            )
        return _refund_outcome(self._refund_json(response))

    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        response = await self._send(
            "GET", f"/v1/refunds/{_segment(lookup.refund_reference)}", allow={404}
        )
        if response.status_code == 404:
            # We hold a reference the sandbox gave us; it not knowing it proves nothing yet.
            return RefundOutcome(
                state=RefundState.PENDING, refund_reference=lookup.refund_reference
            )
        return _refund_outcome(self._refund_json(response))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        allow: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request; return a 2xx answer or one in ``allow``, raise for the rest."""
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self._client.request(
                method, f"{self._base_url}{path}", json=json, params=params, headers=headers
            )
        except httpx.UnsupportedProtocol as error:
            raise GatewayRequestError(f"sandbox base URL is unusable: {error}") from error
        except httpx.ConnectError as error:
            # Nothing was sent: the sandbox cannot have processed it.
            raise GatewayRefused(
                f"sandbox refused the connection on {method} {path}: {error}"
            ) from error
        except httpx.TransportError as error:
            # Includes timeouts: the charge may or may not exist, and only a retry with the same
            # idempotency key (or a lookup) can tell, so this is retryable.
            raise GatewayUnavailable(
                f"sandbox unreachable on {method} {path}: {type(error).__name__}"
            ) from error
        status = response.status_code
        if response.is_success or status in allow:
            return response
        code, message = _error_code(response)
        detail = f"sandbox answered {status} {code} on {method} {path}: {message}"
        if status == 429:
            raise GatewayRateLimited(detail, retry_after=_retry_after(response))
        if status == 503:
            # The sandbox answers 503 only before it records anything.
            raise GatewayRefused(detail, retry_after=_retry_after(response))
        if status >= 500 or status == 408:
            raise GatewayUnavailable(detail, retry_after=_retry_after(response))
        raise GatewayRequestError(detail)

    def _charge_json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            charge = response.json()
        except ValueError:
            charge = None
        if not isinstance(charge, dict) or "id" not in charge or "status" not in charge:
            # Garbled in transit or by a proxy; the request is idempotent, so asking again is safe.
            raise GatewayUnavailable(
                f"sandbox answered {response.status_code} with a body that is not a charge"
            )
        return charge

    def _refund_json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            refund = response.json()
        except ValueError:
            refund = None
        if not isinstance(refund, dict) or "id" not in refund or "status" not in refund:
            # As for charges: the request is idempotent, so asking again is safe.
            raise GatewayUnavailable(
                f"sandbox answered {response.status_code} with a body that is not a refund"
            )
        return refund


def _refused_charge(response: httpx.Response, action: str) -> dict[str, Any]:
    """The charge's current state, which the sandbox sends along when it refuses an action."""
    try:
        charge = response.json()["error"]["charge"]
    except (ValueError, KeyError, TypeError):
        charge = None
    if not isinstance(charge, dict):
        # An idempotency conflict, for one: our bug, and the same request can never succeed.
        code, message = _error_code(response)
        raise GatewayRequestError(
            f"sandbox refused the {action} without the charge's state: {code} {message}"
        )
    return charge


class SandboxWebhookVerifier:
    """Verifies ``Sandbox-Signature`` and turns a sandbox webhook into a `GatewayEvent`."""

    def __init__(
        self,
        secrets: Sequence[str],
        tolerance_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ValueError("SandboxWebhookVerifier needs at least one webhook secret")
        self._secrets = tuple(secrets)
        self._tolerance = tolerance_seconds
        self._clock = clock

    @property
    def provider(self) -> GatewayName:
        return GatewayName.SANDBOX

    def verify(self, headers: Mapping[str, str], body: bytes) -> list[GatewayEvent]:
        signing.verify(
            _header(headers, SIGNATURE_HEADER), body, self._secrets, self._tolerance, self._clock()
        )
        try:
            event = untrusted_json.loads(body)
            event_id, event_type, charge = event["id"], event["type"], event["data"]
            if not (isinstance(event_id, str) and isinstance(event_type, str)):
                raise TypeError("id and type must be strings")
            if not isinstance(charge, dict):
                raise TypeError("data must be an object")
        except (ValueError, KeyError, TypeError) as error:
            raise WebhookRejected(
                "malformed_payload", f"signed webhook body is not a sandbox event: {error}"
            ) from None
        if event_type.startswith("refund."):
            return _refund_events(event_id, event_type, charge)
        if event_type.startswith("dispute."):
            return _dispute_events(event_id, event_type, charge)
        failure = _failure(charge.get("failure"))
        if event_type == "charge.failed":
            retryable = failure is not None and failure.retryable
            state = ChargeState.RETRYABLE_FAILURE if retryable else ChargeState.DECLINED
        elif event_type in _EVENT_STATES:
            state = _EVENT_STATES[event_type]
        else:
            # Unknown types are acknowledged and ignored, so a newer sandbox does not make its
            # deliveries fail and retry forever against an older paytide.
            return []
        metadata = charge.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        return [
            GatewayEvent(
                provider=GatewayName.SANDBOX,
                event_id=event_id,
                event_type=event_type,
                state=state,
                gateway_reference=_str(charge.get("id")),
                amount_minor=_int(charge.get("amount")),
                currency=_str(charge.get("currency")),
                failure=failure,
                payment_id=_str(metadata.get("payment_id")),
                workflow_id=_str(metadata.get("workflow_id")),
                amount_captured=_captured(charge),
            )
        ]


def _refund_events(event_id: str, event_type: str, refund: dict[str, Any]) -> list[GatewayEvent]:
    state = _REFUND_STATES.get(event_type.removeprefix("refund."))
    if state is None:
        return []  # a refund state this paytide does not know: acknowledged, ignored
    metadata = refund.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    amount, currency = _int(refund.get("amount")), _str(refund.get("currency"))
    return [
        GatewayEvent(
            provider=GatewayName.SANDBOX,
            event_id=event_id,
            event_type=event_type,
            # A refund belongs to a succeeded charge; the refund's own state is in `refund`.
            state=ChargeState.SUCCEEDED,
            gateway_reference=_str(refund.get("charge")),
            payment_id=_str(metadata.get("payment_id")),
            refund=RefundNotice(
                state=state,
                refund_reference=_str(refund.get("id")),
                refund_id=_str(metadata.get("refund_id")),
                amount_minor=amount,
                currency=currency,
                failure=_failure(refund.get("failure")),
            ),
        )
    ]


_DISPUTE_STATES: dict[str, DisputeState] = {
    "needs_response": DisputeState.NEEDS_RESPONSE,
    "under_review": DisputeState.UNDER_REVIEW,
    "won": DisputeState.WON,
    "lost": DisputeState.LOST,
}


def _dispute_events(event_id: str, event_type: str, dispute: dict[str, Any]) -> list[GatewayEvent]:
    reference, status = _str(dispute.get("id")), dispute.get("status")
    state = _DISPUTE_STATES.get(status) if isinstance(status, str) else None
    if reference is None or state is None:
        raise WebhookRejected(
            "malformed_payload", f"{event_type} event {event_id} carries no dispute id or status"
        )
    due = _int(dispute.get("evidence_due_by"))
    metadata = dispute.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return [
        GatewayEvent(
            provider=GatewayName.SANDBOX,
            event_id=event_id,
            event_type=event_type,
            # Only a succeeded charge can be disputed; the dispute's own state is in `dispute`.
            state=ChargeState.SUCCEEDED,
            gateway_reference=_str(dispute.get("charge")),
            payment_id=_str(metadata.get("payment_id")),
            dispute=DisputeNotice(
                dispute_reference=reference,
                state=state,
                amount_minor=_int(dispute.get("amount")),
                currency=_str(dispute.get("currency")),
                reason=_str(dispute.get("reason")),
                evidence_due_by=(
                    datetime.fromtimestamp(due, UTC).isoformat() if due is not None else None
                ),
            ),
        )
    ]


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for Starlette's `Headers` and for a plain dict."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
