"""paytide's adapter for Stripe: the `Gateway` protocol over PaymentIntents and Refunds.

Built on the official SDK's `StripeClient` (no module globals), its async methods over an httpx
transport plugged in through the SDK's custom-client interface, and the SDK's own retries switched
off: retrying is the activity's job, with the same idempotency key.
Every POST carries the key paytide derived for the logical operation, so a retried activity can
never charge, capture, cancel or refund twice.

Retryability is decided here, where the SDK's error class and Stripe's error code are known. A
decline, a 3-D Secure challenge and a refused refund are outcomes; a 5xx, a timeout, a rate limit
or a lock timeout is `GatewayUnavailable`; a bad request or bad credentials is
`GatewayRequestError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Literal

import httpx
import stripe
from stripe.params import PaymentIntentCreateParams, RefundCreateParams

from gateways.base import (
    GatewayError,
    GatewayRateLimited,
    GatewayRefused,
    GatewayRequestError,
    GatewayUnavailable,
    WebhookRejected,
    retry_after_seconds,
)
from paytide import untrusted_json
from paytide.logging import get_logger
from workflows.contract import (
    CancelRequest,
    CaptureMethod,
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

log = get_logger("paytide.gateways.stripe")

SIGNATURE_HEADER = "stripe-signature"
# Metadata key under which each PaymentIntent carries the idempotency key that created it: Stripe
# has no lookup by idempotency key, so reconciliation searches for this instead.
IDEMPOTENCY_METADATA_KEY = "paytide_idempotency_key"

# A card error with this code is Stripe saying "try again": a new attempt (with a new idempotency
# key, since Stripe replays a 4xx answer for the old one) may succeed.
PROCESSING_ERROR = "processing_error"
# Another request or a Stripe process holds the object; Stripe answers 429 but it is no rate limit.
LOCK_TIMEOUT = "lock_timeout"
# Cancel or capture of a PaymentIntent in a state that does not allow it; the error carries it.
UNEXPECTED_STATE = "payment_intent_unexpected_state"
# Refund refusals that are answers about the payment, not mistakes in our request.
REFUND_REFUSALS = frozenset(
    {"charge_already_refunded", "charge_disputed", "amount_too_large", "balance_insufficient"}
)
STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

_CAPTURE_METHODS: dict[CaptureMethod, Literal["automatic", "manual"]] = {
    CaptureMethod.AUTOMATIC: "automatic",
    CaptureMethod.MANUAL: "manual",
}

_STATES: dict[str, ChargeState] = {
    "succeeded": ChargeState.SUCCEEDED,
    "processing": ChargeState.PENDING,
    "requires_action": ChargeState.REQUIRES_ACTION,
    "requires_capture": ChargeState.AUTHORIZED,
    "canceled": ChargeState.CANCELED,
}

_EVENT_STATES: dict[str, ChargeState] = {
    "payment_intent.succeeded": ChargeState.SUCCEEDED,
    "payment_intent.processing": ChargeState.PENDING,
    "payment_intent.requires_action": ChargeState.REQUIRES_ACTION,
    "payment_intent.amount_capturable_updated": ChargeState.AUTHORIZED,
    "payment_intent.canceled": ChargeState.CANCELED,
}
PAYMENT_FAILED = "payment_intent.payment_failed"

_REFUND_STATES: dict[str, RefundState] = {
    "succeeded": RefundState.SUCCEEDED,
    "pending": RefundState.PENDING,
    # The customer's bank needs more details (some non-card methods); it is not final yet.
    "requires_action": RefundState.PENDING,
    "failed": RefundState.FAILED,
    "canceled": RefundState.FAILED,
}


# ---- reading Stripe's JSON ------------------------------------------------------------------


def _str(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def _int(raw: Any) -> int | None:
    # bool is an int subclass; `true` is never an amount.
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _dict(raw: Any) -> dict[str, Any]:
    return raw if isinstance(raw, dict) else {}


def _currency(raw: Any) -> str | None:
    # Stripe speaks lower-case ISO 4217; paytide upper-case.
    value = _str(raw)
    return value.upper() if value else None


def _expandable_id(raw: Any) -> str | None:
    """An expandable field is an id string, or the object itself when expanded."""
    if isinstance(raw, dict):
        return _str(raw.get("id"))
    return _str(raw)


def _failure(error: Mapping[str, Any], fallback_code: str) -> Failure:
    """A `Failure` from Stripe's error object (`last_payment_error` or an error envelope)."""
    code = _str(error.get("decline_code")) or _str(error.get("code")) or fallback_code
    return Failure(
        code=code,
        message=_str(error.get("message")) or "",
        retryable=_str(error.get("code")) == PROCESSING_ERROR,
    )


def _payment_failure(intent: Mapping[str, Any]) -> Failure:
    """Why a confirmed PaymentIntent went back to requires_payment_method."""
    error = _dict(intent.get("last_payment_error"))
    if error:
        return _failure(error, "card_declined")
    # Without last_payment_error, an expanded latest charge may still say why it failed.
    charge = intent.get("latest_charge")
    if isinstance(charge, dict) and _str(charge.get("failure_code")):
        return Failure(
            code=str(charge["failure_code"]), message=_str(charge.get("failure_message")) or ""
        )
    return Failure(
        code="requires_payment_method",
        message="the PaymentIntent needs a new payment method; paytide does not provide one",
    )


def _next_action(intent: Mapping[str, Any]) -> NextAction | None:
    action = intent.get("next_action")
    if not isinstance(action, dict):
        return None
    redirect = _dict(action.get("redirect_to_url"))
    return NextAction(
        type=_str(action.get("type")) or "unknown", redirect_url=_str(redirect.get("url"))
    )


def _intent_state(intent: Mapping[str, Any]) -> tuple[ChargeState, Failure | None]:
    status = intent.get("status")
    if status == "requires_payment_method":
        # paytide always confirms on create, so this status means the attempt failed.
        failure = _payment_failure(intent)
        state = ChargeState.RETRYABLE_FAILURE if failure.retryable else ChargeState.DECLINED
        return state, failure
    if isinstance(status, str) and status in _STATES:
        return _STATES[status], None
    raise GatewayRequestError(
        f"Stripe reported PaymentIntent status {status!r}, which paytide never expects after "
        "confirm=true; the adapter needs updating"
    )


def _received(intent: Mapping[str, Any]) -> int | None:
    """What a succeeded PaymentIntent took from the card: ``amount_received``, less than
    ``amount`` after a partial capture. None before it succeeded."""
    return _int(intent.get("amount_received")) if intent.get("status") == "succeeded" else None


def _outcome(intent: Mapping[str, Any]) -> ChargeOutcome:
    state, failure = _intent_state(intent)
    return ChargeOutcome(
        state=state,
        gateway_reference=_str(intent.get("id")),
        client_secret=_str(intent.get("client_secret"))
        if state is ChargeState.REQUIRES_ACTION
        else None,
        next_action=_next_action(intent) if state is ChargeState.REQUIRES_ACTION else None,
        failure=failure,
        amount_minor=_int(intent.get("amount")),
        currency=_currency(intent.get("currency")),
        amount_captured=_received(intent),
    )


def _as_dict(obj: stripe.StripeObject) -> dict[str, Any]:
    # The SDK's objects are not dicts; one plain-JSON view serves API answers and webhooks alike.
    return obj.to_dict()


# ---- errors ---------------------------------------------------------------------------------


def _error_body(error: stripe.StripeError) -> dict[str, Any]:
    """Stripe's error envelope; some SDK error classes do not copy ``code`` onto themselves."""
    return _dict(_dict(error.json_body).get("error"))


def _retry_after(error: stripe.StripeError) -> float | None:
    headers = {name.lower(): value for name, value in (error.headers or {}).items()}
    return retry_after_seconds(headers.get("retry-after"))


def _translate(error: stripe.StripeError, action: str) -> GatewayError:
    """One Stripe SDK error as paytide's retryable or non-retryable `GatewayError`."""
    body = _error_body(error)
    code = error.code or _str(body.get("code"))
    status = error.http_status
    detail = (
        f"Stripe answered {status or 'nothing'} ({type(error).__name__}"
        f"{', ' + code if code else ''}) to {action}: {error.user_message or 'no message'}"
    )
    if code == LOCK_TIMEOUT:
        return GatewayUnavailable(detail, retry_after=_retry_after(error))
    if isinstance(error, stripe.RateLimitError):
        return GatewayRateLimited(detail, retry_after=_retry_after(error))
    if status == 503:
        # Stripe answers 503 before processing; the idempotency layer saved nothing.
        return GatewayRefused(detail, retry_after=_retry_after(error))
    if isinstance(error, stripe.APIConnectionError):
        # Includes timeouts: the request may or may not have been processed. Retrying with the
        # same idempotency key (or reconciling) is the only way to know.
        return GatewayUnavailable(detail)
    if isinstance(
        error,
        stripe.IdempotencyError
        | stripe.AuthenticationError
        | stripe.PermissionError
        | stripe.InvalidRequestError
        | stripe.CardError,
    ):
        return GatewayRequestError(detail)
    # APIError and anything the SDK adds later: 5xx (including a 500, whose outcome is unknown:
    # the workflow reconciles before deciding), 409 (a request with this key is still running),
    # or a garbled answer. Other 4xx statuses are a request Stripe will never accept.
    if status is not None and 400 <= status < 500 and status not in (408, 409):
        return GatewayRequestError(detail)
    return GatewayUnavailable(detail, retry_after=_retry_after(error))


def _declined(error: stripe.CardError) -> ChargeOutcome:
    """A card error from confirm is the charge's answer: a decline, or a retryable failure."""
    body = _error_body(error)
    failure = _failure(body, "card_declined")
    intent = _dict(body.get("payment_intent"))
    log.info(
        "stripe_charge_declined",
        code=failure.code,
        payment_intent=_str(intent.get("id")),
        charge=_str(body.get("charge")) or _expandable_id(intent.get("latest_charge")),
        retryable=failure.retryable,
    )
    return ChargeOutcome(
        state=ChargeState.RETRYABLE_FAILURE if failure.retryable else ChargeState.DECLINED,
        gateway_reference=_str(intent.get("id")),
        failure=failure,
        amount_minor=_int(intent.get("amount")),
        currency=_currency(intent.get("currency")),
    )


def _current_state(error: stripe.InvalidRequestError) -> ChargeOutcome | None:
    """When cancel or capture comes too late, Stripe's error carries the PaymentIntent as it is."""
    body = _error_body(error)
    intent = body.get("payment_intent")
    if error.code == UNEXPECTED_STATE and isinstance(intent, dict):
        return _outcome(intent)
    return None


def _is_missing(error: stripe.StripeError) -> bool:
    return isinstance(error, stripe.InvalidRequestError) and error.http_status == 404


def _search_literal(value: str) -> str:
    """A value quoted for Stripe's search query language."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


# ---- the gateway ----------------------------------------------------------------------------


class _AsyncHttpxClient(stripe.HTTPClient):
    """The SDK's transport over an ``httpx.AsyncClient``, through its custom-client interface.

    The SDK's own `stripe.HTTPXClient` (16.1) passes the form body as ``data=<str>``, which httpx
    0.28 deprecates with a warning on every POST; this one sends it as ``content=``. It also lets
    the caller share one connection pool. Synchronous calls are not supported: paytide is async.
    """

    name: ClassVar[str] = "paytide-httpx"

    def __init__(self, client: httpx.AsyncClient | None, timeout_seconds: float) -> None:
        super().__init__()
        self._owned = client is None
        self._client = client or httpx.AsyncClient()
        self._timeout = timeout_seconds

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self._client.request(
                method, url, headers=headers, content=post_data, timeout=self._timeout
            )
        except httpx.TransportError as error:
            # Timeouts included. The SDK turns nothing else into APIConnectionError for us.
            # The SDK's error constructors are unannotated.
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                f"no answer from Stripe at {url}: {type(error).__name__}", should_retry=True
            ) from error
        return response.content, response.status_code, response.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        if self._owned:
            await self._client.aclose()

    def close(self) -> None:
        """Nothing synchronous to close; `close_async` releases the connection pool."""


class StripeGateway:
    """Stripe over its official SDK; call `aclose` (or use ``async with``) when done.

    ``http``, when given, is the caller's client (its lifetime too); otherwise the gateway owns one.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str,
        *,
        timeout_seconds: float = 20.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not api_base.startswith(("https://", "http://")):
            raise ValueError(
                f"Stripe API base {api_base!r} must be an http(s) URL (PAYTIDE_STRIPE_API_BASE)"
            )
        self._http = _AsyncHttpxClient(http, timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=self._http,
            max_network_retries=0,
        )

    @property
    def name(self) -> GatewayName:
        return GatewayName.STRIPE

    async def aclose(self) -> None:
        await self._http.close_async()

    async def __aenter__(self) -> StripeGateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        metadata = {
            **request.metadata,
            "payment_id": request.payment_id,
            "workflow_id": request.workflow_id,
            "merchant_id": request.merchant_id,
            "customer_id": request.customer_id,
            IDEMPOTENCY_METADATA_KEY: request.idempotency_key,
        }
        params: PaymentIntentCreateParams = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method,
            "confirm": True,
            "capture_method": _CAPTURE_METHODS[request.capture],
            "metadata": metadata,
        }
        if request.description:
            params["description"] = request.description
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.CardError as error:
            return _declined(error)
        except stripe.StripeError as error:
            raise _translate(error, "create and confirm a PaymentIntent") from error
        return _outcome(_as_dict(intent))

    async def retrieve(self, lookup: ChargeLookup) -> ChargeOutcome:
        if lookup.gateway_reference:
            try:
                intent = await self._client.v1.payment_intents.retrieve_async(
                    lookup.gateway_reference, {"expand": ["latest_charge"]}
                )
            except stripe.StripeError as error:
                if _is_missing(error):
                    return ChargeOutcome(state=ChargeState.NOT_FOUND)
                raise _translate(error, "retrieve a PaymentIntent") from error
            return _outcome(_as_dict(intent))
        if lookup.idempotency_key:
            return await self._find_by_key(lookup.idempotency_key)
        raise GatewayRequestError("a charge lookup needs a gateway reference or idempotency key")

    async def _find_by_key(self, idempotency_key: str) -> ChargeOutcome:
        # Stripe cannot look a PaymentIntent up by idempotency key. Replaying the create POST with
        # the same key would answer exactly, but if the first request never arrived it would
        # charge now: a lookup must not do that. So every PaymentIntent carries its key in
        # metadata and is searched for here. Search is eventually consistent (normally under a
        # minute, longer during Stripe incidents), so NOT_FOUND means "not found yet": the
        # workflow must not treat it as proof that nothing was charged until its own deadline.
        query = f"metadata[{_search_literal(IDEMPOTENCY_METADATA_KEY)}]:" + _search_literal(
            idempotency_key
        )
        try:
            found = await self._client.v1.payment_intents.search_async(
                {"query": query, "limit": 10}
            )
        except stripe.StripeError as error:
            raise _translate(error, "search PaymentIntents by idempotency key") from error
        intents = [_dict(item) for item in _as_dict(found).get("data") or []]
        if not intents:
            # Search lags: "not found yet" is no proof, and the workflow must not act on it.
            return ChargeOutcome(state=ChargeState.NOT_FOUND, conclusive=False)
        if len(intents) > 1:
            # One key creates one PaymentIntent; several means someone reused our metadata.
            log.warning(
                "stripe_idempotency_key_on_several_intents",
                count=len(intents),
                payment_intents=[_str(i.get("id")) for i in intents],
            )
        newest = max(intents, key=lambda intent: _int(intent.get("created")) or 0)
        return _outcome(newest)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        try:
            intent = await self._client.v1.payment_intents.cancel_async(
                request.gateway_reference, None, {"idempotency_key": request.idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return ChargeOutcome(state=ChargeState.NOT_FOUND)
            current = _current_state(error)
            if current is None:
                raise _translate(error, "cancel a PaymentIntent") from error
            return current  # Too late to cancel: the PaymentIntent's state is the answer.
        except stripe.StripeError as error:
            raise _translate(error, "cancel a PaymentIntent") from error
        return _outcome(_as_dict(intent))

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        try:
            intent = await self._client.v1.payment_intents.capture_async(
                request.gateway_reference,
                {"amount_to_capture": request.amount_minor},
                {"idempotency_key": request.idempotency_key},
            )
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                return ChargeOutcome(state=ChargeState.NOT_FOUND)
            current = _current_state(error)
            if current is None:
                raise _translate(error, "capture a PaymentIntent") from error
            return current  # Already captured or canceled: its state is the answer.
        except stripe.StripeError as error:
            raise _translate(error, "capture a PaymentIntent") from error
        return _outcome(_as_dict(intent))

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        metadata = {
            "payment_id": request.payment_id,
            IDEMPOTENCY_METADATA_KEY: request.idempotency_key,
        }
        if request.refund_id is not None:
            metadata["refund_id"] = request.refund_id
        reason = request.reason if request.reason in STRIPE_REFUND_REASONS else None
        if request.reason and reason is None:
            # Stripe takes three reasons only; paytide's own goes along in metadata.
            metadata["reason"] = request.reason
        params: RefundCreateParams = {
            "payment_intent": request.gateway_reference,
            "amount": request.amount_minor,
            "metadata": metadata,
        }
        if reason:
            params["reason"] = reason
        try:
            refund = await self._client.v1.refunds.create_async(
                params, {"idempotency_key": request.idempotency_key}
            )
        except stripe.InvalidRequestError as error:
            if error.code in REFUND_REFUSALS:
                return RefundOutcome(
                    state=RefundState.FAILED,
                    failure=Failure(code=error.code or "", message=error.user_message or ""),
                )
            raise _translate(error, "create a refund") from error
        except stripe.StripeError as error:
            raise _translate(error, "create a refund") from error
        return _refund_outcome(_as_dict(refund))

    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        try:
            refund = await self._client.v1.refunds.retrieve_async(lookup.refund_reference)
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                # A reference Stripe gave us: not finding it is a lagging read, not an answer.
                return RefundOutcome(
                    state=RefundState.PENDING, refund_reference=lookup.refund_reference
                )
            raise _translate(error, "retrieve a refund") from error
        except stripe.StripeError as error:
            raise _translate(error, "retrieve a refund") from error
        return _refund_outcome(_as_dict(refund))


def _refund_outcome(refund: Mapping[str, Any]) -> RefundOutcome:
    status = refund.get("status")
    if not isinstance(status, str) or status not in _REFUND_STATES:
        raise GatewayRequestError(
            f"Stripe reported refund status {status!r}; the adapter needs updating"
        )
    state = _REFUND_STATES[status]
    failure = None
    if state is RefundState.FAILED:
        reason = _str(refund.get("failure_reason")) or status
        failure = Failure(code=reason, message=f"Stripe reports the refund {status}: {reason}")
    return RefundOutcome(state=state, refund_reference=_str(refund.get("id")), failure=failure)


# ---- webhooks -------------------------------------------------------------------------------


def _signature_timestamp(header: str) -> int:
    """The ``t=`` of a ``Stripe-Signature`` header; exactly one, all digits."""
    stamps = [
        value
        for key, sep, value in (part.strip().partition("=") for part in header.split(","))
        if sep and key == "t"
    ]
    if len(stamps) != 1 or not stamps[0].isdigit():
        # A repeated `t` would let a forger choose which one the MAC and the clock each see.
        raise WebhookRejected(
            "malformed_signature", "Stripe-Signature header needs exactly one numeric t= timestamp"
        )
    return int(stamps[0])


class StripeWebhookVerifier:
    """Verifies ``Stripe-Signature`` with the SDK and turns PaymentIntent events into signals."""

    def __init__(
        self,
        secrets: Sequence[str],
        tolerance_seconds: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secrets = [secret for secret in secrets if secret.strip()]
        if not secrets:
            raise ValueError(
                "StripeWebhookVerifier needs at least one webhook signing secret "
                "(PAYTIDE_STRIPE_WEBHOOK_SECRETS)"
            )
        self._secrets = tuple(secrets)
        self._tolerance = tolerance_seconds
        self._clock = clock

    @property
    def provider(self) -> GatewayName:
        return GatewayName.STRIPE

    def verify(self, headers: Mapping[str, str], body: bytes) -> list[GatewayEvent]:
        self._authenticate(_header(headers, SIGNATURE_HEADER), body)
        return _events(body)

    def _authenticate(self, header: str | None, body: bytes) -> None:
        if not header:
            raise WebhookRejected("missing_signature", "the request has no Stripe-Signature header")
        timestamp = _signature_timestamp(header)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected(
                "bad_signature", "the body is not UTF-8, so no Stripe signature can cover it"
            ) from None
        # The SDK checks the MAC; its tolerance is off (None) because it raises the same error
        # class for a stale timestamp as for a forgery. The clock is checked below, after the MAC,
        # so `stale_timestamp` only ever describes an authentic old (or replayed) delivery.
        # Every configured secret is tried, newest first, so a rotation drops no deliveries; and
        # even after a match, so timing does not tell which one matched.
        results = [self._signed_with(secret, header, body) for secret in self._secrets]
        if not any(results):
            raise WebhookRejected(
                "bad_signature", "no v1 signature matches the body with any configured secret"
            )
        skew = abs(self._clock() - timestamp)
        if skew > self._tolerance:
            raise WebhookRejected(
                "stale_timestamp",
                f"signature timestamp is {skew:.0f}s from now, outside the "
                f"{self._tolerance:.0f}s tolerance",
            )

    @staticmethod
    def _signed_with(secret: str, header: str, body: bytes) -> bool:
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            return False
        return True


def _events(body: bytes) -> list[GatewayEvent]:
    try:
        event = untrusted_json.loads(body)
        if not isinstance(event, dict):
            raise TypeError("the body is not a JSON object")
        event_id, event_type = event["id"], event["type"]
        if not (isinstance(event_id, str) and isinstance(event_type, str)):
            raise TypeError("id and type must be strings")
    except (ValueError, KeyError, TypeError) as error:
        raise WebhookRejected(
            "malformed_payload", f"signed webhook body is not a Stripe event: {error}"
        ) from None
    obj = _dict(event.get("data")).get("object")
    if event_type in _REFUND_EVENTS and isinstance(obj, dict):
        return _refund_events(event_id, event_type, obj)
    if event_type == CHARGE_REFUNDED and isinstance(obj, dict):
        return _charge_refunded_events(event_id, obj)
    if event_type in _DISPUTE_EVENTS and isinstance(obj, dict):
        return _dispute_events(event_id, event_type, obj)
    if event_type != PAYMENT_FAILED and event_type not in _EVENT_STATES:
        # Unknown types are acknowledged and ignored so Stripe does not retry them for days.
        log.info("stripe_webhook_ignored", event_id=event_id, event_type=event_type)
        return []
    intent = _dict(event.get("data")).get("object")
    if not isinstance(intent, dict) or not _str(intent.get("id")):
        raise WebhookRejected(
            "malformed_payload", f"{event_type} event {event_id} carries no PaymentIntent"
        )
    failure: Failure | None = None
    if event_type == PAYMENT_FAILED:
        failure = _payment_failure(intent)
        state = ChargeState.RETRYABLE_FAILURE if failure.retryable else ChargeState.DECLINED
    else:
        state = _EVENT_STATES[event_type]
    metadata = _dict(intent.get("metadata"))
    return [
        GatewayEvent(
            provider=GatewayName.STRIPE,
            event_id=event_id,
            event_type=event_type,
            state=state,
            gateway_reference=_str(intent.get("id")),
            amount_minor=_int(intent.get("amount")),
            currency=_currency(intent.get("currency")),
            failure=failure,
            payment_id=_str(metadata.get("payment_id")),
            workflow_id=_str(metadata.get("workflow_id")),
            amount_captured=_received(intent),
        )
    ]


# Events whose object is a Refund; `charge.refunded` carries the Charge and its refunds instead.
_REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
CHARGE_REFUNDED = "charge.refunded"
_DISPUTE_EVENTS = frozenset(
    {"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"}
)
# Stripe's dispute statuses in paytide's words. An inquiry (warning_*) that closes without a
# chargeback, or a chargeback prevented, leaves the money with the merchant: won.
_DISPUTE_STATES: dict[str, DisputeState] = {
    "warning_needs_response": DisputeState.NEEDS_RESPONSE,
    "needs_response": DisputeState.NEEDS_RESPONSE,
    "warning_under_review": DisputeState.UNDER_REVIEW,
    "under_review": DisputeState.UNDER_REVIEW,
    "won": DisputeState.WON,
    "warning_closed": DisputeState.WON,
    "prevented": DisputeState.WON,
    "lost": DisputeState.LOST,
}


def _refund_notice(refund: Mapping[str, Any]) -> RefundNotice | None:
    status = refund.get("status")
    state = _REFUND_STATES.get(status) if isinstance(status, str) else None
    if state is None:
        return None
    failure = None
    if state is RefundState.FAILED:
        reason = _str(refund.get("failure_reason")) or str(status)
        failure = Failure(code=reason, message=f"Stripe reports the refund {status}: {reason}")
    return RefundNotice(
        state=state,
        refund_reference=_str(refund.get("id")),
        refund_id=_str(_dict(refund.get("metadata")).get("refund_id")),
        amount_minor=_int(refund.get("amount")),
        currency=_currency(refund.get("currency")),
        failure=failure,
    )


def _refund_event(event_id: str, event_type: str, refund: Mapping[str, Any]) -> GatewayEvent | None:
    notice = _refund_notice(refund)
    if notice is None or not notice.refund_reference:
        return None
    return GatewayEvent(
        provider=GatewayName.STRIPE,
        event_id=event_id,
        event_type=event_type,
        # Only a succeeded charge is refunded; the refund's own state is in `refund`.
        state=ChargeState.SUCCEEDED,
        gateway_reference=_str(refund.get("payment_intent")),
        payment_id=_str(_dict(refund.get("metadata")).get("payment_id")),
        refund=notice,
    )


def _refund_events(event_id: str, event_type: str, refund: Mapping[str, Any]) -> list[GatewayEvent]:
    event = _refund_event(event_id, event_type, refund)
    if event is None:
        raise WebhookRejected(
            "malformed_payload", f"{event_type} event {event_id} carries no readable Refund"
        )
    return [event]


def _charge_refunded_events(event_id: str, charge: Mapping[str, Any]) -> list[GatewayEvent]:
    """``charge.refunded`` lists the charge's refunds (when expanded); one event per refund, each
    with its own id, so the refund workflows deduplicate them independently."""
    listed = _dict(charge.get("refunds")).get("data")
    refunds = [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    events = []
    for refund in refunds:
        refund = {"payment_intent": charge.get("payment_intent"), **refund}
        event = _refund_event(f"{event_id}:{refund.get('id')}", CHARGE_REFUNDED, refund)
        if event is not None:
            events.append(event)
    if not events:
        # Newer API versions leave the list out: refund.updated carries each refund instead.
        log.info("stripe_webhook_ignored", event_id=event_id, event_type=CHARGE_REFUNDED)
    return events


def _dispute_events(
    event_id: str, event_type: str, dispute: Mapping[str, Any]
) -> list[GatewayEvent]:
    reference, status = _str(dispute.get("id")), dispute.get("status")
    state = _DISPUTE_STATES.get(status) if isinstance(status, str) else None
    if reference is None or state is None:
        raise WebhookRejected(
            "malformed_payload", f"{event_type} event {event_id} carries no readable Dispute"
        )
    due = _int(_dict(dispute.get("evidence_details")).get("due_by"))
    return [
        GatewayEvent(
            provider=GatewayName.STRIPE,
            event_id=event_id,
            event_type=event_type,
            state=ChargeState.SUCCEEDED,
            # Our payment's Stripe reference is its PaymentIntent.
            gateway_reference=_str(dispute.get("payment_intent")),
            dispute=DisputeNotice(
                dispute_reference=reference,
                state=state,
                amount_minor=_int(dispute.get("amount")),
                currency=_currency(dispute.get("currency")),
                reason=_str(dispute.get("reason")),
                evidence_due_by=datetime.fromtimestamp(due, UTC).isoformat() if due else None,
            ),
        )
    ]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for Starlette's `Headers` and for a plain dict."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
