"""A local server that answers as Adyen Checkout v71 does, for the endpoints paytide calls.

``POST /{version}/payments`` and ``POST /{version}/payments/{pspReference}/captures|cancels|
refunds`` take and give Adyen's JSON shapes, authenticate with ``X-API-Key``, and answer errors
with Adyen's envelope ``{status, errorCode, message, errorType}``. An ``Idempotency-Key`` is
honoured as Adyen does: the same key on the same path gets the first answer again, and nothing
is created twice. Error codes 130, 704 and 901 are Adyen's; the others are stand-ins.

What a payment does is scripted by its ``storedPaymentMethodId`` (see `Token`). Outcomes that
Adyen decides later are told by standard webhooks that this server signs like Adyen does (HMAC
per item, HTTP Basic auth): `AdyenServer.settle` builds one, and when a ``webhook_url`` is set
the server also POSTs it there, retrying until the receiver answers ``[accepted]``.

Tests only: this is a stand-in with Adyen's wire format, not a model of Adyen's risk or routing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import string
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from Adyen.util import generate_notification_sig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class Token(StrEnum):
    """The ``storedPaymentMethodId`` values that script this server."""

    OK = "adyen_ok"  # Authorised in the /payments answer
    ASYNC = "adyen_async"  # Received; settles later by an AUTHORISATION webhook
    REFUSED = "adyen_refused"  # Refused, refusalReason "Refused", refusalReasonCode "2"
    THREE_DS = "adyen_3ds"  # RedirectShopper with a redirect action
    ERROR = "adyen_error"  # resultCode Error
    FLAKY = "adyen_flaky"  # 503 for the first `flaky_failures` requests per key, nothing created
    UNAVAILABLE = "adyen_unavailable"  # always 503, nothing created
    RATE_LIMITED = "adyen_rate_limited"  # always 429 with Retry-After
    IN_PROGRESS = "adyen_in_progress"  # 422 errorCode 704 with Transient-Error: true
    SLOW = "adyen_slow"  # Authorised, after `slow_seconds`


# What /payments answers for each token that gets that far.
_RESULT_CODES: dict[str, str] = {
    Token.OK: "Authorised",
    Token.SLOW: "Authorised",
    Token.FLAKY: "Authorised",
    Token.ASYNC: "Received",
    Token.REFUSED: "Refused",
    Token.THREE_DS: "RedirectShopper",
    Token.ERROR: "Error",
}


@dataclass
class FakePayment:
    psp_reference: str
    reference: str
    amount: int
    currency: str
    token: str
    manual_capture: bool
    result_code: str


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None
    # Only answers Adyen would have processed are kept for replay under their idempotency key.
    store: bool = True


def _error(
    status: int, code: str, message: str, kind: str, headers: dict[str, str] | None = None
) -> Answer:
    body = {"status": status, "errorCode": code, "message": message, "errorType": kind}
    return Answer(status, body, headers, store=False)


def _psp_reference() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def _valid_amount(raw: Any) -> tuple[int, str] | None:
    if not isinstance(raw, dict):
        return None
    value, currency = raw.get("value"), raw.get("currency")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return None
    if not isinstance(currency, str) or len(currency) != 3:
        return None
    return value, currency


Handler = Callable[[Request, dict[str, Any], str | None], Awaitable[Answer]]


class AdyenServer:
    """The fake Checkout API; counters are attributes and ``GET /_test/stats``."""

    def __init__(
        self,
        *,
        api_key: str,
        merchant_account: str,
        hmac_key: str,
        webhook_username: str,
        webhook_password: str,
        webhook_url: str | None = None,
        settle_after: float = 0.05,
        flaky_failures: int = 2,
        slow_seconds: float = 1.0,
        delivery_attempts: int = 5,
    ) -> None:
        self.api_key = api_key
        self.merchant_account = merchant_account
        self.hmac_key = hmac_key
        self.webhook_username = webhook_username
        self.webhook_password = webhook_password
        self.webhook_url = webhook_url
        self.settle_after = settle_after
        self.flaky_failures = flaky_failures
        self.slow_seconds = slow_seconds
        self.delivery_attempts = delivery_attempts

        self.payments: dict[str, FakePayment] = {}
        self.payments_created: Counter[str] = Counter()  # by Idempotency-Key
        self.modifications_created: Counter[str] = Counter()  # by Idempotency-Key
        self.requests: Counter[str] = Counter()  # by operation
        self.replays = 0
        self.idempotency_keys: list[str] = []  # every key received, in order
        self.payment_requests: list[dict[str, Any]] = []  # every /payments body received
        self.deliveries_accepted = 0
        self.delivery_failures = 0

        self._answers: dict[tuple[str, str], Answer] = {}
        self._flaky_seen: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route("/{version}/payments", self._route("payments", self._pay), methods=["POST"]),
                Route(
                    "/{version}/payments/{psp}/captures",
                    self._route("captures", self._modify),
                    methods=["POST"],
                ),
                Route(
                    "/{version}/payments/{psp}/cancels",
                    self._route("cancels", self._modify),
                    methods=["POST"],
                ),
                Route(
                    "/{version}/payments/{psp}/refunds",
                    self._route("refunds", self._modify),
                    methods=["POST"],
                ),
                Route("/_test/stats", self._stats, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    # ---- Webhooks ---------------------------------------------------------------------------

    def settle(self, psp_reference: str) -> tuple[dict[str, str], bytes]:
        """Authorise a pending or challenged payment; return its signed AUTHORISATION webhook
        (headers, body), and deliver it to ``webhook_url`` when one is set."""
        payment = self.payments[psp_reference]
        payment.result_code = "Authorised"
        item = self._item(payment, "AUTHORISATION", psp_reference=psp_reference)
        item["operations"] = ["CANCEL", "CAPTURE", "REFUND"]
        headers, body = self.notification([item])
        self._deliver_later(headers, body)
        return headers, body

    def notification(self, items: list[dict[str, Any]]) -> tuple[dict[str, str], bytes]:
        """A standard webhook carrying ``items``, each signed with the HMAC key as Adyen does
        (signature computed by the Adyen SDK's own helper), with Basic auth headers."""
        signed = []
        for item in items:
            signature = generate_notification_sig(item, self.hmac_key).decode()
            additional = {**item.get("additionalData", {}), "hmacSignature": signature}
            signed.append({"NotificationRequestItem": {**item, "additionalData": additional}})
        body = json.dumps({"live": "false", "notificationItems": signed}).encode()
        credentials = f"{self.webhook_username}:{self.webhook_password}".encode()
        headers = {
            "Authorization": f"Basic {base64.b64encode(credentials).decode()}",
            "Content-Type": "application/json",
        }
        return headers, body

    def _item(
        self,
        payment: FakePayment,
        event_code: str,
        *,
        psp_reference: str,
        success: bool = True,
        original_reference: str | None = None,
        amount: int | None = None,
        merchant_reference: str | None = None,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "additionalData": {},
            "amount": {
                "value": payment.amount if amount is None else amount,
                "currency": payment.currency,
            },
            "eventCode": event_code,
            "eventDate": datetime.now(UTC).isoformat(timespec="seconds"),
            "merchantAccountCode": self.merchant_account,
            "merchantReference": merchant_reference or payment.reference,
            "paymentMethod": "visa",
            "pspReference": psp_reference,
            "reason": "",
            "success": "true" if success else "false",
        }
        if original_reference is not None:
            item["originalReference"] = original_reference
        return item

    def _deliver_later(self, headers: dict[str, str], body: bytes) -> None:
        if self.webhook_url is None or self._http is None:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(headers, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, headers: dict[str, str], body: bytes) -> None:
        assert self._http is not None and self.webhook_url is not None
        await asyncio.sleep(self.settle_after)
        for attempt in range(self.delivery_attempts):
            try:
                response = await self._http.post(self.webhook_url, content=body, headers=headers)
                if response.status_code == 200 and response.text.strip() == "[accepted]":
                    self.deliveries_accepted += 1
                    return
            except httpx.HTTPError:
                pass
            self.delivery_failures += 1
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5) as http:
            self._http = http
            try:
                yield
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._http = None

    # ---- HTTP -------------------------------------------------------------------------------

    def _route(self, operation: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.requests[operation] += 1
            if request.headers.get("x-api-key") != self.api_key:
                answer = _error(401, "000", "HTTP Status Response - Unauthorized", "security")
                return self._respond(answer, None)
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                answer = _error(
                    400, "702", "Unexpected input: body is not a JSON object", "validation"
                )
                return self._respond(answer, None)
            key = request.headers.get("idempotency-key")
            if key is not None:
                self.idempotency_keys.append(key)
                stored = self._answers.get((request.url.path, key))
                if stored is not None:
                    self.replays += 1
                    return self._respond(stored, key)
            answer = await handler(request, body, key)
            if key is not None and answer.store:
                self._answers[(request.url.path, key)] = answer
            return self._respond(answer, key)

        return endpoint

    @staticmethod
    def _respond(answer: Answer, key: str | None) -> Response:
        headers = dict(answer.headers or {})
        if key is not None:
            headers["Idempotency-Key"] = key
        if psp := answer.body.get("pspReference"):
            headers["pspReference"] = str(psp)
        return JSONResponse(answer.body, status_code=answer.status, headers=headers)

    async def _pay(self, request: Request, body: dict[str, Any], key: str | None) -> Answer:
        self.payment_requests.append(body)
        if body.get("merchantAccount") != self.merchant_account:
            return _error(403, "901", "Invalid Merchant Account", "security")
        reference = body.get("reference")
        if not isinstance(reference, str) or not reference:
            return _error(422, "130", "Reference Missing", "validation")
        amount = _valid_amount(body.get("amount"))
        if amount is None:
            return _error(422, "137", "Invalid amount specified", "validation")
        if not body.get("returnUrl"):
            return _error(422, "14_0", "Required field 'returnUrl' is not provided.", "validation")
        method = body.get("paymentMethod")
        token = method.get("storedPaymentMethodId") if isinstance(method, dict) else None
        if not isinstance(token, str):
            return _error(422, "14_1", "storedPaymentMethodId is missing", "validation")

        if token == Token.UNAVAILABLE:
            return _error(503, "905", "Service Unavailable", "internal")
        if token == Token.FLAKY:
            self._flaky_seen[key or ""] += 1
            if self._flaky_seen[key or ""] <= self.flaky_failures:
                return _error(503, "905", "Service Unavailable", "internal")
        if token == Token.RATE_LIMITED:
            return _error(429, "429", "Too many requests", "throttling", {"Retry-After": "2"})
        if token == Token.IN_PROGRESS:
            return _error(
                422,
                "704",
                "request already processed or in progress",
                "validation",
                {"Transient-Error": "true"},
            )
        if token == Token.SLOW:
            await asyncio.sleep(self.slow_seconds)
        result_code = _RESULT_CODES.get(token)
        if result_code is None:
            return _error(422, "800", "Contract not found", "validation")

        additional = body.get("additionalData")
        payment = FakePayment(
            psp_reference=_psp_reference(),
            reference=reference,
            amount=amount[0],
            currency=amount[1],
            token=token,
            manual_capture=isinstance(additional, dict)
            and additional.get("manualCapture") == "true",
            result_code=result_code,
        )
        self.payments[payment.psp_reference] = payment
        self.payments_created[key or ""] += 1
        answer: dict[str, Any] = {
            "pspReference": payment.psp_reference,
            "resultCode": result_code,
            "amount": {"value": payment.amount, "currency": payment.currency},
            "merchantReference": reference,
        }
        if result_code == "Refused":
            answer |= {"refusalReason": "Refused", "refusalReasonCode": "2"}
        elif result_code == "Error":
            answer |= {"refusalReason": "Acquirer Error", "refusalReasonCode": "4"}
        elif result_code == "RedirectShopper":
            answer["action"] = {
                "paymentMethodType": "scheme",
                "type": "redirect",
                "method": "GET",
                "url": f"{str(request.base_url).rstrip('/')}/threeDS/redirect?psp="
                f"{payment.psp_reference}",
            }
        if result_code == "Received" and self.webhook_url is not None:
            self.settle(payment.psp_reference)  # Adyen decides later and says so by webhook.
        return Answer(200, answer)

    async def _modify(self, request: Request, body: dict[str, Any], key: str | None) -> Answer:
        kind = request.url.path.rsplit("/", 1)[-1]
        if body.get("merchantAccount") != self.merchant_account:
            return _error(403, "901", "Invalid Merchant Account", "security")
        payment = self.payments.get(request.path_params["psp"])
        if payment is None:
            return _error(
                422, "167", "Original pspReference required for this operation", "validation"
            )
        answer: dict[str, Any] = {
            "merchantAccount": self.merchant_account,
            "paymentPspReference": payment.psp_reference,
            "pspReference": _psp_reference(),
            "status": "received",
        }
        if isinstance(body.get("reference"), str):
            answer["reference"] = body["reference"]
        amount = None
        if kind in ("captures", "refunds"):
            valid = _valid_amount(body.get("amount"))
            if valid is None:
                return _error(422, "137", "Invalid amount specified", "validation")
            amount = valid[0]
            answer["amount"] = {"value": valid[0], "currency": valid[1]}
        self.modifications_created[key or ""] += 1
        event_code = {"captures": "CAPTURE", "cancels": "CANCELLATION", "refunds": "REFUND"}[kind]
        item = self._item(
            payment,
            event_code,
            psp_reference=answer["pspReference"],
            original_reference=payment.psp_reference,
            amount=amount,
            # A refund's notification names the refund request's own reference, as Adyen does.
            merchant_reference=answer.get("reference") if kind == "refunds" else None,
        )
        self._deliver_later(*self.notification([item]))
        return Answer(201, answer)

    async def _stats(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "payments_created": dict(self.payments_created),
                "modifications_created": dict(self.modifications_created),
                "requests": dict(self.requests),
                "replays": self.replays,
                "idempotency_keys": self.idempotency_keys,
                "deliveries_accepted": self.deliveries_accepted,
                "delivery_failures": self.delivery_failures,
                "payments": {psp: p.result_code for psp, p in self.payments.items()},
            }
        )
