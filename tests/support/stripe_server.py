"""A Stripe-shaped API server for tests: the few endpoints `StripeGateway` uses, over real HTTP.

It speaks Stripe's wire format as the official SDK sends and reads it: form-encoded request bodies
(``metadata[key]=value``, ``expand[0]=field``), JSON objects with Stripe's shapes, the error
envelope ``{"error": {"type", "code", "decline_code", "message", "param"}}`` with Stripe's status
codes, ``Idempotency-Key`` semantics (a saved answer is replayed with ``Idempotent-Replayed: true``;
the same key with other parameters is a 400 ``idempotency_error``) and ``Stripe-Signature``
webhooks (``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``).

Behaviour is scripted by the PaymentMethod token, named after Stripe's own test tokens:

==============================  =============================================================
``pm_card_visa``                succeeds at once (``requires_capture`` with capture_method=manual)
``pm_card_async``               ``processing``; settles later (`FakeStripe.settle`, or by itself
                                after ``settle_after`` seconds), then a webhook says so
``pm_card_chargeDeclined``      402 ``card_error`` / ``card_declined`` / ``generic_decline``
``pm_card_processingError``     402 ``card_error`` / ``processing_error``
``pm_card_threeDSecure2Required``  ``requires_action`` with a ``redirect_to_url`` next action
``pm_card_flaky``               503 for the first ``flaky_failures`` requests per key, then visa
``pm_card_unavailable``         always 503, before anything is created
``pm_card_rateLimited``         always 429 with ``Retry-After``
``pm_card_lockTimeout``         always 429 with code ``lock_timeout``
==============================  =============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JSON = dict[str, Any]

VISA = "pm_card_visa"
ASYNC = "pm_card_async"
DECLINED = "pm_card_chargeDeclined"
PROCESSING_ERROR = "pm_card_processingError"
THREE_DS = "pm_card_threeDSecure2Required"
FLAKY = "pm_card_flaky"
UNAVAILABLE = "pm_card_unavailable"
RATE_LIMITED = "pm_card_rateLimited"
LOCK_TIMEOUT = "pm_card_lockTimeout"
KNOWN_TOKENS = frozenset(
    {
        VISA,
        ASYNC,
        DECLINED,
        PROCESSING_ERROR,
        THREE_DS,
        FLAKY,
        UNAVAILABLE,
        RATE_LIMITED,
        LOCK_TIMEOUT,
    }
)
CANCELABLE = frozenset(
    {"requires_payment_method", "requires_capture", "requires_confirmation", "requires_action"}
)
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
API_VERSION = "2025-09-30.clover"


@dataclass(frozen=True, kw_only=True)
class StripeServerConfig:
    api_key: str = "sk_test_paytide_fake"
    webhook_secret: str = "whsec_paytide_fake"
    # Where settled PaymentIntents' events are POSTed; None keeps them to `settle`'s return value.
    webhook_url: str | None = None
    # ``pm_card_async`` PaymentIntents settle by themselves this many seconds after creation.
    settle_after: float | None = None
    delivery_attempts: int = 4
    delivery_backoff: float = 0.1
    flaky_failures: int = 2
    retry_after_seconds: int = 1
    # A Stripe outage: every API request answers 503 before anything is created.
    outage: bool = False


class StripeApiError(Exception):
    """Answered as Stripe's error envelope."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        extra: JSON | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {
            "error": {
                "type": type_,
                "code": code,
                "decline_code": decline_code,
                "message": message,
                "param": param,
                **(extra or {}),
            }
        }
        self.headers = headers or {}


@dataclass(frozen=True)
class _Saved:
    """An idempotent answer: what it was for, and what was answered."""

    endpoint: str
    params: JSON
    status: int
    body: bytes


def _object_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def decode_form(body: bytes | str) -> JSON:
    """Stripe's form encoding as nested dicts: ``a[b][c]=v`` -> ``{"a": {"b": {"c": v}}}``."""
    text = body.decode() if isinstance(body, bytes) else body
    result: JSON = {}
    for raw_key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        head, _, rest = raw_key.partition("[")
        path = [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def _expanded(params: JSON) -> set[str]:
    raw = params.get("expand")
    if isinstance(raw, dict):
        return {str(value) for value in raw.values()}
    return {str(raw)} if raw else set()


def _int_param(params: JSON, name: str, *, required: bool) -> int | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Missing required param: {name}.",
                code="parameter_missing",
                param=name,
            )
        return None
    if not str(raw).isdigit() or int(raw) <= 0:
        raise StripeApiError(
            400,
            "invalid_request_error",
            f"Invalid positive integer: {name}",
            code="parameter_invalid_integer",
            param=name,
        )
    return int(raw)


def sign(secret: str, payload: bytes, timestamp: int) -> str:
    """The ``Stripe-Signature`` header Stripe sends: HMAC-SHA256 over ``"<t>.<payload>"``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class FakeStripe:
    """The server's state and its Starlette ``app``; serve it with `tests.support.serve.serve`."""

    def __init__(self, config: StripeServerConfig | None = None) -> None:
        self.config = config or StripeServerConfig()
        self.payment_intents: dict[str, JSON] = {}
        self.charges: dict[str, JSON] = {}
        self.refunds: dict[str, JSON] = {}
        # PaymentIntents created per Idempotency-Key ("" for requests without one).
        self.created_per_key: Counter[str] = Counter()
        # Every POST as (path, Idempotency-Key header or None), in arrival order.
        self.posts: list[tuple[str, str | None]] = []
        self.requests = 0
        self.replays = 0
        self.events: list[JSON] = []
        self.events_delivered = 0
        self.delivery_failures = 0
        self._requests_per_key: Counter[str] = Counter()
        self._saved: dict[str, _Saved] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/payment_intents", self._create_intent, methods=["POST"]),
                Route("/v1/payment_intents/search", self._search_intents, methods=["GET"]),
                Route("/v1/payment_intents/{intent}", self._get_intent, methods=["GET"]),
                Route("/v1/payment_intents/{intent}/cancel", self._cancel_intent, methods=["POST"]),
                Route(
                    "/v1/payment_intents/{intent}/capture", self._capture_intent, methods=["POST"]
                ),
                Route("/v1/refunds", self._create_refund, methods=["POST"]),
                Route("/v1/refunds/{refund}", self._get_refund, methods=["GET"]),
                Route("/_test/stats", self._stats, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    # ---- lifecycle ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5) as http:
            self._http = http
            try:
                yield
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._http = None

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the HTTP plumbing shared by every endpoint ------------------------------------------

    def _authenticate(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {self.config.api_key}":
            raise StripeApiError(
                401, "invalid_request_error", "Invalid API Key provided: sk_****", headers={}
            )

    async def _answer(
        self, request: Request, handler: Callable[[Request, JSON], tuple[int, JSON]]
    ) -> Response:
        """Authenticate, apply idempotency to POSTs, run ``handler``, answer Stripe's way."""
        self.requests += 1
        headers = {"Request-Id": _object_id("req")}
        try:
            self._authenticate(request)
            if request.method == "GET":
                status, body = handler(request, decode_form(request.url.query))
                return JSONResponse(body, status, headers=headers)
            params = decode_form(await request.body())
            key = request.headers.get("idempotency-key")
            self.posts.append((request.url.path, key))
            self._before_execution(request.url.path, params, key)
            if key is not None and key in self._saved:
                return self._replay(self._saved[key], request.url.path, params, headers)
            try:
                status, body = handler(request, params)
            except StripeApiError as error:
                status, body = error.status, error.body
            encoded = json.dumps(body).encode()
            if key is not None:
                # Saved once execution began, errors included, as Stripe does.
                self._saved[key] = _Saved(request.url.path, params, status, encoded)
            return Response(encoded, status, headers=headers, media_type="application/json")
        except StripeApiError as error:
            return JSONResponse(error.body, error.status, headers={**headers, **error.headers})

    def _replay(
        self, saved: _Saved, endpoint: str, params: JSON, headers: dict[str, str]
    ) -> Response:
        if saved.endpoint != endpoint or saved.params != params:
            raise StripeApiError(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they "
                "were first used with.",
            )
        self.replays += 1
        return Response(
            saved.body,
            saved.status,
            headers={**headers, "Idempotent-Replayed": "true"},
            media_type="application/json",
        )

    def _before_execution(self, path: str, params: JSON, key: str | None) -> None:
        """Scripted trouble that happens before Stripe runs the endpoint: nothing is saved."""
        if self.config.outage:
            raise StripeApiError(503, "api_error", "Stripe is having an outage.")
        if path != "/v1/payment_intents":
            return
        token = params.get("payment_method")
        self._requests_per_key[key or ""] += 1
        if token == UNAVAILABLE or (
            token == FLAKY and self._requests_per_key[key or ""] <= self.config.flaky_failures
        ):
            raise StripeApiError(503, "api_error", "The service is temporarily unavailable.")
        if token in (RATE_LIMITED, LOCK_TIMEOUT):
            lock = token == LOCK_TIMEOUT
            raise StripeApiError(
                429,
                "invalid_request_error",
                "This object cannot be accessed right now because another API request or Stripe "
                "process is currently accessing it."
                if lock
                else "Too many requests hit the API too quickly.",
                code="lock_timeout" if lock else "rate_limit",
                headers={"Retry-After": str(self.config.retry_after_seconds)},
            )

    def _intent(self, intent_id: str) -> JSON:
        try:
            return self.payment_intents[intent_id]
        except KeyError:
            raise StripeApiError(
                404,
                "invalid_request_error",
                f"No such payment_intent: '{intent_id}'",
                code="resource_missing",
                param="intent",
            ) from None

    # ---- endpoints ----------------------------------------------------------------------------

    async def _create_intent(self, request: Request) -> Response:
        return await self._answer(request, self._do_create_intent)

    def _do_create_intent(self, request: Request, params: JSON) -> tuple[int, JSON]:
        amount = _int_param(params, "amount", required=True)
        assert amount is not None
        currency = str(params.get("currency", ""))
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Invalid currency: {currency}. Stripe currencies are three lower-case letters.",
                code="parameter_invalid_string",
                param="currency",
            )
        token = params.get("payment_method")
        if token not in KNOWN_TOKENS:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"No such PaymentMethod: '{token}'",
                code="resource_missing",
                param="payment_method",
            )
        if params.get("confirm") != "true":
            raise StripeApiError(
                400,
                "invalid_request_error",
                "This test server only creates PaymentIntents with confirm=true.",
                param="confirm",
            )
        capture_method = str(params.get("capture_method", "automatic"))
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Invalid capture_method: {capture_method}",
                param="capture_method",
            )
        metadata = params.get("metadata") or {}
        intent_id = _object_id("pi")
        intent: JSON = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": capture_method,
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(8)}",
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": currency,
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "next_action": None,
            "payment_method": token,
            "payment_method_types": ["card"],
            "status": "requires_confirmation",
        }
        self.payment_intents[intent_id] = intent
        self.created_per_key[request.headers.get("idempotency-key") or ""] += 1
        if token in (DECLINED, PROCESSING_ERROR):
            return self._fail(intent, token)
        if token == ASYNC:
            intent["status"] = "processing"
            self._charge(intent, "pending")
            if self.config.settle_after is not None:
                self._spawn(self._settle_later(intent_id, self.config.settle_after))
        elif token == THREE_DS:
            intent["status"] = "requires_action"
            base = str(request.base_url).rstrip("/")
            intent["next_action"] = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": f"{base}/3d_secure_2/authenticate/{intent_id}",
                    "return_url": None,
                },
            }
        else:
            self._complete(intent)
        return 200, copy.deepcopy(intent)

    def _fail(self, intent: JSON, token: str) -> tuple[int, JSON]:
        charge = self._charge(intent, "failed")
        if token == DECLINED:
            code, decline_code, message = (
                "card_declined",
                "generic_decline",
                "Your card was declined.",
            )
        else:
            code, decline_code, message = (
                "processing_error",
                None,
                "An error occurred while processing your card. Try again in a little bit.",
            )
        error: JSON = {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "param": None,
            "charge": charge["id"],
        }
        charge["failure_code"], charge["failure_message"] = code, message
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = error
        self._emit("payment_intent.payment_failed", intent)
        raise StripeApiError(
            402,
            "card_error",
            message,
            code=code,
            decline_code=decline_code,
            extra={"charge": charge["id"], "payment_intent": copy.deepcopy(intent)},
        )

    def _charge(self, intent: JSON, status: str) -> JSON:
        charge: JSON = {
            "id": _object_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "currency": intent["currency"],
            "status": status,
            "paid": status == "succeeded",
            "captured": False,
            "failure_code": None,
            "failure_message": None,
            "payment_intent": intent["id"],
        }
        self.charges[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        return charge

    def _complete(self, intent: JSON) -> str:
        """The card is authorized: capture now, or hold for a manual capture. Returns the event."""
        charge_id = intent["latest_charge"]
        charge = self.charges[charge_id] if charge_id else self._charge(intent, "pending")
        charge["status"], charge["paid"] = "succeeded", True
        intent["next_action"] = None
        if intent["capture_method"] == "manual":
            intent["status"] = "requires_capture"
            intent["amount_capturable"] = intent["amount"]
            return "payment_intent.amount_capturable_updated"
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        charge["captured"] = True
        return "payment_intent.succeeded"

    async def _get_intent(self, request: Request) -> Response:
        def handle(request: Request, params: JSON) -> tuple[int, JSON]:
            intent = copy.deepcopy(self._intent(request.path_params["intent"]))
            if "latest_charge" in _expanded(params) and intent["latest_charge"]:
                intent["latest_charge"] = copy.deepcopy(self.charges[intent["latest_charge"]])
            return 200, intent

        return await self._answer(request, handle)

    async def _search_intents(self, request: Request) -> Response:
        def handle(request: Request, params: JSON) -> tuple[int, JSON]:
            clauses = _parse_query(str(params.get("query", "")))
            found = [
                copy.deepcopy(intent)
                for intent in self.payment_intents.values()
                if all(_matches(intent, field, value) for field, value in clauses)
            ]
            found.sort(key=lambda intent: intent["created"], reverse=True)
            limit = int(params.get("limit", 10))
            return 200, {
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": len(found) > limit,
                "next_page": None,
                "data": found[:limit],
            }

        return await self._answer(request, handle)

    async def _cancel_intent(self, request: Request) -> Response:
        def handle(request: Request, params: JSON) -> tuple[int, JSON]:
            intent = self._intent(request.path_params["intent"])
            if intent["status"] not in CANCELABLE:
                raise _unexpected_state(intent, "cancel")
            intent["status"] = "canceled"
            intent["canceled_at"] = int(time.time())
            intent["cancellation_reason"] = params.get("cancellation_reason")
            intent["amount_capturable"] = 0
            intent["next_action"] = None
            self._emit("payment_intent.canceled", intent)
            return 200, copy.deepcopy(intent)

        return await self._answer(request, handle)

    async def _capture_intent(self, request: Request) -> Response:
        def handle(request: Request, params: JSON) -> tuple[int, JSON]:
            intent = self._intent(request.path_params["intent"])
            if intent["status"] != "requires_capture":
                raise _unexpected_state(intent, "capture")
            amount = _int_param(params, "amount_to_capture", required=False)
            amount = intent["amount_capturable"] if amount is None else amount
            if amount > intent["amount_capturable"]:
                raise StripeApiError(
                    400,
                    "invalid_request_error",
                    "The amount to capture is greater than the amount capturable.",
                    code="amount_too_large",
                    param="amount_to_capture",
                )
            intent["status"] = "succeeded"
            intent["amount_received"] = amount
            intent["amount_capturable"] = 0
            self.charges[intent["latest_charge"]]["captured"] = True
            self._emit("payment_intent.succeeded", intent)
            return 200, copy.deepcopy(intent)

        return await self._answer(request, handle)

    async def _create_refund(self, request: Request) -> Response:
        return await self._answer(request, self._do_create_refund)

    def _do_create_refund(self, request: Request, params: JSON) -> tuple[int, JSON]:
        intent_id = str(params.get("payment_intent", ""))
        intent = self.payment_intents.get(intent_id)
        if intent is None:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"No such payment_intent: '{intent_id}'",
                code="resource_missing",
                param="payment_intent",
            )
        if intent["status"] != "succeeded":
            raise StripeApiError(
                400,
                "invalid_request_error",
                "This PaymentIntent does not have a successful charge to refund.",
                code="payment_intent_unexpected_state",
                param="payment_intent",
            )
        refunded = sum(
            r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent_id
        )
        remaining = intent["amount_received"] - refunded
        if remaining <= 0:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Charge {intent['latest_charge']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _int_param(params, "amount", required=False)
        amount = remaining if amount is None else amount
        if amount > remaining:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"Refund amount ({amount}) is greater than unrefunded amount ({remaining}).",
                code="amount_too_large",
                param="amount",
            )
        reason = params.get("reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeApiError(
                400, "invalid_request_error", f"Invalid reason: {reason}", param="reason"
            )
        refund: JSON = {
            "id": _object_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": intent["latest_charge"],
            "created": int(time.time()),
            "currency": intent["currency"],
            "failure_reason": None,
            "metadata": params.get("metadata") or {},
            "payment_intent": intent_id,
            "reason": reason,
            "status": "succeeded",
        }
        self.refunds[refund["id"]] = refund
        # Refunds settle at once here; Stripe still announces it, as it does for every refund.
        self._emit("refund.updated", refund)
        return 200, copy.deepcopy(refund)

    async def _get_refund(self, request: Request) -> Response:
        def handle(request: Request, params: JSON) -> tuple[int, JSON]:
            refund = self.refunds.get(request.path_params["refund"])
            if refund is None:
                raise StripeApiError(
                    404,
                    "invalid_request_error",
                    f"No such refund: '{request.path_params['refund']}'",
                    code="resource_missing",
                )
            return 200, copy.deepcopy(refund)

        return await self._answer(request, handle)

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(
            {
                "requests": self.requests,
                "replays": self.replays,
                "payment_intents_created": dict(self.created_per_key),
                "posts": [{"path": path, "idempotency_key": key} for path, key in self.posts],
                "events": len(self.events),
                "events_delivered": self.events_delivered,
                "delivery_failures": self.delivery_failures,
            }
        )

    # ---- settling and webhooks ----------------------------------------------------------------

    def settle(self, intent_id: str) -> tuple[dict[str, str], bytes]:
        """Complete a processing or challenged PaymentIntent; return its signed webhook.

        With ``capture_method=manual`` the PaymentIntent becomes ``requires_capture`` and the
        event is ``payment_intent.amount_capturable_updated``, as on Stripe. The event is also
        delivered to ``webhook_url`` when one is configured.
        """
        intent = self.payment_intents[intent_id]
        if intent["status"] not in ("processing", "requires_action"):
            raise ValueError(f"{intent_id} is {intent['status']}; only a pending one can settle")
        return self._emit(self._complete(intent), intent)

    async def _settle_later(self, intent_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.payment_intents[intent_id]["status"] == "processing":
            self.settle(intent_id)

    def _emit(self, event_type: str, obj: JSON) -> tuple[dict[str, str], bytes]:
        event: JSON = {
            "id": _object_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1 if self.config.webhook_url else 0,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.events.append(event)
        payload = json.dumps(event).encode()
        if self.config.webhook_url:
            self._spawn(self._deliver(self.config.webhook_url, payload))
        return self._signed(payload), payload

    def _signed(self, payload: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Stripe-Signature": sign(self.config.webhook_secret, payload, int(time.time())),
        }

    async def _deliver(self, url: str, payload: bytes) -> None:
        assert self._http is not None, "webhook delivery needs the app's lifespan to have run"
        for attempt in range(self.config.delivery_attempts):
            try:
                # Signed afresh for each attempt, as Stripe does, so retries are never stale.
                response = await self._http.post(
                    url, content=payload, headers=self._signed(payload)
                )
                if response.is_success:
                    self.events_delivered += 1
                    return
            except httpx.TransportError:
                pass
            self.delivery_failures += 1
            await asyncio.sleep(self.config.delivery_backoff * 2**attempt)


def _unexpected_state(intent: JSON, action: str) -> StripeApiError:
    return StripeApiError(
        400,
        "invalid_request_error",
        f"This PaymentIntent could not be {action}ed because it has a status of "
        f"{intent['status']}.",
        code="payment_intent_unexpected_state",
        extra={"payment_intent": copy.deepcopy(intent)},
    )


_CLAUSE = re.compile(r"\s*(metadata\['((?:[^'\\]|\\.)*)'\]|status)\s*:\s*'((?:[^'\\]|\\.)*)'\s*")


def _parse_query(query: str) -> list[tuple[str, str]]:
    """The slice of Stripe's search language the adapter uses: ``metadata['k']:'v'`` AND ..."""
    clauses: list[tuple[str, str]] = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise StripeApiError(
                400,
                "invalid_request_error",
                f"This test server cannot parse the search clause {part!r}.",
                param="query",
            )
        field = "status" if match.group(1) == "status" else _unescape(match.group(2))
        clauses.append(
            (field if field == "status" else f"metadata.{field}", _unescape(match.group(3)))
        )
    return clauses


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _matches(intent: JSON, field: str, value: str) -> bool:
    if field == "status":
        return bool(intent["status"] == value)
    key = field.removeprefix("metadata.")
    return bool(intent["metadata"].get(key) == value)
