"""paytide's adapter for Adyen: the `Gateway` protocol over the official SDK's Checkout API (v71),
and verification of Adyen's standard webhooks.

The SDK is synchronous (it sends with ``requests``), so each call runs in a worker thread with the
SDK's own HTTP timeout and an outer deadline. The SDK raises raw ``requests`` exceptions for
transport trouble and ``AdyenAPI*`` exceptions by HTTP status; both become our error tree right
here, where the status and Adyen's error envelope (``status, errorCode, message, errorType,
pspReference``) are known. Every answer about a payment, a refusal included, is a `ChargeOutcome`.

Adyen decides most things asynchronously: a modification (capture, cancel, refund) is only
*received* when the call returns, and its result arrives later as a webhook. Checkout has no way to
read a payment by its pspReference, so `AdyenGateway.retrieve` cannot reconcile (see there).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from Adyen import AdyenClient
from Adyen.exceptions import AdyenAPIResponseError, AdyenError
from Adyen.services.checkout import AdyenCheckoutApi

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

log = get_logger("paytide.gateways.adyen")

CHECKOUT_API_VERSION = "v71"
TEST_CHECKOUT_URL = "https://checkout-test.adyen.com"
# Checkout requires a returnUrl on /payments even for stored cards. paytide hands redirects to the
# merchant's client (NextAction), so the shopper never lands here; `.invalid` can never resolve.
RETURN_URL = "https://paytide.invalid/return"
# Adyen keeps at most 64 characters of an Idempotency-Key (docs: development-resources/
# api-idempotency); longer keys are replaced by their SHA-256, which is exactly 64 hex digits.
MAX_IDEMPOTENCY_KEY_LENGTH = 64
# Adyen limits `reference` on payments and modifications to 80 characters.
MAX_REFERENCE_LENGTH = 80
# Checkout's `metadata`: at most 20 entries, keys up to 20 characters, values up to 80.
_METADATA_ENTRIES, _METADATA_KEY, _METADATA_VALUE = 20, 20, 80
# How many charge answers one adapter instance remembers for `retrieve`.
REMEMBERED_OUTCOMES = 10_000

# errorCode 704, "request already processed or in progress": another request with this
# Idempotency-Key is still running; the same request succeeds once it has finished.
_TRANSIENT_ERROR_CODES = frozenset({"704"})

_ACTION_RESULT_CODES = frozenset(
    {"RedirectShopper", "IdentifyShopper", "ChallengeShopper", "PresentToShopper"}
)
_PENDING_RESULT_CODES = frozenset({"Received", "Pending"})

# Dispute notifications in paytide's words. CHARGEBACK books the funds back to the shopper: lost
# unless a CHARGEBACK_REVERSED follows (the merchant's defence won).
_DISPUTE_STATES: dict[str, DisputeState] = {
    "NOTIFICATION_OF_CHARGEBACK": DisputeState.NEEDS_RESPONSE,
    "CHARGEBACK": DisputeState.LOST,
    "SECOND_CHARGEBACK": DisputeState.LOST,
    "CHARGEBACK_REVERSED": DisputeState.WON,
}

# Our refund reasons, in Adyen's `merchantRefundReason` vocabulary.
_REFUND_REASONS = {
    "requested_by_customer": "CUSTOMER REQUEST",
    "duplicate": "DUPLICATE",
    "fraudulent": "FRAUD",
    "returned": "RETURN",
}

_VERSIONED_PATH = re.compile(r"/v\d+$")


def adyen_idempotency_key(key: str) -> str:
    """The Idempotency-Key header Adyen receives for our ``key``: the key itself when Adyen can
    take it (ASCII, at most 64 characters), otherwise its SHA-256 in hex, stable across retries."""
    if key.isascii() and 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def checkout_base_url(
    environment: str, live_url_prefix: str = "", checkout_url: str | None = None
) -> str:
    """Checkout's base URL, version included. ``checkout_url`` (tests, proxies) may carry a
    version path (``…/v71``); without one, ours is appended."""
    if checkout_url:
        base = checkout_url.rstrip("/")
        return base if _VERSIONED_PATH.search(base) else f"{base}/{CHECKOUT_API_VERSION}"
    if environment == "live":
        # Adyen's live Checkout host is per company: docs "Live endpoints" / SDK client.py.
        return (
            f"https://{live_url_prefix}-checkout-live.adyenpayments.com/checkout/"
            f"{CHECKOUT_API_VERSION}"
        )
    return f"{TEST_CHECKOUT_URL}/{CHECKOUT_API_VERSION}"


def _str(raw: Any) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def _int(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _amount(raw: Any) -> tuple[int | None, str | None]:
    if not isinstance(raw, dict):
        return None, None
    return _int(raw.get("value")), _str(raw.get("currency"))


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _header(headers: Any, name: str) -> str | None:
    """Case-insensitive lookup over any mapping of headers (requests, Starlette, a dict)."""
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return str(value)
    return None


def _retry_after(headers: Any) -> float | None:
    return retry_after_seconds(_header(headers, "retry-after"))


def _refusal(answer: Mapping[str, Any]) -> Failure:
    code = _str(answer.get("refusalReasonCode"))
    reason = _str(answer.get("refusalReason")) or "refused by Adyen"
    message = f"{reason} (refusalReasonCode {code})" if code else reason
    return Failure(code=f"refused_{code}" if code else "refused", message=message)


def _charge_outcome(answer: Mapping[str, Any], capture: CaptureMethod) -> ChargeOutcome:
    """One /payments answer in paytide's words; ``resultCode`` decides the state."""
    result_code = answer.get("resultCode")
    psp = _str(answer.get("pspReference"))
    amount, currency = _amount(answer.get("amount"))

    def outcome(
        state: ChargeState, failure: Failure | None = None, next_action: NextAction | None = None
    ) -> ChargeOutcome:
        return ChargeOutcome(
            state=state,
            gateway_reference=psp,
            amount_minor=amount,
            currency=currency,
            failure=failure,
            next_action=next_action,
        )

    if result_code == "Authorised":
        manual = capture is CaptureMethod.MANUAL
        return outcome(ChargeState.AUTHORIZED if manual else ChargeState.SUCCEEDED)
    if result_code == "Refused":
        return outcome(ChargeState.DECLINED, failure=_refusal(answer))
    if result_code in _PENDING_RESULT_CODES:
        return outcome(ChargeState.PENDING)
    if result_code in _ACTION_RESULT_CODES:
        action = answer.get("action")
        action = action if isinstance(action, dict) else {}
        next_action = NextAction(
            type=_str(action.get("type")) or str(result_code), redirect_url=_str(action.get("url"))
        )
        return outcome(ChargeState.REQUIRES_ACTION, next_action=next_action)
    if result_code == "Cancelled":
        return outcome(ChargeState.CANCELED)
    if result_code == "Error":
        # Adyen could not process this attempt (reason in refusalReason); a new attempt under a
        # new key may work.
        reason = _str(answer.get("refusalReason")) or "Adyen reported a processing error"
        return outcome(
            ChargeState.RETRYABLE_FAILURE,
            failure=Failure(code="adyen_error", message=reason, retryable=True),
        )
    # A resultCode this adapter does not know (PartiallyAuthorised needs a flag we never send).
    # Money may be reserved, so never fail the payment on it: follow it like a pending charge,
    # and let the webhook or an operator decide.
    log.warning("adyen_result_code_unknown", result_code=result_code, psp_reference=psp)
    return outcome(ChargeState.PENDING)


def _api_error(operation: str, error: AdyenAPIResponseError) -> GatewayError:
    """Adyen answered with a non-2xx status: decide retryability from status and envelope."""
    status = error.status_code if isinstance(error.status_code, int) else 0
    envelope = error.message if isinstance(error.message, dict) else {}
    code = str(envelope.get("errorCode") or error.error_code or "unknown")
    text = str(envelope.get("message") or error.raw_response or "")[:200]
    detail = f"Adyen answered {status} errorCode {code}"
    if envelope.get("errorType"):
        detail += f" ({envelope['errorType']})"
    detail += f" on {operation}: {text}"
    psp = envelope.get("pspReference") or error.psp
    if psp:
        detail += f" [pspReference {psp}]"
    transient = (_header(error.headers, "transient-error") or "").lower() == "true"
    if status == 429:
        return GatewayRateLimited(detail, retry_after=_retry_after(error.headers))
    if status == 503:
        # Service unavailable is answered before the payment is processed.
        return GatewayRefused(detail, retry_after=_retry_after(error.headers))
    if status >= 500 or status in (0, 408):
        return GatewayUnavailable(detail, retry_after=_retry_after(error.headers))
    if transient or (status in (409, 422) and code in _TRANSIENT_ERROR_CODES):
        return GatewayUnavailable(detail)
    # 400 validation, 401 bad API key, 403 wrong merchant account or role, 404 wrong URL, 422
    # a request Adyen will never accept: our bug or our configuration, not retryable.
    return GatewayRequestError(detail)


def _metadata(request: ChargeRequest) -> dict[str, str]:
    """Our ids first, then the merchant's, within Checkout's metadata limits (entries that do
    not fit are left out rather than having Adyen refuse the payment)."""
    ours = {
        "payment_id": request.payment_id,
        "workflow_id": request.workflow_id,
        "merchant_id": request.merchant_id,
    }
    metadata: dict[str, str] = {}
    for key, value in [*ours.items(), *request.metadata.items()]:
        fits = len(key) <= _METADATA_KEY and len(value) <= _METADATA_VALUE
        if fits and key not in metadata and len(metadata) < _METADATA_ENTRIES:
            metadata[key] = value
    return metadata


def _reference(value: str) -> str | None:
    return value if len(value) <= MAX_REFERENCE_LENGTH else None


class AdyenGateway:
    """Adyen Checkout through the official SDK; one SDK client per instance, no globals.

    The payment method we are given is a token of a card the shopper stored with Adyen: it goes
    out as ``{"type": "scheme", "storedPaymentMethodId": token}`` with ``shopperReference`` =
    the customer and ``shopperInteraction: Ecommerce`` / ``recurringProcessingModel: CardOnFile``
    (the shopper is present, the card is on file). Card data never passes through paytide.
    """

    def __init__(
        self,
        api_key: str,
        merchant_account: str,
        *,
        environment: str = "test",
        live_url_prefix: str = "",
        checkout_url: str | None = None,
        timeout_seconds: float = 20.0,
    ) -> None:
        if not api_key or not merchant_account:
            raise ValueError("AdyenGateway needs an API key and a merchant account")
        if environment not in ("test", "live"):
            raise ValueError(f"Adyen environment must be 'test' or 'live', not {environment!r}")
        if environment == "live" and not (live_url_prefix or checkout_url):
            raise ValueError(
                "Adyen's live environment needs the company's live URL prefix "
                "(PAYTIDE_ADYEN_LIVE_URL_PREFIX, from Customer Area > Developers > API URLs)"
            )
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        client = AdyenClient(
            xapikey=api_key,
            platform=environment,
            live_endpoint_prefix=live_url_prefix or None,
            # Handed to `requests` as its connect and read timeout (SDK httpclient.py).
            http_timeout=timeout_seconds,
            application_name="paytide",
        )
        checkout = AdyenCheckoutApi(client=client)
        # The SDK has no host option: each Checkout service builds URLs from its `baseUrl`.
        # Note the SDK still rewrites "-live"/"-test" inside URLs to match `platform`.
        self.base_url = checkout_base_url(environment, live_url_prefix, checkout_url)
        checkout.payments_api.baseUrl = self.base_url
        checkout.modifications_api.baseUrl = self.base_url
        self._payments_api = checkout.payments_api
        self._modifications_api = checkout.modifications_api
        self._merchant_account = merchant_account
        self._timeout = timeout_seconds
        self._remembered: OrderedDict[str, ChargeOutcome] = OrderedDict()

    @property
    def name(self) -> GatewayName:
        return GatewayName.ADYEN

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        body: dict[str, Any] = {
            "merchantAccount": self._merchant_account,
            "reference": request.payment_id,
            "amount": {"value": request.amount_minor, "currency": request.currency},
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": request.payment_method},
            "shopperReference": request.customer_id,
            "shopperInteraction": "Ecommerce",
            "recurringProcessingModel": "CardOnFile",
            "returnUrl": RETURN_URL,
            "metadata": _metadata(request),
        }
        if request.capture is CaptureMethod.MANUAL:
            # Per-payment manual capture; the account's default capture delay does not apply.
            body["additionalData"] = {"manualCapture": "true"}
        else:
            # Capture at once, whatever delay the merchant account is configured with.
            body["captureDelayHours"] = 0
        key = adyen_idempotency_key(request.idempotency_key)
        answer = await self._send(
            "POST /payments", lambda: self._payments_api.payments(body, idempotency_key=key)
        )
        if not isinstance(answer.get("resultCode"), str):
            # Garbled in transit or by a proxy; the request is idempotent, so asking again is safe.
            raise GatewayUnavailable("Adyen answered /payments without a resultCode")
        outcome = _charge_outcome(answer, request.capture)
        self._remember(outcome, request.idempotency_key)
        return outcome

    async def retrieve(self, lookup: ChargeLookup) -> ChargeOutcome:
        """What this process last heard from Adyen about the charge, or PENDING.

        Adyen Checkout has no endpoint that returns a payment by pspReference or by idempotency
        key: a payment's fate is told only by its webhook (or the Customer Area and reports).
        So this adapter cannot reconcile. It answers from the /payments answers it has seen
        itself (bounded, per process: a restarted or different worker knows none) and otherwise
        says PENDING, which keeps the workflow waiting for the webhook and, past its maximum
        wait, escalates to an operator. It never says NOT_FOUND: nothing can prove that Adyen
        has no payment for a key, and NOT_FOUND would let the workflow charge again.
        """
        if not (lookup.gateway_reference or lookup.idempotency_key):
            raise GatewayRequestError(
                "a charge lookup needs a gateway reference or idempotency key"
            )
        for memory_key in (
            f"psp:{lookup.gateway_reference}" if lookup.gateway_reference else None,
            f"key:{lookup.idempotency_key}" if lookup.idempotency_key else None,
        ):
            if memory_key and memory_key in self._remembered:
                return self._remembered[memory_key]
        return ChargeOutcome(state=ChargeState.PENDING, gateway_reference=lookup.gateway_reference)

    async def cancel(self, request: CancelRequest) -> ChargeOutcome:
        """Ask Adyen to cancel an authorisation. Adyen only *receives* the request here; the
        CANCELLATION webhook says whether it worked, so the outcome stays PENDING."""
        body: dict[str, Any] = {"merchantAccount": self._merchant_account}
        if reference := _reference(request.idempotency_key):
            body["reference"] = reference
        psp = request.gateway_reference
        key = adyen_idempotency_key(request.idempotency_key)
        await self._modification(
            f"POST /payments/{psp}/cancels",
            lambda: self._modifications_api.cancel_authorised_payment_by_psp_reference(
                body, _segment(psp), idempotency_key=key
            ),
        )
        return ChargeOutcome(state=ChargeState.PENDING, gateway_reference=psp)

    async def capture(self, request: CaptureRequest) -> ChargeOutcome:
        """Capture a manual-capture authorisation. Received is not captured: the outcome stays
        PENDING under the payment's pspReference until the CAPTURE webhook."""
        body: dict[str, Any] = {
            "merchantAccount": self._merchant_account,
            "amount": {"value": request.amount_minor, "currency": request.currency},
        }
        if reference := _reference(request.idempotency_key):
            body["reference"] = reference
        psp = request.gateway_reference
        key = adyen_idempotency_key(request.idempotency_key)
        answer = await self._modification(
            f"POST /payments/{psp}/captures",
            lambda: self._modifications_api.capture_authorised_payment(
                body, _segment(psp), idempotency_key=key
            ),
        )
        amount, currency = _amount(answer.get("amount"))
        return ChargeOutcome(
            state=ChargeState.PENDING, gateway_reference=psp, amount_minor=amount, currency=currency
        )

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        """Refund (part of) a captured payment; PENDING under the refund's own pspReference
        until the REFUND webhook."""
        body: dict[str, Any] = {
            "merchantAccount": self._merchant_account,
            "amount": {"value": request.amount_minor, "currency": request.currency},
            # Our refund id comes back as the REFUND notification's merchantReference.
            "reference": request.refund_id
            or _reference(request.idempotency_key)
            or request.payment_id,
        }
        if request.reason:
            body["merchantRefundReason"] = _REFUND_REASONS.get(request.reason, "OTHER")
        psp = request.gateway_reference
        key = adyen_idempotency_key(request.idempotency_key)
        answer = await self._modification(
            f"POST /payments/{psp}/refunds",
            lambda: self._modifications_api.refund_captured_payment(
                body, _segment(psp), idempotency_key=key
            ),
        )
        return RefundOutcome(state=RefundState.PENDING, refund_reference=answer["pspReference"])

    async def retrieve_refund(self, lookup: RefundLookup) -> RefundOutcome:
        """Adyen offers no lookup of a modification: only the REFUND webhook settles it."""
        return RefundOutcome(state=RefundState.PENDING, refund_reference=lookup.refund_reference)

    async def _modification(self, operation: str, call: Callable[[], Any]) -> dict[str, Any]:
        answer = await self._send(operation, call)
        if answer.get("status") != "received" or not _str(answer.get("pspReference")):
            raise GatewayUnavailable(
                f"Adyen answered {operation} without status 'received' and a pspReference"
            )
        return answer

    async def _send(self, operation: str, call: Callable[[], Any]) -> dict[str, Any]:
        """Run one SDK call in a thread; return Adyen's JSON answer or raise our error."""
        try:
            # The SDK's timeout bounds connect and each read; this bounds the whole call (a
            # trickling answer). The abandoned thread ends at the SDK's own timeout.
            async with asyncio.timeout(self._timeout * 2):
                result = await asyncio.to_thread(call)
        except TimeoutError:
            raise GatewayUnavailable(
                f"Adyen did not finish {operation} within {self._timeout * 2:g}s"
            ) from None
        except AdyenAPIResponseError as error:
            raise _api_error(operation, error) from error
        except AdyenError as error:
            # Raised before sending: no credentials, or no live URL prefix.
            raise GatewayRequestError(f"Adyen SDK refused {operation}: {error.message}") from error
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as error:
            raise GatewayRequestError(f"Adyen Checkout URL is unusable: {error}") from error
        except requests.exceptions.ConnectionError as error:
            # A reset mid-answer is a ConnectionError too; only a connection that never opened
            # proves Adyen saw nothing.
            never_opened = isinstance(error, requests.exceptions.ConnectTimeout) or (
                "NewConnectionError" in repr(error) or "Connection refused" in str(error)
            )
            if never_opened:
                raise GatewayRefused(
                    f"Adyen refused the connection on {operation}: {type(error).__name__}"
                ) from error
            raise GatewayUnavailable(
                f"Adyen unreachable on {operation}: {type(error).__name__}"
            ) from error
        except requests.RequestException as error:
            # Timeouts included: the request may have reached Adyen, and only a retry with the
            # same idempotency key can tell, so this is retryable.
            raise GatewayUnavailable(
                f"Adyen unreachable on {operation}: {type(error).__name__}"
            ) from error
        answer = getattr(result, "message", None)
        if not isinstance(answer, dict):
            raise GatewayUnavailable(f"Adyen answered {operation} with a body that is not JSON")
        return answer

    def _remember(self, outcome: ChargeOutcome, idempotency_key: str) -> None:
        keys = [f"key:{idempotency_key}"]
        if outcome.gateway_reference:
            keys.append(f"psp:{outcome.gateway_reference}")
        for key in keys:
            self._remembered[key] = outcome
            self._remembered.move_to_end(key)
        while len(self._remembered) > REMEMBERED_OUTCOMES:
            self._remembered.popitem(last=False)


# ---- Standard webhooks ---------------------------------------------------------------------

# The NotificationRequestItem fields Adyen signs, in order (docs: "Verify HMAC signatures";
# SDK util.generate_notification_sig). A missing field signs as the empty string.
_SIGNED_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)


def _signed_value(item: Mapping[str, Any], name: str) -> str:
    if name in ("value", "currency"):
        amount = item.get("amount")
        raw = amount.get(name) if isinstance(amount, dict) else None
    else:
        raw = item.get(name)
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    raise WebhookRejected("malformed_payload", f"notification field {name} is not a string")


def notification_signature(item: Mapping[str, Any], key: bytes) -> str:
    """Base64 HMAC-SHA256 of one NotificationRequestItem's signed fields, joined by ':'."""
    payload = ":".join(_signed_value(item, name) for name in _SIGNED_FIELDS)
    return base64.b64encode(
        hmac.new(key, payload.encode("utf-8"), hashlib.sha256).digest()
    ).decode()


def _notification_items(body: bytes) -> list[dict[str, Any]]:
    try:
        notification = untrusted_json.loads(body)
        wrappers = notification["notificationItems"]
        if not isinstance(wrappers, list) or not wrappers:
            raise TypeError("notificationItems must be a non-empty list")
        items = [wrapper["NotificationRequestItem"] for wrapper in wrappers]
        if not all(isinstance(item, dict) for item in items):
            raise TypeError("each NotificationRequestItem must be an object")
    except (ValueError, KeyError, TypeError) as error:
        raise WebhookRejected(
            "malformed_payload", f"body is not an Adyen standard notification: {error}"
        ) from None
    return items


class AdyenWebhookVerifier:
    """Verifies an Adyen standard webhook and turns its items into `GatewayEvent`s.

    Basic auth is checked first, then the HMAC of every item against every configured key (so a
    rotated-out key keeps working during rotation). One bad item rejects the whole request: Adyen
    then retries the batch, and nothing from a forged batch is ever acted on. The endpoint must
    answer an accepted batch with the body ``[accepted]``, or Adyen keeps retrying it.
    """

    def __init__(self, hmac_keys: Sequence[str], username: str, password: str) -> None:
        if not hmac_keys:
            raise ValueError("AdyenWebhookVerifier needs at least one HMAC key")
        if not username or not password:
            raise ValueError("AdyenWebhookVerifier needs the webhook's Basic auth credentials")
        try:
            self._keys = tuple(binascii.unhexlify(key.strip()) for key in hmac_keys)
        except (binascii.Error, ValueError):
            raise ValueError(
                "Adyen HMAC keys are hexadecimal (Customer Area > Developers > Webhooks)"
            ) from None
        self._username = username.encode("utf-8")
        self._password = password.encode("utf-8")

    @property
    def provider(self) -> GatewayName:
        return GatewayName.ADYEN

    def verify(self, headers: Mapping[str, str], body: bytes) -> list[GatewayEvent]:
        self._check_auth(_header(headers, "authorization"))
        items = _notification_items(body)
        for index, item in enumerate(items):
            self._check_signature(index, item)
        return [event for item in items if (event := _event(item)) is not None]

    def _check_auth(self, header: str | None) -> None:
        if not header:
            raise WebhookRejected("missing_auth", "the request carries no Authorization header")
        scheme, _, encoded = header.partition(" ")
        try:
            if scheme.lower() != "basic":
                raise ValueError("not Basic")
            username, sep, password = base64.b64decode(encoded, validate=True).partition(b":")
            if not sep:
                raise ValueError("no ':' between username and password")
        except (ValueError, binascii.Error):
            raise WebhookRejected("bad_auth", "Authorization is not valid Basic auth") from None
        # Both comparisons always run, so timing does not tell which part was wrong.
        user_ok = hmac.compare_digest(username, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        if not (user_ok & password_ok):
            raise WebhookRejected("bad_auth", "Basic auth credentials do not match")

    def _check_signature(self, index: int, item: Mapping[str, Any]) -> None:
        additional = item.get("additionalData")
        given = additional.get("hmacSignature") if isinstance(additional, dict) else None
        if not isinstance(given, str) or not given:
            raise WebhookRejected(
                "missing_signature", f"notification item {index} carries no hmacSignature"
            )
        matches = [
            hmac.compare_digest(notification_signature(item, key), given) for key in self._keys
        ]
        if not any(matches):
            raise WebhookRejected(
                "bad_signature",
                f"notification item {index} is not signed by any configured HMAC key",
            )


def _event(item: Mapping[str, Any]) -> GatewayEvent | None:
    event_code = _str(item.get("eventCode"))
    psp = _str(item.get("pspReference"))
    success = item.get("success") == "true"
    if event_code is None or psp is None:
        raise WebhookRejected("malformed_payload", "notification item lacks eventCode/pspReference")
    # The spec's dedupe key: Adyen re-delivers the same item until it is accepted.
    event_id = f"{psp}:{event_code}:{'true' if success else 'false'}"
    payment_id = _str(item.get("merchantReference"))  # we send reference = payment_id
    if event_code == "AUTHORISATION":
        amount, currency = _amount(item.get("amount"))
        # success=true means authorised, which is all Adyen says here; with automatic capture
        # the workflow reads an authorization as success (capture follows by itself).
        failure = (
            None
            if success
            else Failure(
                code="refused",
                message=_str(item.get("reason")) or "Adyen refused the authorisation",
            )
        )
        return GatewayEvent(
            provider=GatewayName.ADYEN,
            event_id=event_id,
            event_type=event_code,
            state=ChargeState.AUTHORIZED if success else ChargeState.DECLINED,
            gateway_reference=psp,
            amount_minor=amount,
            currency=currency,
            failure=failure,
            payment_id=payment_id,
        )
    if event_code == "CANCELLATION":
        if not success:
            # The cancel did not happen; the payment's state is unchanged.
            log.info("adyen_cancellation_failed", psp_reference=psp, payment_id=payment_id)
            return None
        # A modification's pspReference is its own; originalReference is the payment's. No
        # amount: a cancellation's amount says nothing about the payment's.
        return GatewayEvent(
            provider=GatewayName.ADYEN,
            event_id=event_id,
            event_type=event_code,
            state=ChargeState.CANCELED,
            gateway_reference=_str(item.get("originalReference")) or psp,
            payment_id=payment_id,
        )
    if event_code in ("CAPTURE", "CAPTURE_FAILED"):
        # A capture is a modification: its psp is its own, originalReference the payment's, and
        # its amount what was captured (less than the authorisation after a partial capture).
        amount, currency = _amount(item.get("amount"))
        captured = event_code == "CAPTURE" and success
        return GatewayEvent(
            provider=GatewayName.ADYEN,
            event_id=event_id,
            event_type=event_code,
            state=ChargeState.SUCCEEDED if captured else ChargeState.DECLINED,
            gateway_reference=_str(item.get("originalReference")) or psp,
            amount_minor=amount,
            currency=currency,
            failure=None
            if captured
            else Failure(
                code="capture_failed",
                message=_str(item.get("reason")) or "Adyen could not capture the payment",
            ),
            payment_id=payment_id,
            amount_captured=amount if captured else None,
        )
    if event_code in ("REFUND", "REFUND_FAILED"):
        return _refund_event(item, event_id, event_code, psp, success)
    if event_code in _DISPUTE_STATES:
        return _dispute_event(item, event_id, event_code, psp)
    log.warning("adyen_webhook_ignored", event_code=event_code, psp_reference=psp)
    return None


def _refund_event(
    item: Mapping[str, Any], event_id: str, event_code: str, psp: str, success: bool
) -> GatewayEvent:
    """A refund modification's outcome. Its pspReference is the refund's own, originalReference
    the payment's, and merchantReference the refund id we sent."""
    amount, currency = _amount(item.get("amount"))
    refunded = event_code == "REFUND" and success
    failure = (
        None
        if refunded
        else Failure(
            code="refund_failed" if event_code == "REFUND_FAILED" else "refund_refused",
            message=_str(item.get("reason")) or "Adyen could not refund the payment",
        )
    )
    return GatewayEvent(
        provider=GatewayName.ADYEN,
        event_id=event_id,
        event_type=event_code,
        state=ChargeState.SUCCEEDED,
        gateway_reference=_str(item.get("originalReference")),
        refund=RefundNotice(
            state=RefundState.SUCCEEDED if refunded else RefundState.FAILED,
            refund_reference=psp,
            refund_id=_str(item.get("merchantReference")),
            amount_minor=amount,
            currency=currency,
            failure=failure,
        ),
    )


def _dispute_event(
    item: Mapping[str, Any], event_id: str, event_code: str, psp: str
) -> GatewayEvent:
    """A dispute notification; every one of a dispute's notifications names the disputed
    payment in originalReference, which is also the dispute's key (Adyen gives a payment at most
    one open dispute)."""
    original = _str(item.get("originalReference")) or psp
    amount, currency = _amount(item.get("amount"))
    additional = item.get("additionalData")
    additional = additional if isinstance(additional, dict) else {}
    due = _str(additional.get("defensePeriodEndsAt"))
    return GatewayEvent(
        provider=GatewayName.ADYEN,
        event_id=event_id,
        event_type=event_code,
        state=ChargeState.SUCCEEDED,
        gateway_reference=original,
        dispute=DisputeNotice(
            dispute_reference=original,
            state=_DISPUTE_STATES[event_code],
            amount_minor=amount,
            currency=currency,
            reason=_str(item.get("reason")) or _str(additional.get("chargebackReasonCode")),
            evidence_due_by=due,
        ),
    )
